"""Records that cross a boundary (Kafka topics, the broker, the DLQ), as pydantic v2 models."""
