"""Drift from the start model: a forgetting proxy for fine-tuned models (``mindgap experiment``).

The start model answers held-out prompts once (T = 1, top-p 1, so each token's recorded
log-prob is the model's own ``log q``). A trained model scores the same tokens (``log p``);
with ``r = p / q`` per token, the mean of ``(r - 1) - log r`` is an estimate of the per-token
KL(start || trained) on text the start model would write (Schulman's "k3": unbiased, never
negative, less noisy than the mean of ``-log r``), and 0 for the start model itself.
The held-out problems' expert solutions are scored too: how much likelier the trained model
finds expert text it never saw.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field

from mindgap.rewriter.engines import Engine
from mindgap.rewriter.gap import GapReport
from mindgap.rewriter.prompts import PromptTemplates
from mindgap.schemas import (
    AlignedExample,
    AttemptCounts,
    Behavior,
    Problem,
    RewriteOptions,
    SamplingParams,
    Timings,
)

DRIFT_SAMPLING = {"temperature": 1.0, "top_p": 1.0}
"""The start model itself: its recorded log-probs are the ones scoring gives at T = 1."""


def sample_reference(engine: Engine, problems: list[Problem], max_tokens: int, seed: int = 0,
                     templates: PromptTemplates | None = None) -> list[AlignedExample]:
    """One response of ``engine``'s model to each problem's plain prompt (the training
    prompt), as aligned examples of source ``self`` whose behavior is the recorded log-probs;
    nothing is verified: right or wrong, it is what the model says."""
    templates = templates or PromptTemplates()
    prompts = [engine.render_chat(templates.plain_prompt(p.question)) for p in problems]
    options = RewriteOptions(**DRIFT_SAMPLING, max_tokens=max_tokens, seed=seed)
    samples = engine.generate(prompts, 1, options.temperature, options.top_p, max_tokens,
                              seed=seed)
    examples = []
    for problem, prompt, (sample, *_) in zip(problems, prompts, samples, strict=True):
        ids, logprobs = list(sample.token_ids), list(sample.logprobs)  # as the aligner keeps them
        if len(logprobs) != len(ids):
            raise ValueError(f"{problem.id}: {len(ids)} tokens but {len(logprobs)} log-probs")
        examples.append(AlignedExample(
            id=f"{problem.id}:drift", problem_id=problem.id, prompt=prompt,
            response=sample.text, response_token_ids=ids, source="self",
            reference_answer=problem.answer or "", expert_solution=problem.solution,
            behavior=Behavior(logprobs=logprobs, prompt_kind="plain", model=engine.model_name,
                              sampling=SamplingParams.of(options)),
            attempts=AttemptCounts(), timings=Timings()))
    return examples


class Drift(BaseModel):
    """How far one model is from the start model on the drift set."""

    model: str
    kl: float = Field(description="Per-token KL(start || model) estimate: mean of (r - 1) - "
                      "log r, r = p/q, over the start model's own drift responses "
                      "(nats/token).")
    own_logprob: float = Field(description="Mean per-token log-prob of those responses under "
                               "the model.")
    expert_logprob: float | None = Field(description="Mean per-token log-prob of the drift "
                                         "problems' expert solutions under the model.")
    tokens: int


def behavior_mean(examples: list[AlignedExample]) -> float:
    """The start model's own mean per-token log-prob of its drift responses."""
    values = [lp for e in examples if e.behavior is not None for lp in e.behavior.logprobs]
    if not values:
        raise ValueError("the drift set has no recorded log-probs")
    return math.fsum(values) / len(values)


def drift_of(report: GapReport, start_mean: float) -> Drift:
    """The :class:`Drift` of the model ``report`` scored the drift set under."""
    own = report.groups["all"]
    if own.mean_logprob is None or own.ratio_mean is None:
        raise ValueError("the drift report scored no tokens")
    mean_log_ratio = own.mean_logprob - start_mean  # mean of log r over the same tokens
    return Drift(model=report.model, kl=own.ratio_mean - 1 - mean_log_ratio,
                 own_logprob=own.mean_logprob,
                 expert_logprob=report.groups["expert_solutions"].mean_logprob,
                 tokens=own.tokens)
