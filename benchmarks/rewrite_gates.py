"""Quality-gate benchmark: how many verified responses each gate removes, and at what cost.

Runs the real pipeline (``mindgap rewrite --engine vllm``, SmolLM2-135M-Instruct, DESIGN.md's
defaults: T = 1.0, top-p 1.0, 512 tokens, K_self = K_guided = 4) on the first ``--limit`` (64)
problems of ASDiv and of GSM8K's test set, with every gate off and ``--round-size 4`` (all
four samples of a kind in one round, so every verified sample is seen, not only the first),
and ``--samples-out`` recording each sample's verdict. The guided stage runs twice, with the
reference's answer shown (the paper) and hidden (``--hide-answer``, a run of its own on every
problem, so runs can go side by side: ``--only NAME --stage hidden``); both count only the
problems the self stage did not solve. Each gate is then applied to the recorded samples, alone and
all together, with the same code the aligner runs:

- verified: samples the verifier judged correct (copies of the reference excluded: the
  copy rule is always on);
- removed by each gate, and by all gates;
- problems with a keepable response before and after the gates (what enabling them costs in
  recovered problems; the aligner would then sample on, which this measurement does not).

The self responses are gated too (only ``cut`` and ``repetition`` apply to them in the
aligner); the working gate is shown on them as a control: how often correct working from
the model alone trips it.

Run: ``.venv/bin/python benchmarks/rewrite_gates.py [--limit 64] [--analyse-only]``.
Results: ``benchmarks/results/rewrite_gates.json`` (table, per-gate counts, examples of each
rejection); the raw runs in ``benchmarks/results/rewrite_gates/`` (not committed). A data
set whose raw runs are not there keeps its rows from the saved results, each with the
machine and commit it was measured at (``measured_at``), so one data set can be measured
again alone (``--only``, then ``--analyse-only``); the repetition profile covers the raw
runs present.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _machine

from mindgap.datasets import read_problems
from mindgap.jsonl import json_lines
from mindgap.rewriter.gates import GATES, longest_common_substring, repeated_ngram_share
from mindgap.rewriter.gates import working_rejection as working_gate
from mindgap.schemas import RewriteOptions

RESULTS = _machine.RESULTS
RUNS = RESULTS / "rewrite_gates"
DATA = _machine.DEFAULT_DATA_DIR
DATASETS = {"asdiv": ("asdiv.jsonl", "asdiv"), "gsm8k": ("gsm8k_test.jsonl", "gsm8k")}
STAGES = ("shown", "hidden")
GATES_OFF = ["--no-reject-cut", "--no-reject-repetition", "--no-check-working"]
DEFAULTS = RewriteOptions()


def _rewrite(data: Path, preset: str, out: Path, extra: list[str], limit: int) -> float:
    """One ``mindgap rewrite`` run into ``out`` (+ ``.samples.jsonl``); seconds taken."""
    command = [sys.executable, "-m", "mindgap.cli", "rewrite", "--engine", "vllm",
               "--data", str(data), "--preset", preset, "--limit", str(limit),
               "--round-size", "4", "--out", str(out), "--overwrite",
               "--samples-out", str(samples_path(out)), *GATES_OFF, *extra]
    print("$", " ".join(command[2:]), file=sys.stderr, flush=True)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def samples_path(out: Path) -> Path:
    return out.with_name(out.stem + ".samples.jsonl")


def solved_by_self(samples: Path) -> set[str]:
    """Problems with a plain sample that passed the verifier (the gates are off)."""
    return {row["problem_id"] for _, row in json_lines(samples)
            if row["prompt_kind"] == "plain" and row["verdict"] in ("kept", "correct")}


def generate(name: str, limit: int, stages: Sequence[str] = STAGES) -> dict[str, float]:
    """One data set's runs: self + guided with the answer shown, and guided with the answer
    hidden (on every problem; :func:`main` counts only those self did not solve, so the two
    runs can go side by side)."""
    file, preset = DATASETS[name]
    RUNS.mkdir(parents=True, exist_ok=True)
    extra = {"shown": [], "hidden": ["--k-self", "0", "--hide-answer"]}
    return {stage: _rewrite(DATA / file, preset, RUNS / f"{name}_{stage}.jsonl", extra[stage],
                            limit) for stage in stages}


def gate_failures(row: dict[str, Any], solution: str) -> list[str]:
    """Every gate (of :data:`GATES`) a verified sample fails, with default thresholds
    (the copy rule only for guided samples: plain prompts show no reference)."""
    failed = []
    if row["finish_reason"] == "length":
        failed.append("cut")
    if repeated_ngram_share(row["text"]) > DEFAULTS.repetition_max_share:
        failed.append("repetition")
    if row["prompt_kind"] == "guided" and \
            longest_common_substring(row["text"], solution) >= DEFAULTS.copy_min_chars:
        failed.append("copied")
    working = working_gate(row["text"], row["extracted"])
    if working is not None:
        failed.append(working.gate)
    return failed


def _verified(samples: Path, kind: str) -> list[dict[str, Any]]:
    """``kind``'s samples the verifier judged correct (whatever a gate did with them)."""
    return [row for _, row in json_lines(samples) if row["prompt_kind"] == kind
            and (row["verdict"] in ("kept", "correct") or row["reason"] in GATES)]


