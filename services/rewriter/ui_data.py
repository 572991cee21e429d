"""What the job console shows, read from the queue: the jobs with their progress, the
queue's depths and live workers; one job's counts, dead letters, a sample of its kept
responses beside the expert solutions, and the histogram of how likely the policy found
what it kept (the recorded behavior log-probs)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from mindgap.queue import Queue
from mindgap.rewriter.progress import newest_progress, read_progress
from mindgap.schemas import AlignedExample

LISTED_JOBS = 50
SCANNED_RESULTS = 500
"""Results read for a job's page: the sample and the histogram come from these."""
SAMPLED = 4
SCANNED_DEAD = 2000
SHOWN_DEAD = 50
BINS = 12
PLOT_W, PLOT_H = 480.0, 160.0


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar of the histogram, in SVG coordinates."""

    x: float
    y: float
    width: float
    height: float
    source: str
    title: str


@dataclass(frozen=True, slots=True)
class Histogram:
    """Mean token log-prob of kept model responses under their behavior policy, per source."""

    bars: list[Bar]
    low: float
    high: float
    count: int
    width: float = PLOT_W
    height: float = PLOT_H


def mean_logprob(example: AlignedExample) -> float | None:
    """Mean recorded log-prob of a kept model response (None: expert, or no tokens)."""
    logprobs = example.behavior.logprobs if example.behavior else []
    return sum(logprobs) / len(logprobs) if logprobs else None


def histogram(examples: list[AlignedExample]) -> Histogram | None:
    """The histogram of ``mean_logprob`` by source (None when no example has one)."""
    values = [(e.source, v) for e in examples if (v := mean_logprob(e)) is not None]
    if not values:
        return None
    low, high = min(v for _, v in values), max(v for _, v in values)
    span = (high - low) or 1.0
    counts: dict[tuple[str, int], int] = {}
    for source, value in values:
        index = min(BINS - 1, int((value - low) / span * BINS))
        counts[source, index] = counts.get((source, index), 0) + 1
    tallest = max(counts.values())
    slot = PLOT_W / BINS
    bars = []
    for (source, index), count in sorted(counts.items()):
        height = PLOT_H * count / tallest
        offset = 0.0 if source == "self" else slot / 2
        left = low + span * index / BINS
        bars.append(Bar(x=index * slot + offset, y=PLOT_H - height, width=slot / 2 - 1,
                        height=height, source=source,
                        title=f"{source}: {count} in [{left:.3f}, {left + span / BINS:.3f})"))
    return Histogram(bars=bars, low=low, high=high, count=len(values))


def overview(queue: Queue) -> dict[str, Any]:
    """The console's front page: jobs, queue depths, live workers."""
    return {"jobs": newest_progress(queue, LISTED_JOBS, 0), "stats": queue.stats(),
            "workers": queue.heartbeats.workers()}


def job_page(queue: Queue, job_id: str) -> dict[str, Any] | None:
    """One job's page (None: no such job)."""
    job = read_progress(queue, job_id)
    if job is None:
        return None
    raw = itertools.islice(queue.jobs.results(job_id), SCANNED_RESULTS)
    examples = [AlignedExample.model_validate_json(line) for _, line in raw]
    dead = [d for d in queue.dead(limit=SCANNED_DEAD) if d.job == job_id][-SHOWN_DEAD:]
    workers = [w for w in queue.heartbeats.workers() if job_id in w.in_hand]
    return {"job": job, "sample": [e for e in examples if e.source != "expert"][:SAMPLED],
            "scanned": len(examples), "histogram": histogram(examples), "dead": dead,
            "workers": workers, "stats": queue.stats()}
