"""Host tools: the command line, flashing nodes, installing the service, the demo and its simulated plant."""
