"""Key names of one queue (``P`` is the prefix), its consumer groups, and stream entry ids.

Use a hash tag such as ``{mindgap}`` as the prefix on Redis Cluster so that every key lands
in one slot, which the Lua scripts need.
"""

from __future__ import annotations

from dataclasses import dataclass

REWRITERS = "rewriters"
"""The consumer group of the rewriter workers on ``P:tasks``."""
TRAINERS = "trainers"
"""The consumer group of the trainers on ``P:aligned``."""


@dataclass(frozen=True, slots=True)
class Keys:
    """The Redis keys of the queue with prefix ``prefix``."""

    prefix: str

    @property
    def tasks(self) -> str:
        """Stream: one entry per problem to rewrite, read by ``rewriters``."""
        return f"{self.prefix}:tasks"

    @property
    def aligned(self) -> str:
        """Stream: results for the trainers, read by ``trainers``."""
        return f"{self.prefix}:aligned"

    @property
    def dead(self) -> str:
        """Stream: dead letters (tasks that failed too often, malformed entries)."""
        return f"{self.prefix}:dead"

    @property
    def jobs(self) -> str:
        """Sorted set: job ids by creation time."""
        return f"{self.prefix}:jobs"

    @property
    def open_jobs(self) -> str:
        """Set: ids of the queued and running jobs (what ``max_open`` counts)."""
        return f"{self.prefix}:jobs:open"

    @property
    def expiring(self) -> str:
        """Sorted set: finished job ids by the time their keys expire (to clean ``jobs``)."""
        return f"{self.prefix}:jobs:expiring"

    @property
    def trained(self) -> str:
        """Hash: trainer consumer -> how many of its pending aligned entries it trained on."""
        return f"{self.prefix}:trained"

    @property
    def workers(self) -> str:
        """Sorted set: worker consumers by heartbeat expiry."""
        return f"{self.prefix}:workers"

    @property
    def policy(self) -> str:
        """Hash: the newest published policy version (version, path, step, published_at)."""
        return f"{self.prefix}:policy"

    @property
    def policy_log(self) -> str:
        """Stream: every published policy version, oldest first."""
        return f"{self.prefix}:policy:log"

    @property
    def staleness(self) -> str:
        """Hash: the trainers' staleness counters: ``dropped`` and ``requeued`` stale examples,
        ``trained:<s>`` model responses trained on ``s`` versions after they were sampled."""
        return f"{self.prefix}:staleness"

    def worker(self, consumer: str) -> str:
        """A worker's heartbeat key (expires with its TTL)."""
        return f"{self.prefix}:workers:{consumer}"

    def job(self, job_id: str) -> str:
        """Hash: the job's state."""
        return f"{self.prefix}:job:{job_id}"

    def job_keys(self, job_id: str) -> tuple[str, str, str, str, str, str, str]:
        """What settling a job touches (``KEYS[1..7]`` of the scripts that may finish it):
        its hash, its sets of done and failed problem ids (the exactly-once guard), its
        results, its task list, and the open and expiring indexes."""
        base = self.job(job_id)
        return (base, f"{base}:done", f"{base}:failed", self.results(job_id),
                self.job_tasks(job_id), self.open_jobs, self.expiring)

    def job_tasks(self, job_id: str) -> str:
        """List: the entry ids of the job's tasks, as enqueued (for a bulk cancel)."""
        return f"{self.job(job_id)}:tasks"

    def enqueued(self, job_id: str) -> str:
        """Set: problem ids enqueued so far while a job is being created."""
        return f"{self.job(job_id)}:enqueued"

    def results(self, job_id: str) -> str:
        """Stream: the job's own results."""
        return f"{self.prefix}:results:{job_id}"


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``"ms-seq"``) as a key that sorts like the stream."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def next_id(entry_id: str) -> str:
    """The smallest entry id after ``entry_id``."""
    ms, seq = entry_order(entry_id)
    return f"{ms}-{seq + 1}"
