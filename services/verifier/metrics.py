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
        yield CounterMetricFamily("mindgap_verifier_timeouts", "Items answered timeout "
                                  "(first runs and retries alike)", value=stats.timeouts)
        yield CounterMetricFamily("mindgap_verifier_retries", "Items run again after their "
                                  "worker died", value=stats.retries)
        yield CounterMetricFamily("mindgap_verifier_cancelled", "Items dropped or stopped "
                                  "because their client went away", value=stats.cancelled)
        yield GaugeMetricFamily("mindgap_verifier_workers", "Sandbox worker processes running "
                                "now (spares included)", value=self.pool.live_workers())


class VerifierMetrics(RequestMetrics):
    """Request, latency and verdict metrics, plus the pool's counters."""

    def __init__(self, pool: LocalVerifier) -> None:
        super().__init__("verifier")
        self.verdicts = Counter("mindgap_verifier_verdicts", "Verification results by reason",
                                ["reason"], registry=self.registry)
        self.registry.register(_PoolCollector(pool))
