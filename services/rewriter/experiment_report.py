"""The report of ``mindgap experiment``: raw metrics gathered from the stages, tables, PNGs.

``report_dir`` gets ``report.md``, ``curves.png`` (loss and gradient norm per step),
``summary.png`` (policy gap, drift and held-out accuracy), ``online.png`` (each batch's mean
token log-prob under the weights trained on it, per step, offline and online runs),
``metrics.json`` (every number the report shows, and the per-step curves), ``config.yaml``
and ``rewritten.summary.json``.
Intervals are paired bootstrap 95% intervals over held-out problems (stratified by
benchmark), so they measure problem sampling noise; seed noise is the difference between
two seeds of one arm, with its own interval.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import yaml

from mindgap.jsonl import json_lines
from mindgap.rewriter.drift import behavior_mean, drift_of
from mindgap.rewriter.eval_report import AVERAGE, compare
from mindgap.rewriter.experiment import (
    START,
    Layout,
    copy_rewrite_summary,
    read_aligned,
    read_json,
    write_json,
)
from mindgap.rewriter.experiment_config import ExperimentConfig, run_name
from mindgap.rewriter.gap import GapReport
from mindgap.schemas import SOURCES

DATA_KINDS = ("expert", "rewritten")
CURVE_KEYS = ("loss", "ce", "grad_norm", "w_mean", "w_var", "ess_frac", "response_tokens")


def _data_metrics(config: ExperimentConfig, kind: str) -> dict[str, Any]:
    """One training set: its sources and its gap under the start model (all kept tokens)."""
    report = GapReport.model_validate(read_json(Layout(config).gap(kind)))
    sources: dict[str, int] = {}
    for example in read_aligned(Layout(config).dataset(kind)):
        sources[example.source] = sources.get(example.source, 0) + 1
    stats = report.groups["all"]
    return {"examples": sum(sources.values()), "sources": sources,
            "mean_logprob": stats.mean_logprob, "ratio_mean": stats.ratio_mean,
            "ratio_var": stats.ratio_var, "ratio_ess": stats.ratio_ess,
            "ratio_clipped": stats.ratio_clipped, "tokens": stats.tokens}


def _rows(metrics_file: Path) -> list[dict[str, Any]]:
    """The step records of a run's metrics.jsonl."""
    return [row for _, row in json_lines(metrics_file) if "step" in row and "loss" in row]