def analyse(samples: Path, kind: str, solutions: dict[str, str],
            skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Any]:
    """Per-gate removals among ``kind``'s verified, non-copy samples in ``samples``, on the
    problems of ``solutions`` not in ``skip``."""
    applicable = set(GATES if kind == "guided" else ("cut", "repetition"))
    removed: Counter[str] = Counter()
    examples: dict[str, dict[str, str]] = {}
    verified = removed_any = 0
    before: set[str] = set()
    after: set[str] = set()
    for row in _verified(samples, kind):
        if row["problem_id"] in skip:
            continue
        failed = gate_failures(row, solutions[row["problem_id"]])
        if "copied" in failed:  # the copy rule is always on: never a verified candidate
            continue
        verified += 1
        removed.update(failed)
        for gate in failed:
            examples.setdefault(gate, {"problem_id": row["problem_id"],
                                       "text_tail": row["text"][-400:]})
        before.add(row["problem_id"])
        if set(failed) & applicable:
            removed_any += 1
        else:
            after.add(row["problem_id"])
    total = sum(1 for _, row in json_lines(samples)
                if row["prompt_kind"] == kind and row["problem_id"] not in skip)
    return {"kind": kind, "samples": total, "verified": verified, "removed": dict(removed),
            "removed_by_applicable_gates": removed_any, "problems_before": len(before),
            "problems_after": len(after), "examples": examples}


def repetition_profile(paths: list[Path]) -> dict[str, Any]:
    """The repetition measure over every recorded sample, by finish reason: what the
    threshold is chosen against (quantiles, and the share of samples over it)."""
    shares: dict[str, list[float]] = {}
    for path in paths:
        for _, row in json_lines(path):
            shares.setdefault(row["finish_reason"], []).append(repeated_ngram_share(row["text"]))
    profile = {}
    for reason, values in sorted(shares.items()):
        values.sort()
        quantiles = {f"p{int(q * 100)}": round(values[int(q * (len(values) - 1))], 3)
                     for q in (0.5, 0.9, 0.99)}
        over = sum(v > DEFAULTS.repetition_max_share for v in values)
        profile[reason] = {"samples": len(values), **quantiles, "max": round(values[-1], 3),
                           "over_threshold": over}
    return profile


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of :func:`analyse` rows."""
    head = ["data", "stage", "problems", "samples", "verified",
            *[g for g in GATES if g != "copied"], "all gates", "problems before -> after"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["data"], row["stage"], str(row["problems"]), str(row["samples"]),
                 str(row["verified"]),
                 *[str(row["removed"].get(g, 0)) for g in GATES if g != "copied"],
                 str(row["removed_by_applicable_gates"]),
                 f"{row['problems_before']} -> {row['problems_after']}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=64)
    parser.add_argument("--analyse-only", action="store_true",
                        help="Re-read the recorded runs instead of generating them.")
    parser.add_argument("--only", choices=sorted(DATASETS),
                        help="Generate this data set's runs only (then --analyse-only).")
    parser.add_argument("--stage", choices=STAGES, help="With --only: this run only.")
    args = parser.parse_args()
    _machine.require_data(*(DATA / file for file, _ in DATASETS.values()))
    info = _machine.machine_info()
    if args.only:
        print(generate(args.only, args.limit, [args.stage] if args.stage else STAGES))
        return
    seconds = {} if args.analyse_only else {n: generate(n, args.limit) for n in DATASETS}
    saved = RESULTS / "rewrite_gates.json"
    previous = json.loads(saved.read_text(encoding="utf-8")) if saved.exists() else {}
    rows: list[dict[str, Any]] = []
    for name, (file, preset) in DATASETS.items():
        solutions = {p.id: p.solution for p in read_problems(str(DATA / file), preset=preset,
                                                             limit=args.limit)}
        shown = samples_path(RUNS / f"{name}_shown.jsonl")
        if not shown.exists():
            kept = [row for row in previous.get("rows", []) if row["data"] == name]
            print(f"{name}: not run here; {len(kept)} rows kept from the saved results "
                  f"({previous.get('machine', {}).get('git_commit', '?')})", file=sys.stderr)
            rows += [{**row, "measured_at": row.get("measured_at", previous["machine"])}
                     for row in kept]
            continue
        covered = {row["problem_id"] for _, row in json_lines(shown)
                   if row["prompt_kind"] == "plain"}
        outside = set(solutions) - covered  # a shorter run (--limit) or one stopped early
        solved = solved_by_self(shown) | outside
        stages = [("self", "shown", "plain", outside),
                  ("guided, answer shown", "shown", "guided", solved),
                  ("guided, --hide-answer", "hidden", "guided", solved)]
        for stage, run, kind, skip in stages:
            if not samples_path(RUNS / f"{name}_{run}.jsonl").exists():
                print(f"{name} {stage}: not run", file=sys.stderr)
                continue
            result = analyse(samples_path(RUNS / f"{name}_{run}.jsonl"), kind, solutions, skip)
            rows.append({"data": name, "stage": stage, "problems": len(covered) - (
                len(solved - outside) if kind == "guided" else 0), **result})
    text = table(rows)
    print(text)
    profile = repetition_profile(sorted(RUNS.glob("*.samples.jsonl")))
    print("repetition share by finish reason:", json.dumps(profile))
    print(_machine.end_load(info))
    report = {"machine": info, "limit": args.limit, "seconds": seconds,
              "settings": {"temperature": DEFAULTS.temperature, "max_tokens": DEFAULTS.max_tokens,
                           "k": 4, "repetition_max_share": DEFAULTS.repetition_max_share},
              "table": text, "rows": rows, "repetition_profile": profile}
    _machine.save_json(saved, report)


if __name__ == "__main__":
    main()
