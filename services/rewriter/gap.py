"""The policy gap made visible: how likely the model finds its training data (DESIGN.md).

Under one model, every aligned example is scored twice: the kept response
(``score(prompt, response_token_ids)``) and the original expert solution
(``score(prompt, tokenize(expert_solution) + [eos])``). The report gives, per source and
for the expert originals, the mean per-token log-prob, the perplexity, and the token-level
importance ratios ``w_t = p(y_t) / q(y_t)`` as the ``is`` loss sees them: ``q`` is the
recorded behavior probability for model responses and 1 for expert tokens, so for expert
text ``w_t = p(y_t)``. ``p`` is always taken at temperature 1, as in training.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from mindgap.jsonl import read_models
from mindgap.rewriter.engines import Engine, make_engine
from mindgap.schemas import SOURCES, AlignedExample

GROUPS = (*SOURCES, "all", "expert_solutions")
"""Report groups: kept responses by source, all kept responses, and the expert originals."""
_LABELS = {**{source: source for source in SOURCES}, "all": "all kept",
           "expert_solutions": "expert originals"}
_COLORS = dict(zip(SOURCES, ("tab:green", "tab:orange", "tab:gray"), strict=True))

_Key = tuple[str, tuple[int, ...], float]


class GapStats(BaseModel):
    """Token-level statistics of one group of sequences (``None`` where the group is empty)."""

    count: int = Field(description="Sequences (responses) in the group.")
    tokens: int = Field(description="Tokens over all sequences.")
    mean_logprob: float | None = Field(description="Mean per-token log-prob under the model.")
    perplexity: float | None = Field(description="exp(-mean_logprob).")
    ratio_mean: float | None = Field(description="Mean of w_t = p(y_t) / q(y_t).")
    ratio_var: float | None = Field(description="Population variance of w_t.")
    ratio_max: float | None = Field(description="Largest w_t.")
    ratio_ess: float | None = Field(description="ESS fraction (sum w)^2 / (n sum w^2), in (0, 1].")
    ratio_clipped: float | None = Field(description="Fraction of tokens with w_t > clip.")
    behavior_abs_diff: float | None = Field(
        description="Model responses only: mean |score - behavior logprob| per token. About 0 "
        "for self responses when the model is unchanged; for guided ones q was recorded under "
        "the guided prompt, so this is the hint's effect on the model; top-p < 1 also adds "
        "to it (q was renormalised over the nucleus). Scored at the sampling temperature.")


class ExampleGap(BaseModel):
    """One example's scores, summarised."""

    id: str
    source: str
    tokens: int
    mean_logprob: float | None = Field(description="Kept response, mean per-token log-prob.")
    expert_tokens: int
    expert_mean_logprob: float | None = Field(description="Expert original, same measure.")
    behavior_abs_diff: float | None = None


class GapReport(BaseModel):
    """The policy gap of an aligned data set under one model."""

    model: str
    clip: float = Field(description="The ratio truncation C used for ``ratio_clipped``.")
    groups: dict[str, GapStats] = Field(description="Keyed by ``GROUPS``.")
    examples: list[ExampleGap]


class _Tokens:
    """Per-token log-probs, ratios and behavior differences gathered for one group."""

    def __init__(self) -> None:
        self.count = 0
        self.logprobs: list[float] = []
        self.ratios: list[float] = []
        self.diffs: list[float] = []

    def add(self, logprobs: Sequence[float], behavior: Sequence[float] | None,
            diffs: Sequence[float] | None = None) -> None:
        self.count += 1
        self.logprobs.extend(logprobs)
        if behavior is None:
            self.ratios.extend(math.exp(lp) for lp in logprobs)
        else:
            self.ratios.extend(math.exp(lp - q) for lp, q in zip(logprobs, behavior, strict=True))
        if diffs is not None:
            self.diffs.extend(diffs)

    def stats(self, clip: float) -> GapStats:
        n = len(self.logprobs)
        if n == 0:
            return GapStats(count=self.count, tokens=0, mean_logprob=None, perplexity=None,
                            ratio_mean=None, ratio_var=None, ratio_max=None, ratio_ess=None,
                            ratio_clipped=None, behavior_abs_diff=None)
        mean = math.fsum(self.logprobs) / n
        w = self.ratios
        w_sum = math.fsum(w)
        w_sq = math.fsum(x * x for x in w)
        w_mean = w_sum / n
        return GapStats(
            count=self.count, tokens=n, mean_logprob=mean, perplexity=_exp(-mean),
            ratio_mean=w_mean, ratio_var=max(0.0, w_sq / n - w_mean * w_mean), ratio_max=max(w),
            ratio_ess=(w_sum * w_sum) / (n * w_sq) if w_sq > 0 else None,
            ratio_clipped=sum(x > clip for x in w) / n,
            behavior_abs_diff=math.fsum(self.diffs) / len(self.diffs) if self.diffs else None)


