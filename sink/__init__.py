"""headrace's cloud end: the sink that stores the gateways' batches exactly once.

`sink.decode` turns a broker message into rows (with the gateway's own batch
decoder), `sink.store` writes them to PostgreSQL or SQLite, `sink.sources` reads
them from a JetStream consumer or an MQTT session, `sink.service` is the worker
that `headrace sink run` starts. docs/cloud.md is the user's guide.
"""
