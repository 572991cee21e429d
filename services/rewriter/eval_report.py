"""The results of ``mindgap eval``: metrics per benchmark and on average, the table, compare.

Per benchmark: avg@n (mean share of correct samples), pass@k for k = 1, 2, 4, ... n
(unbiased), the share of responses with no stated answer (the verifier's ``no_answer``) and
cut at ``max_tokens`` (finish reason ``length``), and the mean response length. The average
row is the unweighted mean over benchmarks, as the paper reports it. ``compare`` pairs two
results files problem by problem and bootstraps the difference.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mindgap.eval_stats import Difference, avg_at_n, k_values, mean_pass_at_k, stratified_bootstrap

if TYPE_CHECKING:
    from mindgap.rewriter.evaluate import ProblemVerdict

AVERAGE = "average"


def benchmark_metrics(verdicts: list[ProblemVerdict]) -> dict[str, Any]:
    """avg@n, pass@k, the no-answer and cut shares and mean tokens of one benchmark."""
    counts = [(len(v.samples), v.correct) for v in verdicts]
    samples = [s for v in verdicts for s in v.samples]
    total = max(len(samples), 1)
    n = min((c[0] for c in counts), default=1)
    return {
        "problems": len(verdicts), "n": n, "samples": len(samples),
        "avg_at_n": avg_at_n(counts),
        "pass_at_k": {str(k): mean_pass_at_k(counts, k) for k in k_values(n)},
        "no_answer": sum(s.reason == "no_answer" for s in samples) / total,
        "cut": sum(s.finish_reason == "length" for s in samples) / total,
        "mean_tokens": sum(s.tokens for s in samples) / total,
    }


def _average(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The unweighted mean over benchmarks (pass@k for the k every benchmark has)."""
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    ks = set.intersection(*(set(r["pass_at_k"]) for r in rows))
    return {
        "problems": sum(r["problems"] for r in rows), "n": min(r["n"] for r in rows),
        "samples": sum(r["samples"] for r in rows), "avg_at_n": mean("avg_at_n"),
        "pass_at_k": {k: sum(r["pass_at_k"][k] for r in rows) / len(rows)
                      for k in sorted(ks, key=int)},
        "no_answer": mean("no_answer"), "cut": mean("cut"), "mean_tokens": mean("mean_tokens"),
    }


def summarise(verdicts: list[ProblemVerdict], config: dict[str, Any],
              run: dict[str, Any]) -> dict[str, Any]:
    """The results: settings, metrics per benchmark and on average, every verdict."""
    by_benchmark: dict[str, list[ProblemVerdict]] = {}
    for verdict in verdicts:
        by_benchmark.setdefault(verdict.benchmark, []).append(verdict)
    metrics = {name: benchmark_metrics(items) for name, items in by_benchmark.items()}
    return {
        "config": config, "run": run,
        "benchmarks": metrics, AVERAGE: _average(list(metrics.values())) if metrics else None,
        "problems": {name: [v.model_dump(exclude={"benchmark"}) for v in items]
                     for name, items in by_benchmark.items()},
    }


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown_table(results: dict[str, Any]) -> str:
    """The metrics as a markdown table (percentages), benchmarks then the average."""
    rows = dict(results["benchmarks"])
    if results.get(AVERAGE):
        rows["**average**"] = results[AVERAGE]
    ks = list(results[AVERAGE]["pass_at_k"]) if results.get(AVERAGE) else []
    n = results[AVERAGE]["n"] if results.get(AVERAGE) else 0
    head = ["benchmark", "problems", f"avg@{n}", *(f"pass@{k}" for k in ks), "no answer",
            "cut", "mean tokens"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        cells = [name, str(row["problems"]), _percent(row["avg_at_n"]),
                 *(_percent(row["pass_at_k"].get(k, 0.0)) for k in ks),
                 _percent(row["no_answer"]), _percent(row["cut"]), f"{row['mean_tokens']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    config = results["config"]
    return (f"{config.get('model')} ({config.get('engine')}), n = {n}, T = "
            f"{config.get('temperature')}, top-p = {config.get('top_p')}, max tokens = "
            f"{config.get('max_tokens')}; percentages.\n\n" + "\n".join(lines) + "\n")


def write_results(out: Path, results: dict[str, Any]) -> Path:
    """Write the results JSON to ``out`` (atomically) and the table next to it (``.md``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, out)
    table = out.with_suffix(".md")
    table.write_text(markdown_table(results), encoding="utf-8")
    return table


def _scores(results: dict[str, Any], benchmark: str) -> dict[str, float]:
    """Per-problem accuracy (correct share of its samples) of one benchmark, by problem id."""
    return {p["id"]: p["correct"] / max(len(p["samples"]), 1)
            for p in results["problems"].get(benchmark, [])}


def compare(a: dict[str, Any], b: dict[str, Any], resamples: int = 10_000,
            seed: int = 0) -> dict[str, Difference]:
    """``b - a`` in avg@n per shared benchmark (on shared problems) and on average, each with
    a paired bootstrap 95% interval; ``ValueError`` when they share no problem."""
    groups = {}
    for name in [n for n in a["benchmarks"] if n in b["benchmarks"]]:
        left, right = _scores(a, name), _scores(b, name)
        ids = [i for i in left if i in right]
        if ids:
            groups[name] = ([left[i] for i in ids], [right[i] for i in ids])
    if not groups:
        raise ValueError("the two results share no problem of any benchmark")
    found = {name: stratified_bootstrap({name: pair}, resamples, seed)
             for name, pair in groups.items()}
    found[AVERAGE] = stratified_bootstrap(groups, resamples, seed)
    return found


def compare_table(differences: dict[str, Difference], a_name: str, b_name: str) -> str:
    """The differences as a markdown table (percentage points)."""
    lines = [f"avg@n: A = {a_name}, B = {b_name}; B - A with its paired bootstrap 95% "
             "interval (problems resampled), percentage points.", "",
             "| benchmark | problems | A | B | B - A | 95% interval |", "|---|---|---|---|---|---|"]
    for name, d in differences.items():
        label = "**average**" if name == AVERAGE else name
        lines.append(f"| {label} | {d.problems} | {_percent(d.a)} | {_percent(d.b)} | "
                     f"{100 * d.diff:+.1f} | [{100 * d.low:+.1f}, {100 * d.high:+.1f}] |")
    return "\n".join(lines) + "\n"


def compare_files(a: Path, b: Path, resamples: int = 10_000, seed: int = 0) -> str:
    """The table of ``b - a`` between two results files (``ValueError`` for a bad file or no
    shared problem)."""
    loaded = []
    for path in (a, b):
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a results file ({exc})") from None
        if not isinstance(results, dict) or not {"benchmarks", "problems"} <= results.keys():
            raise ValueError(f"{path}: not a results file of mindgap eval")
        loaded.append(results)
    return compare_table(compare(*loaded, resamples=resamples, seed=seed), str(a), str(b))