def _exp(x: float) -> float:
    """exp that saturates to inf instead of raising."""
    return math.exp(x) if x < 700 else math.inf


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _batches(engine: Engine, keys: list[_Key], batch_size: int,
             max_batch_tokens: int) -> list[list[_Key]]:
    """``keys`` in batches of at most ``batch_size`` sequences and ``max_batch_tokens`` padded
    tokens, one temperature each, similar lengths together."""
    prompt_tokens = {prompt: len(engine.tokenize(prompt)) for prompt in {k[0] for k in keys}}

    def length(key: _Key) -> int:
        return prompt_tokens[key[0]] + len(key[1])

    batches: list[list[_Key]] = []
    for key in sorted(keys, key=lambda k: (k[2], length(k))):
        last = batches[-1] if batches else None
        if (last and len(last) < batch_size and last[0][2] == key[2]
                and length(key) * (len(last) + 1) <= max_batch_tokens):
            last.append(key)
        else:
            batches.append([key])
    return batches


def _score_all(engine: Engine, keys: list[_Key], batch_size: int, max_batch_tokens: int,
               progress: bool) -> dict[_Key, list[float]]:
    """Every key's scores, from ``engine.score_batch`` over :func:`_batches`."""
    from tqdm import tqdm

    out: dict[_Key, list[float]] = {}
    with tqdm(total=len(keys), desc="score", unit="seq", file=sys.stderr,
              disable=not progress, dynamic_ncols=True) as bar:
        for batch in _batches(engine, keys, batch_size, max_batch_tokens):
            out.update(zip(batch, engine.score_batch(batch), strict=True))
            bar.update(len(batch))
    return out


def measure_gap(engine: Engine, examples: Sequence[AlignedExample], batch_size: int = 8,
                clip: float = 5.0, max_batch_tokens: int = 4096,
                progress: bool = False) -> GapReport:
    """Score every kept response and every expert original under ``engine``'s model.

    ``batch_size`` sequences (at most ``max_batch_tokens`` padded tokens) go to each
    ``engine.score_batch`` call (one forward pass with the transformers engine).
    ``progress`` shows a tqdm bar on stderr while scoring.
    """
    eos = [engine.eos_token_id] if engine.eos_token_id is not None else []
    expert_ids = [tuple(engine.tokenize(e.expert_solution) + eos) for e in examples]
    keys: dict[_Key, None] = {}
    for example, original in zip(examples, expert_ids, strict=True):
        behavior = example.behavior
        if behavior is not None and len(behavior.logprobs) != len(example.response_token_ids):
            raise ValueError(f"example {example.id!r}: {len(behavior.logprobs)} behavior "
                             f"logprobs for {len(example.response_token_ids)} tokens")
        keys[(example.prompt, tuple(example.response_token_ids), 1.0)] = None
        keys[(example.prompt, original, 1.0)] = None
        if behavior is not None and behavior.sampling.temperature not in (0.0, 1.0):
            keys[(example.prompt, tuple(example.response_token_ids),
                  behavior.sampling.temperature)] = None
    scores = _score_all(engine, list(keys), batch_size, max_batch_tokens, progress)

    groups = {name: _Tokens() for name in GROUPS}
    rows: list[ExampleGap] = []
    for example, original in zip(examples, expert_ids, strict=True):
        ids = tuple(example.response_token_ids)
        kept = scores[(example.prompt, ids, 1.0)]
        expert = scores[(example.prompt, original, 1.0)]
        behavior = example.behavior
        q = behavior.logprobs if behavior is not None else None
        diffs = None
        if behavior is not None:
            # Compare with q at the temperature it was sampled at (greedy: q is raw, T = 1).
            t = behavior.sampling.temperature
            same = scores[(example.prompt, ids, t if t not in (0.0, 1.0) else 1.0)]
            diffs = [abs(s - b) for s, b in zip(same, behavior.logprobs, strict=True)]
        groups[example.source].add(kept, q, diffs)
        groups["all"].add(kept, q, diffs)
        groups["expert_solutions"].add(expert, None)
        rows.append(ExampleGap(
            id=example.id, source=example.source, tokens=len(kept), mean_logprob=_mean(kept),
            expert_tokens=len(expert), expert_mean_logprob=_mean(expert),
            behavior_abs_diff=_mean(diffs) if diffs is not None else None))
    return GapReport(model=engine.model_name, clip=clip,
                     groups={name: groups[name].stats(clip) for name in GROUPS}, examples=rows)