def _curves(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per-step values of :data:`CURVE_KEYS` (and ``step``), NaN where a step lacks one."""
    return {key: [float(row.get(key, math.nan)) for row in rows]
            for key in ("step", *CURVE_KEYS)}


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and (population) standard deviation of the finite ``values``."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None, None
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))


def training_gap(curves: dict[str, list[float]]) -> dict[str, float | None]:
    """The policy gap of each batch when trained on: its mean token log-prob (-ce) under the
    weights being trained, before the step; mean and sd over steps, first and last step; and
    the token weight variance (``w_var``) averaged over steps."""
    logprob = [-ce for ce in curves["ce"] if math.isfinite(ce)]
    mean, sd = _mean_sd(logprob)
    return {"train_logprob_mean": mean, "train_logprob_sd": sd,
            "train_logprob_first": logprob[0] if logprob else None,
            "train_logprob_last": logprob[-1] if logprob else None,
            "w_var_mean": _mean_sd(curves["w_var"])[0]}


def online_metrics(config: ExperimentConfig, run: str, rows: list[dict[str, Any]]
                   ) -> dict[str, Any]:
    """An online run: its job, versions, staleness and the sources it produced and trained on.
    The staleness histogram (model responses trained on, by versions behind) and the drop
    counts are the trainer's own (``arms/RUN/summary.json``), the per-step means its
    metrics."""
    layout = Layout(config)
    summary = read_json(layout.online_summary(run)) if layout.online_summary(run).exists() \
        else {}
    trainer = layout.arm(run) / "summary.json"
    staleness = read_json(trainer).get("staleness", {}) if trainer.exists() else {}
    examples = {e.id: e for e in read_aligned(layout.online_data(run))}
    produced = {s: sum(e.source == s for e in examples.values()) for s in SOURCES}
    stale_mean = [float(row["staleness_mean"]) for row in rows
                  if row.get("staleness_mean") is not None]
    stale_max = [row["staleness_max"] for row in rows if row.get("staleness_max") is not None]
    last = rows[-1] if rows else {}
    return {"job": summary.get("job"), "versions": len(summary.get("versions", [])),
            "produced": produced,
            "trained": {s: sum(int(row.get(f"examples_{s}", 0)) for row in rows)
                        for s in SOURCES},
            "staleness": {str(k): n for k, n in staleness.get("histogram", {}).items()},
            "staleness_mean": _mean_sd(stale_mean)[0],
            "staleness_max": max(stale_max) if stale_max else None,
            **{key: staleness.get(key, last.get(key))
               for key in ("stale_dropped", "stale_requeued", "stale_trained")}}


def _steadiness(curves: dict[str, list[float]]) -> dict[str, float | None]:
    """Summary numbers of a run's curves: last loss, gradient-norm mean and spread, and the
    mean absolute step-to-step change of the loss (a jitter measure)."""
    loss, grad = curves["loss"], curves["grad_norm"]
    if not loss:
        return {"final_loss": None, "grad_norm_mean": None, "grad_norm_sd": None,
                "loss_jitter": None, "response_tokens": 0}
    mean, sd = _mean_sd(grad)
    jumps = [abs(b - a) for a, b in itertools.pairwise(loss)]
    return {"final_loss": loss[-1], "grad_norm_mean": mean, "grad_norm_sd": sd,
            "loss_jitter": sum(jumps) / len(jumps) if jumps else None,
            "response_tokens": int(sum(curves["response_tokens"]))}


def _accuracy(results: dict[str, Any]) -> dict[str, float]:
    """avg@n per held-out benchmark and on average."""
    found = {name: row["avg_at_n"] for name, row in results["benchmarks"].items()}
    if results.get(AVERAGE):
        found[AVERAGE] = results[AVERAGE]["avg_at_n"]
    return found


def _difference(a: dict[str, Any], b: dict[str, Any], config: ExperimentConfig
                ) -> dict[str, float]:
    """``b - a`` in average avg@n with its paired bootstrap 95% interval."""
    d = compare(a, b, resamples=config.resamples, seed=0)[AVERAGE]
    return {"diff": d.diff, "low": d.low, "high": d.high, "problems": d.problems}


def collect(config: ExperimentConfig) -> dict[str, Any]:
    """Every number of the report, from the stages' files in ``work_dir``."""
    layout = Layout(config)
    start_mean = behavior_mean(read_aligned(layout.drift_set()))
    evals = {START: read_json(layout.eval(START))}
    runs: dict[str, Any] = {}
    for arm, seed in config.runs():
        name = run_name(arm, seed)
        evals[name] = read_json(layout.eval(name))
        rows = _rows(layout.arm(name) / "metrics.jsonl")
        curves = _curves(rows)
        runs[name] = {"arm": arm.name, "data": arm.data, "loss": arm.loss, "seed": seed,
                      "mode": arm.mode, **_steadiness(curves), **training_gap(curves),
                      "online": online_metrics(config, name, rows) if arm.mode == "online"
                      else None, "curves": curves}
    base_arm = next(a for a in config.arms if a.name == config.baseline)
    baseline = run_name(base_arm, base_arm.seeds[0])
    for name in [START, *runs]:
        drift = drift_of(GapReport.model_validate(read_json(layout.drift(name))), start_mean)
        row = runs.setdefault(name, {"arm": START, "data": None, "loss": None, "seed": None,
                                     "mode": None})
        average = evals[name].get(AVERAGE) or {}
        row.update({"drift_kl": drift.kl, "drift_expert_logprob": drift.expert_logprob,
                    "accuracy": _accuracy(evals[name]), "no_answer": average.get("no_answer"),
                    "mean_tokens": average.get("mean_tokens")})
        if name != START:
            row["vs_start"] = _difference(evals[START], evals[name], config)
            row["vs_baseline"] = None if name == baseline else \
                _difference(evals[baseline], evals[name], config)
    seeds = {arm.name: _difference(evals[run_name(arm, arm.seeds[0])],
                                   evals[run_name(arm, arm.seeds[1])], config)
             for arm in config.arms if len(arm.seeds) > 1}
    timings = read_json(layout.timings()) if layout.timings().exists() else {}
    return {"name": config.name, "baseline": baseline, "step_seconds": timings,
            "data": {kind: _data_metrics(config, kind) for kind in DATA_KINDS},
            "runs": {START: runs.pop(START), **runs}, "seed_noise": seeds,
            "eval": {"n": config.eval.n, "benchmarks": config.heldout.names(),
                     "problems_per_benchmark": config.heldout.limit}}


def write_report(config: ExperimentConfig) -> Path:
    """Gather the metrics, write ``report.md``, the PNGs and the raw files; the report's path."""
    from mindgap.rewriter.experiment_plots import plot_curves, plot_online, plot_summary
    from mindgap.rewriter.experiment_tables import report_markdown

    target = Path(config.report_dir)
    target.mkdir(parents=True, exist_ok=True)
    metrics = collect(config)
    write_json(target / "metrics.json", metrics)
    (target / "config.yaml").write_text(
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    copy_rewrite_summary(config, target)
    plot_curves(metrics, target / "curves.png")
    plot_summary(metrics, target / "summary.png")
    plot_online(metrics, target / "online.png")
    report = target / "report.md"
    report.write_text(report_markdown(metrics, config), encoding="utf-8")
    return report
