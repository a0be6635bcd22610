"""The gateway's side of the wire protocol (docs/protocol.md): COSE_Mac0, serial framing, SenML."""