def _cell(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_gap(report: GapReport) -> str:
    """A plain-text table of the report's groups."""
    header = (f"{'group':<17}{'n':>6}{'tokens':>9}{'mean logp':>11}{'ppl':>10}"
              f"{'w mean':>9}{'w var':>10}{'w max':>9}{'ESS':>7}{f'w>{report.clip:g}':>7}"
              f"{'|p-q|':>9}")
    lines = [f"policy gap under {report.model}  (w = p/q; q = 1 for expert tokens)", header,
             "-" * len(header)]
    for name in GROUPS:
        s = report.groups[name]
        lines.append(
            f"{_LABELS[name]:<17}{s.count:>6}{s.tokens:>9}{_cell(s.mean_logprob, '.4f'):>11}"
            f"{_cell(s.perplexity, '.3g'):>10}{_cell(s.ratio_mean, '.4f'):>9}"
            f"{_cell(s.ratio_var, '.3g'):>10}{_cell(s.ratio_max, '.3g'):>9}"
            f"{_cell(s.ratio_ess, '.3f'):>7}{_cell(s.ratio_clipped, '.3f'):>7}"
            f"{_cell(s.behavior_abs_diff, '.2e'):>9}")
    return "\n".join(lines)


def gap_sentence(report: GapReport) -> str:
    """What happened, in one plain sentence: the sources kept and the gap they closed.

    The gap is paired: per kept model response, its mean token log-prob minus that of the
    expert solution of the same problem, averaged over those responses.
    """
    counts = Counter(e.source for e in report.examples)
    head = (f"kept {counts['self']} own solutions, {counts['guided']} guided, "
            f"{counts['expert']} expert")
    diffs = [e.mean_logprob - e.expert_mean_logprob for e in report.examples
             if e.source != "expert" and e.mean_logprob is not None
             and e.expert_mean_logprob is not None]
    if not diffs:
        return f"{head}; no model response was kept, so the data stays the expert text"
    diff = math.fsum(diffs) / len(diffs)
    how = "likelier" if diff >= 0 else "less likely"
    return (f"{head}; the kept responses are {abs(diff):.2f} nats/token {how} under the "
            "model than the expert text of the same problems")


def plot_gap(report: GapReport, path: str | Path) -> Path:
    """Write a PNG: histograms of per-response mean token log-prob, kept vs expert originals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: list[tuple[str, list[float], str]] = []
    for source in SOURCES:
        values = [e.mean_logprob for e in report.examples
                  if e.source == source and e.mean_logprob is not None]
        if values:
            series.append((f"kept: {source}", values, _COLORS[source]))
    originals = [e.expert_mean_logprob for e in report.examples
                 if e.expert_mean_logprob is not None]
    if originals:
        series.append(("expert originals (all examples)", originals, "tab:blue"))
    everything = [v for _, values, _ in series for v in values]
    fig, ax = plt.subplots(figsize=(9, 6.5), dpi=110)
    if everything:
        span = max(max(everything) - min(everything), 0.05)
        low = min(everything) - 0.03 * span
        bins = [low + 1.06 * span * i / 30 for i in range(31)]
        for label, values, color in series:
            mean = math.fsum(values) / len(values)
            hatch = "//" if label.startswith("expert originals") else None
            ax.hist(values, bins=bins, alpha=0.45, color=color, hatch=hatch, edgecolor=color,
                    label=f"{label}  (n={len(values)}, mean {mean:.3f})")
            ax.axvline(mean, color=color, linestyle="--", linewidth=2)
    else:
        ax.text(0.5, 0.5, "no scored tokens", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"Policy gap under {report.model}: how likely the model finds its training data")
    ax.set_xlabel("per-response mean token log-prob under the model (higher = closer to policy)")
    ax.set_ylabel("responses")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=9,
              title="dashed lines: mean over responses of each group")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def gap_command(model: str | None, data: str | Path, plot: str | Path | None = None,
                out_json: str | Path | None = None, batch_size: int = 8,
                device: str | None = None, progress: bool = True,
                echo: Callable[[str], object] = print) -> GapReport:
    """``mindgap gap``: score ``data`` under ``model``, print the table, write PNG/JSON if asked.

    Raises :class:`mindgap.jsonl.JsonlError` (a ``ValueError``) naming the line of ``data``
    that is not an aligned example.
    """
    examples = read_models(data, AlignedExample)
    engine = make_engine("transformers", model, device=device)
    report = measure_gap(engine, examples, batch_size=batch_size, progress=progress)
    echo(format_gap(report))
    echo(gap_sentence(report))
    if plot is not None:
        echo(f"plot: {plot_gap(report, plot)}")
    if out_json is not None:
        target = Path(out_json)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        echo(f"json: {target}")
    return report

