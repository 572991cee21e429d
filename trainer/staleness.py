"""Bounded staleness on the live stream (online rewriting).

An example's *staleness* is how many policy versions the trainer has published since the
version that sampled it (``behavior.policy_version``). A model response more than
``max_staleness`` versions old is dropped and its problem re-queued for rewriting against the
newest version (``AlignedStream.requeue``: atomic, once per problem of a job); one that cannot
be re-queued (its problem was re-queued before, or it came without a job) is trained on, its
recorded behavior log-probs correcting it in the ``is`` loss. Expert fallbacks carry no
behavior policy: their text is the same under every version, so they are never stale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mindgap.queue.models import Requeue
from mindgap.schemas import AlignedExample

Entries = list[tuple[str, AlignedExample]]


@dataclass
class StalenessBound:
    """Rank 0's bookkeeping: what it admits, drops and re-queues, and the staleness of what
    it trains on (``histogram``, over the run)."""

    max_staleness: int | None
    version: int = 0  # the newest published policy version, read before each batch
    dropped: int = 0
    requeued: int = 0
    stale_trained: int = 0  # over the bound but not re-queueable: trained on
    histogram: Counter[int] = field(default_factory=Counter)

    def of(self, example: AlignedExample) -> int | None:
        """The example's staleness in versions (None for an expert fallback)."""
        if example.behavior is None:
            return None
        return max(0, self.version - example.behavior.policy_version)

    def admit(self, entries: Sequence[tuple[str, AlignedExample]],
              requeue: Callable[[str, AlignedExample], Requeue]) -> tuple[Entries, Counter[int]]:
        """The entries to train on, and their model responses counted by staleness; the
        others are dropped through ``requeue``."""
        kept: Entries = []
        counts: Counter[int] = Counter()
        for entry_id, example in entries:
            staleness = self.of(example)
            if staleness is not None and self.max_staleness is not None \
                    and staleness > self.max_staleness:
                outcome = requeue(entry_id, example)
                if outcome is not Requeue.KEEP:
                    self.dropped += outcome is not Requeue.SETTLED
                    self.requeued += outcome is Requeue.REQUEUED
                    continue
                self.stale_trained += 1
            if staleness is not None:
                counts[staleness] += 1
            kept.append((entry_id, example))
        return kept, counts

    def metrics(self, counts: Counter[int]) -> dict[str, float]:
        """A step's record: the policy version, its batch's staleness (mean and max over its
        model responses) and the run's drop and re-queue counts so far."""
        n = sum(counts.values())
        record: dict[str, float] = {
            "policy_version": self.version, "stale_dropped": self.dropped,
            "stale_requeued": self.requeued, "stale_trained": self.stale_trained}
        if n:
            record["staleness_mean"] = sum(s * c for s, c in counts.items()) / n
            record["staleness_max"] = max(counts)
        return record
