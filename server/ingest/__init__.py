"""The ingest service: MQTT in, validation, batched writes."""
