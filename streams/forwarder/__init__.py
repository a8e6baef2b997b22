"""Trade-updates forwarder: Alpaca `trade_updates` websocket streams → Kafka v2 (and v1)."""
