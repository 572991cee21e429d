"""``report.md`` of ``mindgap experiment``: what ran, the tables, and a plain reading of them."""

from __future__ import annotations

from typing import Any

from mindgap.rewriter.experiment import START
from mindgap.rewriter.experiment_config import ExperimentConfig
from mindgap.schemas import SOURCES


def _num(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _points(d: dict[str, float] | None) -> str:
    """A difference in percentage points with its interval."""
    if d is None:
        return "(baseline)"
    return f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _first(limit: int | None, which: str = "the first") -> str:
    return "all" if limit is None else f"{which} {limit}"


def _setup(config: ExperimentConfig) -> list[str]:
    t = config.training
    return [
        f"# {config.name}", "",
        f"Start model: `{config.model or 'SmolLM2-135M-Instruct (packaged)'}`; engine "
        f"`{config.engine}`. Training problems: {_first(config.train.limit)} of "
        f"{', '.join(config.train.names())}, rewritten once (T = "
        f"{config.rewrite.temperature}, {config.rewrite.max_tokens} tokens, K_self = "
        f"{config.rewrite.k_self}, K_guided = {config.rewrite.k_guided}). Every arm trains "
        f"from the start model for the same settings: {t or 'the trainer defaults'}.",
        f"Held-out: {_first(config.heldout.limit, 'the next')} problems of "
        f"{', '.join(config.heldout.names())}, avg@{config.eval.n} at T = "
        f"{config.eval.temperature}, {config.eval.max_tokens} tokens. Drift: the start "
        f"model's own responses to {_first(config.drift.limit, 'the next')} prompts of "
        f"{', '.join(config.drift.names())} per benchmark, scored under each model.",
        *_online_setup(config), ""]


def _online_setup(config: ExperimentConfig) -> list[str]:
    """How the online arms ran (nothing when there are none)."""
    online = [arm.name for arm in config.arms if arm.mode == "online"]
    if not online:
        return []
    o = config.online
    bound = "no staleness bound" if o.max_staleness is None else \
        f"a response more than {o.max_staleness} versions stale dropped (its problem re-queued)"
    return [f"Online arms ({', '.join(online)}) have the training problems rewritten while "
            "they train instead, by one worker through the Redis queue at the newest policy "
            f"version: one published every {o.publish_every} steps, {bound}; the worker "
            f"rewrites {o.worker_batch_size} problems at a time, at most {o.max_ahead_steps} "
            "batches ahead of training."]


def _data_table(metrics: dict[str, Any]) -> list[str]:
    lines = ["## Training data under the start model", "",
             "| data | examples | self / guided / expert | mean log-prob | w mean | w variance "
             "| ESS fraction | w > C |", "|---|---|---|---|---|---|---|---|"]
    for kind, row in metrics["data"].items():
        s = row["sources"]
        lines.append(
            f"| {kind} | {row['examples']} | {s.get('self', 0)} / {s.get('guided', 0)} / "
            f"{s.get('expert', 0)} | {_num(row['mean_logprob'])} | {_num(row['ratio_mean'])} "
            f"| {_num(row['ratio_var'], 4)} | {_num(row['ratio_ess'])} "
            f"| {_num(row['ratio_clipped'])} |")
    return [*lines, "", "w = p/q per token: q is the recorded behavior probability of a "
            "model response and 1 for expert tokens, as the `is` loss sees them.", ""]


def _runs_table(metrics: dict[str, Any]) -> list[str]:
    n = metrics["eval"]["n"]
    benchmarks = metrics["eval"]["benchmarks"]
    head = ["run", "data", "loss", "mode", "tokens", "final loss", "grad norm mean ± sd",
            "loss jitter", "drift KL", "expert log-prob",
            *(f"{b} avg@{n}" for b in benchmarks), "average", "vs start",
            f"vs {metrics['baseline']}"]
    lines = ["## Runs", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in metrics["runs"].items():
        acc = row["accuracy"]
        grad = "–" if row.get("grad_norm_mean") is None else \
            f"{row['grad_norm_mean']:.2f} ± {row['grad_norm_sd']:.2f}"
        lines.append("| " + " | ".join([
            name, row["data"] or "–", row["loss"] or "–", row.get("mode") or "–",
            str(row["response_tokens"]) if "response_tokens" in row else "–",
            _num(row.get("final_loss")), grad,
            _num(row.get("loss_jitter")), _num(row["drift_kl"], 4),
            _num(row["drift_expert_logprob"]),
            *(f"{100 * acc.get(b, 0):.1f}" for b in benchmarks),
            f"{100 * acc['average']:.1f}",
            "–" if name == START else _points(row["vs_start"]),
            "–" if name == START else _points(row["vs_baseline"])]) + " |")
    return [*lines, "", "Accuracies in percent; differences in points with the paired "
            "bootstrap 95% interval over held-out problems. Tokens: response tokens trained "
            "on. Loss jitter: mean |loss change| between steps. Drift KL: per-token "
            "KL(start || model) on the start model's own responses (0 for the start model up "
            "to scoring noise); expert log-prob: mean token log-prob of the drift problems' "
            "expert solutions.", ""]


def _seed_table(metrics: dict[str, Any]) -> list[str]:
    if not metrics["seed_noise"]:
        return []
    lines = ["## Seed noise", "", "| arm | second seed - first seed, points [95%] |",
             "|---|---|"]
    lines += [f"| {arm} | {_points(d)} |" for arm, d in metrics["seed_noise"].items()]
    return [*lines, ""]


def _count(value: int | None) -> str:
    return "–" if value is None else str(value)


def _sources(counts: dict[str, int]) -> str:
    return " / ".join(str(counts.get(s, 0)) for s in SOURCES)


def _staleness(online: dict[str, Any]) -> str:
    """The staleness histogram ("0: 40, 1: 8"), with the trainer's per-batch mean (over
    steps) and max where it wrote them."""
    text = ", ".join(f"{k}: {n}" for k, n in online["staleness"].items()) or "–"
    if online["staleness_max"] is None:
        return text
    return f"{text} (trainer: mean {_num(online['staleness_mean'], 2)}, max " \
        f"{online['staleness_max']})"


def _online_row(name: str, row: dict[str, Any]) -> str:
    online = row.get("online")
    gap = "–" if row.get("train_logprob_mean") is None else \
        f"{row['train_logprob_mean']:.3f} ± {row['train_logprob_sd']:.3f}"
    cells = [name, row["mode"], row["data"], row["loss"], gap,
             f"{_num(row.get('train_logprob_first'))} → {_num(row.get('train_logprob_last'))}",
             _num(row.get("w_var_mean"), 4)]
    if online is None:
        cells += ["–", "–", "–", "–"]
    else:
        job = online["job"] or {}
        cells += [str(online["versions"]), _staleness(online),
                  " / ".join(_count(online.get(key)) for key in
                             ("stale_dropped", "stale_requeued", "stale_trained")),
                  f"{_sources(online['trained'])} ({_sources(online['produced'])}; job "
                  f"{job.get('status', '–')})"]
    return "| " + " | ".join(cells) + " |"


def _online_table(metrics: dict[str, Any]) -> list[str]:
    head = ["run", "mode", "data", "loss", "batch log-prob at training, mean ± sd",
            "first → last step", "w variance", "versions", "staleness (versions behind: "
            "responses)", "stale dropped / re-queued / trained", "self / guided / expert trained "
            "(produced; job)"]
    lines = ["## Offline and online", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    lines += [_online_row(name, row) for name, row in metrics["runs"].items() if name != START]
    return [*lines, "", "Batch log-prob at training: the mean token log-prob of each batch's "
            "responses under the weights being trained on it, before the step (-ce), over the "
            "steps: the policy gap where it matters, not under the start model. sd: its spread "
            "over steps (batch to batch), not an interval. w variance: of the `is` weights "
            "p/q, mean over steps. Online runs: versions published; staleness of the model "
            "responses trained on (the version current at their step less the one that "
            "sampled them); dropped / re-queued by the staleness bound, and trained on "
            "although stale (re-queued once already), the trainer's counts; the sources of the "
            "examples trained on, and of all the worker produced.", "",
            *_online_reading(metrics), "![offline and online](online.png)", ""]


def _online_reading(metrics: dict[str, Any]) -> list[str]:
    """Online runs against the offline runs of the same loss, and the noise to read them by."""
    runs = {n: r for n, r in metrics["runs"].items() if n != START}
    lines = []
    for name, row in runs.items():
        if row["mode"] != "online":
            continue
        offline = [n for n, r in runs.items() if r["mode"] == "offline"
                   and r["loss"] == row["loss"] and r["data"] == "rewritten"]
        versus = row.get("vs_baseline")
        lines.append(
            f"- {name}: batch log-prob at training {_num(row.get('train_logprob_mean'))} vs "
            + (", ".join(f"{n} {_num(runs[n].get('train_logprob_mean'))}" for n in offline)
               or "no offline run of its loss on rewritten data")
            + ("; it is the baseline." if versus is None else
               f"; held-out vs {metrics['baseline']} {_points(versus)} points (paired 95% "
               "interval)."))
    if not lines:
        return []
    seeds = metrics["seed_noise"]
    noise = ("Seed noise, for scale: " + ", ".join(f"{arm} {_points(d)}" for arm, d in
                                                   seeds.items())
             + " points between two seeds of one arm." if seeds else
             "Seed noise is not measured (no arm has two seeds).")
    return ["Reading:", "", *lines, f"- {noise} A difference within these intervals is not "
            "evidence of an effect.", ""]


def reading(metrics: dict[str, Any]) -> list[str]:
    """Plain sentences that follow from the tables (no judgement beyond the numbers)."""
    data, runs = metrics["data"], metrics["runs"]
    closer = data["rewritten"]["mean_logprob"] > data["expert"]["mean_logprob"]
    steadier = [n for n, r in runs.items() if n != START and r["data"] == "rewritten"]
    beyond = [n for n, r in runs.items() if n != START
              and (r["vs_start"]["low"] > 0 or r["vs_start"]["high"] < 0)]
    lines = ["## Reading", "",
             f"- Policy gap: the rewritten data's mean token log-prob under the start model is "
             f"{_num(data['rewritten']['mean_logprob'])} vs {_num(data['expert']['mean_logprob'])} "
             f"for the expert data ({'closer to' if closer else 'no closer to'} the model); "
             f"weight variance {_num(data['rewritten']['ratio_var'], 4)} vs "
             f"{_num(data['expert']['ratio_var'], 4)}.",
             "- Drift (KL from the start model): " + ", ".join(
                 f"{n} {_num(r['drift_kl'], 4)}" for n, r in runs.items() if n != START) + ".",
             "- Steadiness (gradient norm mean, rewritten-data runs): " + ", ".join(
                 f"{n} {_num(runs[n].get('grad_norm_mean'), 2)}" for n in steadier) + ".",
             "- Held-out accuracy: " + (
                 "no run differs from the start model beyond its 95% interval."
                 if not beyond else "beyond the 95% interval from the start model: "
                 + ", ".join(beyond) + ".") + " " + _versus_baseline(metrics),
             "- Held-out responses (mean tokens, share with no stated answer): " + ", ".join(
                 f"{n} {_num(r.get('mean_tokens'), 0)} / {100 * (r.get('no_answer') or 0):.0f}%"
                 for n, r in runs.items()) + "."]
    return [*lines, ""]


def _versus_baseline(metrics: dict[str, Any]) -> str:
    """Which runs differ from the baseline run beyond their 95% interval."""
    differ = [n for n, r in metrics["runs"].items() if r.get("vs_baseline")
              and (r["vs_baseline"]["low"] > 0 or r["vs_baseline"]["high"] < 0)]
    if not differ:
        return f"No run differs from {metrics['baseline']} beyond its interval."
    return f"Beyond the interval from {metrics['baseline']}: {', '.join(differ)}."


def _timings(metrics: dict[str, Any]) -> list[str]:
    """The wall time of each kind of step (rewrite, train, eval, ...) and in all."""
    kinds: dict[str, float] = {}
    for label, seconds in metrics.get("step_seconds", {}).items():
        kind = label.split("-")[0]
        kinds[kind] = kinds.get(kind, 0.0) + seconds
    if not kinds:
        return []
    parts = ", ".join(f"{kind} {seconds / 60:.1f}" for kind, seconds in kinds.items())
    return ["## Time", "", f"Wall minutes of the steps: {parts}; in all "
            f"{sum(kinds.values()) / 60:.1f} (`work_dir/timings.json`, per step).", ""]


def report_markdown(metrics: dict[str, Any], config: ExperimentConfig) -> str:
    """The whole report."""
    lines = [*_setup(config), *_data_table(metrics), *_runs_table(metrics),
             *_seed_table(metrics), *reading(metrics), *_online_table(metrics),
             *_timings(metrics),
             "![training curves](curves.png)", "", "![summary](summary.png)", "",
             "Raw numbers: `metrics.json`; the config: `config.yaml`; the rewriting's summary: "
             "`rewritten.summary.json`.", ""]
    return "\n".join(lines)
