"""The PNGs of ``mindgap experiment``'s report (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mindgap.rewriter.experiment import START

_PANELS = (("loss", "training loss (the arm's own loss)"), ("ce", "cross-entropy -log p"),
           ("grad_norm", "gradient norm (before clipping)"), ("w_var", "token weight variance"))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(metrics: dict[str, Any], path: Path) -> Path:
    """Loss, cross-entropy, gradient norm and weight variance per step, one line per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), dpi=100)
    runs = {name: row for name, row in metrics["runs"].items() if name != START}
    for ax, (key, title) in zip(axes.flat, _PANELS, strict=True):
        for name, row in runs.items():
            curves = row["curves"]
            style = "--" if row["data"] == "expert" else "-"
            ax.plot(curves["step"], curves[key], style, marker=".", label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"{metrics['name']}: training curves (dashed: expert data)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _bars(ax: Any, labels: list[str], values: list[float], title: str,
          errors: list[tuple[float, float]] | None = None) -> None:
    """One bar chart panel; ``errors`` are (low, high) absolute interval ends."""
    positions = list(range(len(labels)))
    colors = ["tab:gray" if label == START or "expert" in label else "tab:green"
              for label in labels]
    ax.bar(positions, [0 if math.isnan(v) else v for v in values], color=colors)
    if errors is not None:
        low = [max(v - lo, 0) for v, (lo, _) in zip(values, errors, strict=True)]
        high = [max(hi - v, 0) for v, (_, hi) in zip(values, errors, strict=True)]
        ax.errorbar(positions, values, yerr=[low, high], fmt="none", ecolor="black", capsize=4)
    ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)


def plot_summary(metrics: dict[str, Any], path: Path) -> Path:
    """Four panels: training data's mean log-prob and weight variance under the start model,
    each run's drift (KL from the start model) and its held-out accuracy change from the
    start model with the 95% interval."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.8), dpi=100)
    kinds = list(metrics["data"])
    _bars(axes[0], kinds, [metrics["data"][k]["mean_logprob"] for k in kinds],
          "training data: mean token log-prob\nunder the start model (higher: closer)")
    _bars(axes[1], kinds, [metrics["data"][k]["ratio_var"] for k in kinds],
          "training data: variance of token\nweights w = p/q (start model)")
    names = list(metrics["runs"])
    _bars(axes[2], names, [metrics["runs"][n]["drift_kl"] for n in names],
          "drift: KL(start || model), nats/token\non the start model's own responses")
    trained = [n for n in names if n != START]
    deltas = [100 * metrics["runs"][n]["vs_start"]["diff"] for n in trained]
    intervals = [(100 * metrics["runs"][n]["vs_start"]["low"],
                  100 * metrics["runs"][n]["vs_start"]["high"]) for n in trained]
    _bars(axes[3], trained, deltas, f"held-out avg@{metrics['eval']['n']} change from the "
          "start\nmodel, points (95% paired interval)", intervals)
    axes[3].axhline(0, color="black", linewidth=0.8)
    fig.suptitle(metrics["name"])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_online(metrics: dict[str, Any], path: Path) -> Path:
    """Each batch's mean token log-prob under the weights trained on it (-ce), per step and
    run: online runs solid with markers, offline runs dashed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
    for name, row in metrics["runs"].items():
        if name == START:
            continue
        online = row["mode"] == "online"
        ax.plot(row["curves"]["step"], [-ce for ce in row["curves"]["ce"]],
                "-" if online else "--", marker="o" if online else None,
                linewidth=2.0 if online else 1.0, label=f"{name} ({row['mode']})")
    ax.set_xlabel("step")
    ax.set_ylabel("mean token log-prob of the batch (nats)")
    ax.set_title(f"{metrics['name']}: policy gap at training time\n(each batch under the "
                 "weights trained on it, before the step; higher: closer)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
