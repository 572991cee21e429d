"""The aligner's decisions, with a scripted engine and the real sandboxed verifier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mindgap.rewriter.aligner import Aligner, RoundDone
from mindgap.rewriter.engines.scripted import ScriptedEngine, bernoulli_script
from mindgap.rewriter.gates import longest_common_substring
from mindgap.schemas import AlignedExample, GateCounts, Problem, RewriteOptions
from mindgap.verifier.pool import LocalVerifier
from tests.scripted import TimeoutVerifier

SOLUTION = ("Each box holds 6 eggs and there are 7 boxes, so the farmer has 6 * 7 = 42 eggs "
            "in total.\n#### 42")


@pytest.fixture(scope="module")
def verifier() -> Iterator[LocalVerifier]:
    with LocalVerifier(workers=2) as pool:
        yield pool


def problems(count: int = 3) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"How many eggs? ANSWER=42 (variant {i})",
                    solution=SOLUTION) for i in range(count)]


def is_guided(prompt: str) -> bool:
    return "<reference>" in prompt


def test_self_in_the_first_round(verifier: LocalVerifier) -> None:
    engine = ScriptedEngine(lambda prompt, i: "So 6 * 7 = 42. \\boxed{42}")
    examples = Aligner(engine, verifier).align(problems(3))
    assert [e.source for e in examples] == ["self"] * 3
    assert engine.calls == [(3, 1)]  # one engine call for all problems
    for example in examples:
        assert example.attempts.self_rounds == 1 and example.attempts.self_samples == 1
        assert example.behavior is not None and example.behavior.prompt_kind == "plain"
        assert len(example.behavior.logprobs) == len(example.response_token_ids)
        assert example.id == f"{example.problem_id}:v0"


def test_self_in_a_later_round_stops_there(verifier: LocalVerifier) -> None:
    # Correct only from the third engine call on.
    engine = ScriptedEngine(lambda p, i: "\\boxed{42}" if i >= 2000 else "\\boxed{41}")
    (example,) = Aligner(engine, verifier).align(problems(1))
    assert example.source == "self"
    assert example.attempts.self_rounds == 3 and example.attempts.self_samples == 3
    assert example.attempts.guided_samples == 0
    assert len(engine.calls) == 3


def test_every_round_is_reported(verifier: LocalVerifier) -> None:
    # Problem p0 is solved by itself in round 2; p1 only with the guide; p2 never.
    def script(prompt: str, index: int) -> str:
        if "variant 0" in prompt and index >= 1000:
            return "\\boxed{42}"
        if "variant 1" in prompt and is_guided(prompt):
            return "Count the boxes: 6 * 7 = 42, \\boxed{42}"
        return "\\boxed{7}"

    rounds: list[RoundDone] = []
    config = RewriteOptions(k_self=2, k_guided=2)
    Aligner(ScriptedEngine(script), verifier, config, on_round=rounds.append).align(problems(3))
    assert rounds == [RoundDone("plain", 1, 3, 0, 3), RoundDone("plain", 2, 3, 1, 2),
                      RoundDone("guided", 1, 2, 1, 1), RoundDone("guided", 2, 1, 0, 1)]


def test_guided_when_self_fails(verifier: LocalVerifier) -> None:
    engine = ScriptedEngine(lambda p, i: "Count the boxes: 6 * 7 = 42, \\boxed{42}"
                            if is_guided(p) else "\\boxed{7}")
    (example,) = Aligner(engine, verifier).align(problems(1))
    assert example.source == "guided"
    assert example.attempts.self_samples == 4 and example.attempts.guided_samples == 1
    assert example.behavior is not None
    assert example.behavior.prompt_kind == "guided" and example.behavior.answer_shown is True
    assert "<reference>" not in example.prompt  # the trainer's prompt is the plain one


def test_hide_answer_removes_the_final_line_and_is_recorded(verifier: LocalVerifier) -> None:
    seen: list[str] = []

    def script(prompt: str, index: int) -> str:
        if is_guided(prompt):
            seen.append(prompt)
            return "6 * 7 = 42, \\boxed{42}"
        return "no idea"

    config = RewriteOptions(hide_answer=True)
    (example,) = Aligner(ScriptedEngine(script), verifier, config).align(problems(1))
    assert example.behavior is not None and example.behavior.answer_shown is False
    assert "####" not in seen[0] and "6 * 7 = 42" in seen[0]


def test_guided_copies_are_rejected(verifier: LocalVerifier) -> None:
    engine = ScriptedEngine(lambda p, i: SOLUTION if is_guided(p) else "\\boxed{0}")
    (example,) = Aligner(engine, verifier).align(problems(1))
    assert example.source == "expert"
    assert example.attempts.guided_correct == 4
    assert example.attempts.rejected == GateCounts(copied=4)
    loose = RewriteOptions(copy_min_chars=10_000)
    (kept,) = Aligner(engine, verifier, loose).align(problems(1))
    assert kept.source == "guided"


def test_expert_fallback(verifier: LocalVerifier) -> None:
    engine = ScriptedEngine(lambda p, i: "I am not sure.")
    (example,) = Aligner(engine, verifier).align(problems(1))
    assert example.source == "expert" and example.behavior is None
    assert example.response == SOLUTION
    assert example.response_token_ids == [*engine.tokenize(SOLUTION), engine.eos_token_id]
    assert example.reference_answer == "42"
    assert example.attempts.self_samples == 4 and example.attempts.guided_samples == 4


def _chosen(seed: int, verifier: LocalVerifier) -> list[str]:
    engine = ScriptedEngine(lambda p, i: f"way {i % 1000}: \\boxed{{42}}")
    config = RewriteOptions(round_size=4, seed=seed)
    return [e.response for e in Aligner(engine, verifier, config).align(problems(12))]


def test_seeded_choice_among_correct(verifier: LocalVerifier) -> None:
    first, again, other = _chosen(1, verifier), _chosen(1, verifier), _chosen(2, verifier)
    assert first == again
    assert first != other
    assert len(set(first)) > 1  # not always the first sample


def test_likeliest_choice(verifier: LocalVerifier) -> None:
    # The scripted engine gives log-prob -0.1 * (1 + len % 3) per token: the
    # response with len % 3 == 0 is the likeliest.
    texts = ["\\boxed{42}", "x\\boxed{42}", "xx\\boxed{42}", "xxx\\boxed{42}"]
    engine = ScriptedEngine(lambda p, i: texts[i % 1000])
    config = RewriteOptions(round_size=4, choose="likeliest")
    (example,) = Aligner(engine, verifier, config).align(problems(1))
    assert len(example.response) % 3 == 0


def test_verifier_timeouts_count_as_incorrect() -> None:
    engine = ScriptedEngine(lambda p, i: "\\boxed{42}")
    aligner = Aligner(engine, TimeoutVerifier())
    (example,) = aligner.align(problems(1))
    assert example.source == "expert"
    assert aligner.stats.verifier_errors["timeout"] == 8


def test_adaptive_rounds_save_samples_at_equal_yield(verifier: LocalVerifier) -> None:
    engine = ScriptedEngine(bernoulli_script(0.6, seed=3))
    aligner = Aligner(engine, verifier, RewriteOptions(k_guided=0))
    examples = aligner.align(problems(40))
    fixed = 40 * 4
    assert aligner.stats.samples < fixed / 2
    assert sum(e.source == "self" for e in examples) >= 36  # 1 - 0.4**4 = 97%


def test_longest_common_substring() -> None:
    assert longest_common_substring("abcdef", "zzcdez") == 3
    assert longest_common_substring("", "abc") == 0


def test_each_problem_is_reported_once_decided(verifier: LocalVerifier) -> None:
    # p0: self in round 1; p1: guided in guided round 2; p2: expert, at the end.
    def script(prompt: str, index: int) -> str:
        if "variant 0" in prompt:
            return "\\boxed{42}"
        if "variant 1" in prompt and is_guided(prompt) and index >= 3000:
            return "Count the boxes: 6 * 7 = 42, \\boxed{42}"
        return "\\boxed{7}"

    events: list[str] = []
    decided = []

    def on_decided(example: AlignedExample) -> None:
        decided.append(example)
        events.append(f"decided {example.problem_id} {example.source}")

    def on_round(done: RoundDone) -> None:
        events.append(f"round {done.kind} {done.round}")

    aligner = Aligner(ScriptedEngine(script), verifier, RewriteOptions(k_self=2, k_guided=2),
                      on_round=on_round, on_decided=on_decided)
    examples = aligner.align(problems(3))
    assert events == ["decided p0 self", "round plain 1", "round plain 2",
                      "round guided 1", "decided p1 guided", "round guided 2",
                      "decided p2 expert"]
    assert decided == [examples[0], examples[1], examples[2]]  # the same examples, once each
    assert aligner.stats.sources == {"self": 1, "guided": 1, "expert": 1}
