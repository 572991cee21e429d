"""Prometheus metrics of the rewriter service (one registry per app) and ``/metrics``: request
counts and latency, plus the queue's depths and the jobs' counters read from Redis at
scrape time."""

from __future__ import annotations

from collections.abc import Iterator

import redis
from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from mindgap.http import LATENCY_BUCKETS, RequestMetrics
from mindgap.queue import JobStatus, Queue, QueueStats
from mindgap.rewriter.deps import Context
from mindgap.schemas import SOURCES

METRICS_MAX_JOBS = 10_000
"""How many of the newest jobs the per-job totals sum over."""

router = APIRouter()


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"mindgap_rewriter_{name}", doc, value=value)


def _queue_gauges(stats: QueueStats, totals: dict[str, int]) -> Iterator[GaugeMetricFamily]:
    """The queue's depths and the jobs' summed counters, one gauge each."""
    yield _gauge("tasks_backlog", "Tasks in the stream: queued plus in flight",
                 stats.tasks.length)
    yield _gauge("tasks_queued", "Tasks not yet delivered to a worker", stats.tasks.undelivered)
    yield _gauge("tasks_in_flight", "Tasks delivered but not acknowledged", stats.tasks.pending)
    yield _gauge("tasks_done", "Problems done, summed over known jobs", totals["done"])
    yield _gauge("tasks_failed", "Problems failed, summed over known jobs", totals["failed"])
    yield _gauge("tasks_skipped", "Tasks skipped (cancelled jobs), summed over known jobs",
                 totals["skipped"])
    yield _gauge("dead_letters", "Entries in the dead-letter stream", stats.dead_letters)
    yield _gauge("aligned_length", "Entries in the trainer's stream", stats.aligned.length)
    yield _gauge("trainer_lag", "Aligned examples the trainers have not acknowledged",
                 stats.trainer_lag)
    yield _gauge("live_workers", "Workers with a fresh heartbeat", len(stats.live_workers))


def _policy_gauges(queue: Queue) -> Iterator[GaugeMetricFamily]:
    """Online rewriting: the published policy version, and each live worker's version,
    reloads and last reload time (from its heartbeat)."""
    current = queue.policy.current()
    yield _gauge("policy_version", "Newest policy version the trainer published (0: none)",
                 current.version if current else 0)
    worker_version = GaugeMetricFamily("mindgap_rewriter_worker_policy_version",
                                       "Policy version each live worker rewrites with",
                                       labels=["consumer"])
    reloads = GaugeMetricFamily("mindgap_rewriter_worker_reloads",
                                "Policy versions each live worker has loaded",
                                labels=["consumer"])
    reload_s = GaugeMetricFamily("mindgap_rewriter_worker_last_reload_seconds",
                                 "Seconds each live worker's last policy reload took",
                                 labels=["consumer"])
    for beat in queue.heartbeats.workers():
        worker_version.add_metric([beat.consumer], beat.policy_version or 0)
        reloads.add_metric([beat.consumer], beat.reloads)
        if beat.last_reload_s is not None:
            reload_s.add_metric([beat.consumer], beat.last_reload_s)
    yield from (worker_version, reloads, reload_s)


STALENESS_BUCKETS = (0, 1, 2, 4, 8, 16)
"""Upper bounds (in policy versions) of the trained-staleness histogram's buckets."""


def _staleness_metrics(queue: Queue) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
    """Online rewriting: the trainers' stale drops and re-queues, and the staleness of the
    model responses they trained on (a histogram in policy versions)."""
    counts = queue.aligned.staleness()
    yield _gauge("stale_dropped", "Stale examples the trainers dropped", counts.dropped)
    yield _gauge("stale_requeued", "Problems of stale examples re-queued for rewriting",
                 counts.requeued)
    buckets, below = [], 0
    for bound in STALENESS_BUCKETS:
        below = sum(n for s, n in counts.trained.items() if s <= bound)
        buckets.append((str(bound), below))
    total = sum(counts.trained.values())
    buckets.append(("+Inf", total))
    yield HistogramMetricFamily(
        "mindgap_rewriter_trained_staleness", "Model responses trained on, by the policy "
        "versions published between their sampling and their training step",
        buckets=buckets, sum_value=sum(s * n for s, n in counts.trained.items()))


class _QueueCollector(Collector):
    """Reads the queue's depths and the jobs' counters from Redis at scrape time."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def _job_totals(self) -> tuple[dict[str, int], dict[str, int]]:
        """Counters summed over the newest jobs, and how many jobs have each status."""
        ids = self.queue.redis.zrevrange(self.queue.keys.jobs, 0, METRICS_MAX_JOBS - 1)
        pipe = self.queue.redis.pipeline(transaction=False)
        fields = ("status", "done", "failed", "skipped", *SOURCES)
        for job_id in ids:
            pipe.hmget(self.queue.keys.job(job_id), fields)
        totals = dict.fromkeys(fields[1:], 0)
        statuses: dict[str, int] = {}
        for row in pipe.execute() if ids else []:
            if row[0] is None:
                continue
            statuses[row[0]] = statuses.get(row[0], 0) + 1
            for name, value in zip(fields[1:], row[1:], strict=True):
                totals[name] += int(value or 0)
        return totals, statuses

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        up = GaugeMetricFamily("mindgap_rewriter_redis_up", "Whether Redis answered the scrape")
        try:
            stats = self.queue.stats()
            totals, statuses = self._job_totals()
            policy = [*_policy_gauges(self.queue), *_staleness_metrics(self.queue)]
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _queue_gauges(stats, totals)
        examples = GaugeMetricFamily("mindgap_rewriter_examples",
                                     "Examples done per source, summed over known jobs",
                                     labels=["source"])
        for source in SOURCES:
            examples.add_metric([source], totals[source])
        yield examples
        jobs = GaugeMetricFamily("mindgap_rewriter_jobs", "Known jobs per status",
                                 labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], statuses.get(status, 0))
        yield jobs
        yield from policy


class RewriterMetrics(RequestMetrics):
    """Request and latency metrics, plus the queue read at scrape time (own registry)."""

    def __init__(self, queue: Queue) -> None:
        super().__init__("rewriter", buckets=(*LATENCY_BUCKETS, 60, 300, 600))
        self.registry.register(_QueueCollector(queue))


@router.get("/metrics")
def prometheus(context: Context) -> Response:
    """Prometheus metrics (queue depths are read from Redis at scrape time)."""
    return Response(generate_latest(context.registry), media_type=CONTENT_TYPE_LATEST)
