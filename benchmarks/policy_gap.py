"""Policy-gap benchmark: does rewriting give training data the model finds likelier?

Runs the real pipeline, as a user would, on the first ``--limit`` (64) ASDiv problems:

1. each ASDiv row becomes a mindgap Problem (id ``asdiv-<index>``, question = body + " " +
   question, solution = ``"<formula>\\n#### <n>"``, answer = ``n``, the number of ``answer``
   before any parenthesis: ``"9 (apples)"`` gives ``9``);
2. ``mindgap rewrite --engine vllm`` (subprocess) aligns them: self, else guided, else expert;
3. ``mindgap gap`` (subprocess) scores every kept response and every expert original under the
   model, writes the histogram PNG and the JSON report.

The check: kept model responses (self and guided, token-weighted) have a higher mean token
log-prob under the model than the expert solutions. Also shown: the same comparison paired
per problem (a model response against the expert original of the same problem).

Sampling at temperature T (``--temperature``, DESIGN.md's default 1.0): a sample's mean
token log-prob under the model is about minus the model's entropy at T, which for a 135M model
at T = 1 is high, while ASDiv's expert "solutions" are short formulas (``7+2=9``) whose
numbers the question predicts; so the comparison depends on T. Run it at 1.0 and 0.7.

Run: ``.venv/bin/python benchmarks/policy_gap.py [--limit 64] [--max-tokens 512]
[--temperature 0.7]``.
Results (``S`` = ``policy_gap`` at T = 1, ``policy_gap_t<T>`` otherwise):
``benchmarks/results/S.{json,png}``, ``S_aligned.jsonl`` (+ its ``.summary.json``),
``S_report.json`` (this script's summary) and ``policy_gap_problems.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _machine

from mindgap.jsonl import json_lines
from mindgap.schemas import SOURCES

MODEL_SOURCES = SOURCES[:-1]
"""The model's own responses (self, guided); the last source is the expert original."""
_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:/\d+)?$")


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def asdiv_problems(path: Path, limit: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The first ``limit`` usable ASDiv rows as Problem dicts, and notes on rows skipped."""
    problems: list[dict[str, Any]] = []
    skipped: list[str] = []
    for line_number, row in json_lines(path):
        if len(problems) >= limit:
            break
        index = line_number - 1
        number = str(row.get("answer", "")).split("(")[0].strip()
        formula = str(row.get("formula", "")).strip()
        if not _NUMBER.match(number) or not formula:
            skipped.append(f"asdiv-{index}: answer {row.get('answer')!r}")
            continue
        problems.append({
            "id": f"asdiv-{index}",
            "question": f"{row['body'].strip()} {row['question'].strip()}",
            "solution": f"{formula}\n#### {number}",
            "answer": number,
        })
    return problems, skipped


def run_step(name: str, command: list[str]) -> float:
    """Run one CLI step (its output goes to our stdout/stderr); seconds taken."""
    print(f"[{name}] {' '.join(command)}", file=sys.stderr, flush=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=_machine.PROJECT_ROOT, env=env, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"error: step {name} failed with exit status {done.returncode}")
    print(f"[{name}] done in {seconds:.1f} s", file=sys.stderr, flush=True)
    return seconds


def paired(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per problem with a kept model response: its mean log-prob minus its expert original's."""
    diffs = [e["mean_logprob"] - e["expert_mean_logprob"] for e in examples
             if e["source"] in MODEL_SOURCES and e["mean_logprob"] is not None
             and e["expert_mean_logprob"] is not None]
    if not diffs:
        return {"problems": 0, "mean_diff": None, "model_higher": 0}
    return {"problems": len(diffs), "mean_diff": math.fsum(diffs) / len(diffs),
            "model_higher": sum(d > 0 for d in diffs)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=_machine.DEFAULT_DATA_DIR)
    parser.add_argument("--limit", type=int, default=64, help="ASDiv problems (first N usable)")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--k-self", type=int, default=4)
    parser.add_argument("--k-guided", type=int, default=4)
    parser.add_argument("--engine", default="vllm", choices=("vllm", "transformers"))
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature (DESIGN.md default 1.0)")
    parser.add_argument("--name", default=None,
                        help="stem of the result files (default: policy_gap at T=1, "
                        "policy_gap_t<T> otherwise)")
    parser.add_argument("--note", default="", help="free text stored in the JSON")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Outputs:
    """The files one run writes under ``benchmarks/results``."""

    problems: Path
    aligned: Path
    plot: Path
    gap_json: Path
    report: Path

    @classmethod
    def named(cls, stem: str) -> Outputs:
        """The files of the run called ``stem`` (the problems file is shared)."""
        results = _machine.RESULTS
        return cls(results / "policy_gap_problems.jsonl", results / f"{stem}_aligned.jsonl",
                   results / f"{stem}.png", results / f"{stem}.json",
                   results / f"{stem}_report.json")


def run_pipeline(args: argparse.Namespace, out: Outputs) -> tuple[float, float]:
    """``mindgap rewrite`` then ``mindgap gap`` on the problems file; seconds of each."""
    cli = [sys.executable, "-m", "mindgap.cli"]
    rewrite_s = run_step("rewrite", [
        *cli, "rewrite", "--data", str(out.problems), "--out", str(out.aligned), "--overwrite",
        "--engine", args.engine, "--max-tokens", str(args.max_tokens),
        "--k-self", str(args.k_self), "--k-guided", str(args.k_guided),
        "--temperature", str(args.temperature)])
    gap_s = run_step("gap", [*cli, "gap", "--data", str(out.aligned), "--plot", str(out.plot),
                             "--out", str(out.gap_json)])
    return rewrite_s, gap_s


def compare(gap: dict[str, Any]) -> dict[str, Any]:
    """Kept model responses (token-weighted) against the expert originals, and paired."""
    groups = gap["groups"]
    model_tokens = sum(groups[s]["tokens"] for s in MODEL_SOURCES)
    model_mean = (math.fsum(groups[s]["mean_logprob"] * groups[s]["tokens"]
                            for s in MODEL_SOURCES if groups[s]["tokens"])
                  / model_tokens) if model_tokens else None
    expert_mean = groups["expert_solutions"]["mean_logprob"]
    passed = model_mean is not None and expert_mean is not None and model_mean > expert_mean
    return {"model_tokens": model_tokens, "model_mean": model_mean, "expert_mean": expert_mean,
            "paired": paired(gap["examples"]), "passed": passed}


def print_rewrite(args: argparse.Namespace, summary: dict[str, Any], rewrite_s: float) -> None:
    """The rewrite run's summary table."""
    sources = summary["sources_in_output"]
    print(f"\nrewrite summary ({args.engine}, T {args.temperature:g}, max_tokens "
          f"{args.max_tokens}, k_self "
          f"{args.k_self}, k_guided {args.k_guided}; {rewrite_s:.0f} s incl. start-up)")
    print(_machine.format_table(
        ["problems", *SOURCES, "samples", "gen tokens", "engine calls",
         "seconds", "problems/s", "gen tok/s"],
        [[str(summary["problems_in_output"]), *(str(sources.get(s, 0)) for s in SOURCES),
          str(summary["samples"]),
          str(summary["generated_tokens"]), str(summary["engine_calls"]),
          f"{summary['seconds']:.1f}", f"{summary['problems_per_s']:.3f}",
          f"{summary['generated_tokens_per_s']:.1f}"]]))


def print_gap(gap: dict[str, Any], gap_json: Path, result: dict[str, Any]) -> None:
    """The log-prob table per group, the paired comparison and the verdict."""
    groups = gap["groups"]
    model_mean = result["model_mean"]
    print(f"\nmean token log-prob under {gap['model']} (from {gap_json.name})")
    labels = {**{s: f"kept {s}" for s in SOURCES},
              "all": "all kept", "expert_solutions": "expert originals"}
    rows = [[labels[name], str(groups[name]["count"]), str(groups[name]["tokens"]),
             _fmt(groups[name]["mean_logprob"]), _fmt(groups[name]["perplexity"], ".3g")]
            for name in labels]
    rows.append([f"model ({'+'.join(MODEL_SOURCES)})",
                 str(sum(groups[s]["count"] for s in MODEL_SOURCES)),
                 str(result["model_tokens"]), _fmt(model_mean),
                 _fmt(math.exp(-model_mean) if model_mean is not None else None, ".3g")])
    print(_machine.format_table(["group", "n", "tokens", "mean logp", "ppl"], rows))
    pairs = result["paired"]
    print(f"\npaired (same problem): {pairs['problems']} problems with a kept model response; "
          f"model response likelier than its expert original in {pairs['model_higher']}; "
          f"mean difference {_fmt(pairs['mean_diff'])} nats/token")
    passed = result["passed"]
    print(f"{_machine.verdict(passed)}: kept model responses mean logp {_fmt(model_mean)} "
          f"{'>' if passed else '<='} expert solutions {_fmt(result['expert_mean'])}"
          + ("" if result["model_tokens"] else "  (no model response was kept)"))


def main(argv: Sequence[str] | None = None) -> int:
    """Convert, rewrite, measure the gap, report."""
    args = parse_args(argv)
    source = args.data_dir / "asdiv.jsonl"
    _machine.require_data(source)
    info = _machine.machine_info()
    _machine.RESULTS.mkdir(parents=True, exist_ok=True)
    out = Outputs.named(args.name or ("policy_gap" if args.temperature == 1.0
                                      else f"policy_gap_t{args.temperature:g}"))
    problems, skipped = asdiv_problems(source, args.limit)
    out.problems.write_text("".join(json.dumps(p) + "\n" for p in problems), encoding="utf-8")
    print(f"{len(problems)} ASDiv problems -> {out.problems} ({len(skipped)} rows skipped)",
          file=sys.stderr)

    rewrite_s, gap_s = run_pipeline(args, out)
    summary = json.loads(Path(f"{out.aligned}.summary.json").read_text(encoding="utf-8"))
    gap = json.loads(out.gap_json.read_text(encoding="utf-8"))
    result = compare(gap)
    load = _machine.end_load(info)
    print_rewrite(args, summary, rewrite_s)
    print_gap(gap, out.gap_json, result)
    print(load)

    _machine.save_json(out.report, {
        "benchmark": "policy_gap",
        "machine": info,
        "settings": {"data": str(source), "limit": args.limit, "engine": args.engine,
                     "max_tokens": args.max_tokens, "temperature": args.temperature,
                     "k_self": args.k_self,
                     "k_guided": args.k_guided, "note": args.note,
                     "max_tokens_reduced": args.max_tokens < 512},
        "problems": len(problems),
        "skipped_rows": skipped,
        "seconds": {"rewrite_incl_startup": round(rewrite_s, 1), "gap": round(gap_s, 1)},
        "rewrite_summary": summary,
        "mean_logprob": {"model_self_guided": result["model_mean"],
                         "expert_originals": result["expert_mean"],
                         **{name: group["mean_logprob"] for name, group in gap["groups"].items()}},
        "paired": result["paired"],
        "target": {"model_higher_than_expert": result["passed"]},
        "outputs": {name: str(path.relative_to(_machine.PROJECT_ROOT)) for name, path in
                    (("aligned", out.aligned), ("gap_json", out.gap_json), ("plot", out.plot))},
    })
    print(f"report: {out.report}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
