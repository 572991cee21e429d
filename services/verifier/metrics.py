"""Prometheus metrics of the verifier service (one registry per app)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mindgap.verifier.pool import LocalVerifier


class _PoolCollector(Collector):
    """Reads the pool's own counters at scrape time."""

    def __init__(self, pool: LocalVerifier) -> None:
        self.pool = pool

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self.pool.stats
        yield CounterMetricFamily("mindgap_verifier_worker_restarts",
                                  "Sandbox workers killed and replaced", value=stats.restarts)
        yield CounterMetricFamily("mindgap_verifier_timeouts",
                                  "Items that ran out of time", value=stats.timeouts)
        yield GaugeMetricFamily("mindgap_verifier_workers", "Sandbox workers in the pool",
                                value=self.pool.workers)


class VerifierMetrics:
    """Request, latency and verdict metrics, plus the pool's counters."""

    def __init__(self, pool: LocalVerifier) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("mindgap_verifier_requests", "HTTP requests",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("mindgap_verifier_request_seconds", "HTTP request latency",
                                 ["route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5, 1, 2.5, 5, 10, 30))
        self.verdicts = Counter("mindgap_verifier_verdicts", "Verification results by reason",
                                ["reason"], registry=self.registry)
        self.registry.register(_PoolCollector(pool))
