"""Serving and monitoring: the HTTP server, its micro-batcher, release-calibrated drift monitors,
durable incidents with guarded rollback, and the dashboard."""
