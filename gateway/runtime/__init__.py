"""The gateway at run time: transports → ingest → pipeline → spool → uplink, and the service that owns them."""
