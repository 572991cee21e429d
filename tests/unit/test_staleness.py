"""The trainer's staleness bound on its own (the re-queue faked; tests/integration/
test_staleness.py runs it against real Redis)."""

from __future__ import annotations

from mindgap.queue.models import Requeue
from mindgap.schemas import AlignedExample, AttemptCounts, Behavior, SamplingParams, Timings
from mindgap.trainer.staleness import StalenessBound


def _example(pid: str, version: int | None) -> AlignedExample:
    behavior = None if version is None else Behavior(
        logprobs=[-1.0], prompt_kind="plain", model="m", policy_version=version,
        sampling=SamplingParams(temperature=1.0, top_p=1.0, max_tokens=8, seed=0))
    return AlignedExample(
        id=f"{pid}:v{version or 0}", problem_id=pid, prompt="p", response="r",
        response_token_ids=[1], source="expert" if version is None else "self",
        reference_answer="1", expert_solution="e", behavior=behavior,
        attempts=AttemptCounts(), timings=Timings())


def test_stale_responses_are_dropped_experts_never() -> None:
    bound = StalenessBound(max_staleness=1, version=3)
    outcomes = {"a": Requeue.REQUEUED, "b": Requeue.KEEP, "c": Requeue.CANCELLED,
                "d": Requeue.SETTLED}
    asked: list[str] = []

    def requeue(entry_id: str, example: AlignedExample) -> Requeue:
        asked.append(entry_id)
        return outcomes[entry_id]

    entries = [("a", _example("a", 0)), ("b", _example("b", 1)), ("c", _example("c", 1)),
               ("d", _example("d", 0)), ("e", _example("e", 2)), ("f", _example("f", 3)),
               ("x", _example("x", None))]
    kept, counts = bound.admit(entries, requeue)
    assert asked == ["a", "b", "c", "d"]  # staleness 3, 2, 2, 3 > 1; e and f are within
    assert [k for k, _ in kept] == ["b", "e", "f", "x"]
    assert counts == {2: 1, 1: 1, 0: 1}  # the expert fallback has no staleness
    assert (bound.dropped, bound.requeued, bound.stale_trained) == (2, 1, 1)
    metrics = bound.metrics(counts)
    assert metrics["staleness_mean"] == 1.0 and metrics["staleness_max"] == 2
    assert metrics["policy_version"] == 3


def test_no_bound_drops_nothing() -> None:
    bound = StalenessBound(max_staleness=None, version=9)
    kept, counts = bound.admit([("a", _example("a", 0))], lambda *_: Requeue.REQUEUED)
    assert len(kept) == 1 and counts == {9: 1}
    assert "staleness_mean" not in bound.metrics({})
