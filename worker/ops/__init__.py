"""What operators watch: metrics, logs, the heartbeat and the readiness probe, the Redis
eviction check, error reports (Sentry) and tracing (OpenTelemetry), both optional."""
