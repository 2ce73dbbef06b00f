"""What operators watch: metrics, logs, the heartbeat, the Redis eviction check."""
