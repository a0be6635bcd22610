"""Transports from nodes to the pipeline. One module per transport.

A transport owns its links, hands each message to `Pipeline.offer` with a
`done` callback, and sends the ack back the way the message came.
"""
