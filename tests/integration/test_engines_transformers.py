"""The transformers engine against its contract, with the real SmolLM2 model."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from mindgap.rewriter.engines.transformers_engine import TransformersEngine
from tests.engine_contract import (
    abs_errors,
    check_samples,
    check_seed_repeatable,
    check_top_p_renormalised,
    mean,
)

pytestmark = pytest.mark.slow
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = ["What is 12 + 30? Put the final answer in \\boxed{}.",
             "A farmer has 3 cows and buys 4 more. How many cows does the farmer have?"]


@pytest.fixture(scope="module")
def engine() -> Iterator[TransformersEngine]:
    with TransformersEngine(batch_size=8) as model:
        yield model  # type: ignore[misc]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_logprobs_match_score(engine: TransformersEngine, temperature: float) -> None:
    prompts = [engine.render_chat(q) for q in QUESTIONS]
    outputs = engine.generate(prompts, n=3, temperature=temperature, top_p=1.0, max_tokens=40,
                              seed=5)
    check_samples(engine, outputs, 3, max_tokens=40)
    errors: list[float] = []
    for prompt, samples in zip(prompts, outputs, strict=True):
        for sample in samples:
            scored = engine.score(prompt, sample.token_ids, temperature=temperature)
            errors += abs_errors(scored, sample.logprobs)
    mae = mean(errors)
    print(f"T={temperature}: MAE {mae:.2e} over {len(errors)} tokens")
    assert mae < 1e-3


def test_top_p_logprobs_are_renormalised(engine: TransformersEngine) -> None:
    check_top_p_renormalised(engine, max_tokens=16)


def test_seed_makes_sampling_repeatable(engine: TransformersEngine) -> None:
    check_seed_repeatable(engine, engine.render_chat(QUESTIONS[1]))


def test_score_checks_its_arguments_and_batches(engine: TransformersEngine) -> None:
    prompts = [engine.render_chat(q) for q in QUESTIONS]
    ids = engine.tokenize(" The answer is 42.")
    with pytest.raises(ValueError, match="positive temperature"):
        engine.score(prompts[0], ids, temperature=0.0)
    with pytest.raises(ValueError, match="non-empty prompt"):
        engine.score("", ids)
    assert engine.score("", []) == []
    # One padded forward pass: rows of other lengths and temperatures, and an empty one.
    requests = [(prompts[0], ids, 1.0), (prompts[1], [], 1.0), (prompts[1], ids[:3], 0.7)]
    batched = engine.score_batch(requests)
    assert batched[1] == []
    for request, scores in zip(requests, batched, strict=True):
        assert scores == pytest.approx(engine.score(*request), abs=1e-4)
