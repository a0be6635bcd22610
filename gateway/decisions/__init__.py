"""The decisions the gateway makes on the way: rules → events, the dispatcher, the downlink of commands."""
