"""The Redis Streams job queue shared by the rewriter API, the rewriter workers and the
trainer, split by role (``Queue`` holds one of each on one Redis):

- ``Queue.jobs`` (:mod:`~mindgap.queue.jobs`): create, cancel and read jobs and their
  results; the API's side.
- ``Queue.tasks`` (:mod:`~mindgap.queue.tasks`): claim, complete, fail and touch tasks,
  exactly-once per (job, problem); the workers' side.
- ``Queue.aligned`` (:mod:`~mindgap.queue.aligned`): the trainers' stream, its lag (the one
  used by ``Backpressure``) and its trimming; the trainer's side.
- ``Queue.heartbeats`` (:mod:`~mindgap.queue.heartbeats`): which workers are alive.
- ``Queue.stats`` / ``dead`` / ``trim``: the operators' views (``mindgap queue``, in
  :mod:`mindgap.queue_cli`).

Keys (``P`` is the prefix, ``mindgap`` by default) are named in :mod:`~mindgap.queue.keys`;
the Lua scripts are the files ``lua/*.lua``. Every command is safe to retry after a
connection error, so the client retries them.
"""

from mindgap.jobs import FINISHED, JobState, JobStatus
from mindgap.queue.aligned import AlignedStream
from mindgap.queue.backpressure import Backpressure, hysteresis
from mindgap.queue.heartbeats import Heartbeats
from mindgap.queue.jobs import Jobs
from mindgap.queue.keys import REWRITERS, TRAINERS, Keys, entry_order
from mindgap.queue.models import DeadLetter, QueueStats, StreamDepth, Task, TrimReport
from mindgap.queue.queue import Queue
from mindgap.queue.store import connect
from mindgap.queue.tasks import Tasks

__all__ = [
    "FINISHED",
    "REWRITERS",
    "TRAINERS",
    "AlignedStream",
    "Backpressure",
    "DeadLetter",
    "Heartbeats",
    "JobState",
    "JobStatus",
    "Jobs",
    "Keys",
    "Queue",
    "QueueStats",
    "StreamDepth",
    "Task",
    "Tasks",
    "TrimReport",
    "connect",
    "entry_order",
    "hysteresis",
]
