"""The server's Prometheus metrics, on a registry of its own (two servers in one process never mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from assay.serve.monitor import WindowResult

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("assay_requests", "Prediction requests by HTTP status", ["code"], registry=r)
        self.examples = Counter("assay_examples", "Examples predicted", registry=r)
        self.latency = Histogram(
            "assay_request_seconds",
            "Prediction request latency, seconds",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "assay_batch_size", "Examples per forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = Histogram(
            "assay_batch_seconds", "Forward pass time, seconds", buckets=LATENCY_BUCKETS, registry=r
        )
        # model-thread time, split: what monitoring costs the model thread is their ratio
        self.forward_seconds = Counter(
            "assay_forward_seconds", "Model-thread time in forward passes, seconds", registry=r
        )
        self.monitor_seconds = Counter(
            "assay_monitor_seconds", "Model-thread time in the monitor, seconds", registry=r
        )
        self.monitor_skipped = Counter(
            "assay_monitor_skipped_examples",
            "Examples answered but not monitored (over --max-windows-per-minute)",
            registry=r,
        )
        self.version = Gauge("assay_served_version", "Version number being served", registry=r)
        self.monitor_windows = Counter("assay_monitor_windows", "Monitoring windows closed", registry=r)
        self.monitor_alarms = Counter(
            "assay_monitor_alarms", "Alarmed windows by detector", ["detector"], registry=r
        )
        self.monitor_statistic = Gauge(
            "assay_monitor_statistic",
            "Last window's statistic by detector and stream (traffic, feedback)",
            ["detector", "stream"],
            registry=r,
        )
        self.monitor_threshold = Gauge(
            "assay_monitor_threshold", "Calibrated threshold by detector", ["detector"], registry=r
        )
        self.rollbacks = Counter("assay_rollbacks", "Automatic rollbacks", registry=r)

    def batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)
        self.examples.inc(size)

    def windows(self, windows: list[WindowResult]) -> None:
        for window in windows:
            self.monitor_windows.inc()
            for result in window.results:
                self.monitor_statistic.labels(result.name, window.stream).set(result.statistic)
                self.monitor_threshold.labels(result.name).set(result.threshold)
                if result.alarm:
                    self.monitor_alarms.labels(result.name).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
