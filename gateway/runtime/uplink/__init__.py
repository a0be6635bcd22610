"""Uplinks to the cloud. One module per protocol; `batch` is the payload format they carry."""
