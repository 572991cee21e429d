"""Prometheus metrics of the verifier service (one registry per app)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mindgap.http import RequestMetrics
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


class VerifierMetrics(RequestMetrics):
    """Request, latency and verdict metrics, plus the pool's counters."""

    def __init__(self, pool: LocalVerifier) -> None:
        super().__init__("verifier")
        self.verdicts = Counter("mindgap_verifier_verdicts", "Verification results by reason",
                                ["reason"], registry=self.registry)
        self.registry.register(_PoolCollector(pool))
