"""Token-level training losses (DESIGN.md, "Training loss") and their statistics.

Per response token ``t`` with model probability ``p = p(y_t)`` and, when recorded, the
behavior probability ``q = q(y_t)`` the token was sampled with:

- ``sft``: ``-log p``                                   (weight 1)
- ``dft``: ``-sg(p) * log p``                           (weight ``p``; Dynamic Fine-Tuning)
- ``is``:  ``-min(sg(p / q), C) * log p``               (weight ``min(p / q, C)``); a token
  with no recorded ``q`` (an expert fallback) uses ``q = 1``, i.e. the DFT weight ``p``.

``sg`` is stop-gradient: the weight is a constant for backpropagation. Every loss is a sum
over response tokens divided by ``num_tokens``, the count of response tokens of the whole
optimizer step (all micro-batches, all ranks: OpenRLHF-style global normalisation), so that
summing the gradients of micro-batches and ranks gives exactly the gradient of the global
token mean, whatever the split.

Everything here is a pure function of tensors; nothing reads a model or the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import get_args

import torch

from mindgap.schemas import SOURCES
from mindgap.trainer.config import LossKind

_GROUPS = ("all", *SOURCES)
_SUM_FIELDS = ("tokens", "ce_sum", "loss_sum", "w_sum", "w2_sum")


def response_logprobs(logits: torch.Tensor, targets: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """``log p(targets)`` at every position, in float32; 0 where ``mask`` is False.

    ``logits`` is ``(B, L, V)`` and already aligned with ``targets`` ``(B, L)`` (position
    ``i`` predicts ``targets[:, i]``; see ``mindgap.trainer.collate``). Only masked positions go
    through the float32 log-softmax, so the memory cost is ``tokens * V``, not ``B * L * V``.
    """
    mask = mask.bool()
    out = torch.zeros(targets.shape, dtype=torch.float32, device=logits.device)
    if not bool(mask.any()):
        # Keep the graph connected (a zero loss still backpropagates: FSDP needs every rank
        # to run the same backward passes).
        return out + 0.0 * logits.sum().float()
    selected = logits[mask].float()  # (N, V)
    picked = selected.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
    logp = picked - torch.logsumexp(selected, dim=-1)
    return out.masked_scatter(mask, logp)


def token_weights(logp: torch.Tensor, kind: LossKind, *,
                  behavior_logprobs: torch.Tensor | None = None,
                  has_behavior: torch.Tensor | None = None,
                  clip: float) -> torch.Tensor:
    """The per-token weight ``w`` of ``-w * log p`` for ``kind``; detached (stop-gradient).

    ``is``: ``min(p / q, clip)`` computed in log space where ``has_behavior`` is True, ``p``
    elsewhere (``q = 1``). Without ``behavior_logprobs`` every token counts as unrecorded.
    """
    logp = logp.detach().float()
    if kind == "sft":
        return torch.ones_like(logp)
    if kind == "dft":
        return logp.exp()
    if kind != "is":
        raise ValueError(f"unknown loss {kind!r}: expected one of {get_args(LossKind)}")
    if not clip > 0:
        raise ValueError(f"the ratio cap C must be positive, got {clip}")
    if behavior_logprobs is None:
        return logp.exp()
    q = behavior_logprobs.detach().float().to(logp.device)
    has = (torch.ones_like(logp, dtype=torch.bool) if has_behavior is None
           else has_behavior.bool().to(logp.device))
    q = torch.where(has, q, torch.zeros_like(q))  # q = 1 for unrecorded tokens
    log_ratio = torch.clamp(logp - q, max=math.log(clip))
    return log_ratio.exp()


@dataclass
class LossStats:
    """Mergeable token statistics of a loss: sums (and maxima) per group.

    ``sums`` is ``(4, 5)``: rows ``all, self, guided, expert``; columns ``tokens, ce_sum,
    loss_sum, w_sum, w2_sum`` (``loss_sum`` is the sum of ``w * -log p``, not yet divided).
    ``maxes`` is ``(4,)``, the largest weight per group (``-inf`` for an empty group).
    Add stats of micro-batches with ``+``; across ranks, all-reduce ``sums`` with SUM and
    ``maxes`` with MAX (``mindgap.trainer.loop`` does).
    """

    sums: torch.Tensor
    maxes: torch.Tensor

    @classmethod
    def zeros(cls, device: torch.device | str = "cpu") -> LossStats:
        return cls(torch.zeros(len(_GROUPS), len(_SUM_FIELDS), dtype=torch.float64,
                               device=device),
                   torch.full((len(_GROUPS),), -math.inf, dtype=torch.float64, device=device))

    def __add__(self, other: LossStats) -> LossStats:
        return LossStats(self.sums + other.sums.to(self.sums.device),
                         torch.maximum(self.maxes, other.maxes.to(self.maxes.device)))

    def summary(self) -> dict[str, float]:
        """Plain numbers: ``loss`` and ``ce`` (token means), the weights' ``w_mean``, ``w_max``,
        ``w_var``, ``ess_tokens`` = ``(sum w)^2 / sum w^2`` (the effective sample size, in tokens)
        and ``ess_frac`` = ``ess_tokens / tokens`` (a fraction, 0..1); the
        same per source with prefixes ``self/``, ``guided/``, ``expert/`` (groups with no token
        are left out)."""
        sums = self.sums.detach().cpu().tolist()
        maxes = self.maxes.detach().cpu().tolist()
        out: dict[str, float] = {}
        for i, group in enumerate(_GROUPS):
            n, ce, loss, w, w2 = sums[i]
            if n <= 0 and group != "all":
                continue
            prefix = "" if group == "all" else f"{group}/"
            out[f"{prefix}tokens"] = n
            if n <= 0:
                continue
            mean = w / n
            ess = (w * w / w2) if w2 > 0 else 0.0
            out.update({
                f"{prefix}loss": loss / n,
                f"{prefix}ce": ce / n,
                f"{prefix}w_mean": mean,
                f"{prefix}w_max": maxes[i],
                f"{prefix}w_var": max(w2 / n - mean * mean, 0.0),
                f"{prefix}ess_tokens": ess,
                f"{prefix}ess_frac": ess / n,
            })
        return out


def _stats(logp: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor,
           source_ids: torch.Tensor | None) -> LossStats:
    logp = logp.detach().double()
    w = weights.detach().double()
    m = mask.bool()
    stats = LossStats.zeros(logp.device)
    groups = [m]
    for s in range(len(SOURCES)):
        if source_ids is None:
            groups.append(torch.zeros_like(m))
            continue
        sid = source_ids.to(m.device)
        if sid.dim() == 1:  # one source per row
            sid = sid.unsqueeze(-1).expand_as(m)
        groups.append(m & (sid == s))
    for i, g in enumerate(groups):
        gw = w[g]
        gl = logp[g]
        stats.sums[i] = torch.stack([g.sum().double(), -gl.sum(), (-gw * gl).sum(), gw.sum(),
                                     (gw * gw).sum()])
        if gw.numel():
            stats.maxes[i] = gw.max()
    return stats


def token_loss(logp: torch.Tensor, mask: torch.Tensor, kind: LossKind, num_tokens: float, *,
               behavior_logprobs: torch.Tensor | None = None,
               has_behavior: torch.Tensor | None = None,
               clip: float,
               source_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, LossStats]:
    """The loss ``sum_t mask_t * w_t * -log p_t / num_tokens`` and its statistics.

    - ``logp``: ``(B, L)`` token log-probabilities ``log p(y_t)`` (with gradient).
    - ``mask``: ``(B, L)``, True on response tokens (the only ones that count).
    - ``num_tokens``: the global count of response tokens of the optimizer step (> 0).
    - ``behavior_logprobs`` / ``has_behavior``: ``(B, L)`` recorded ``log q`` and whether it
      was recorded (``is`` only; expert tokens have ``has_behavior`` False).
    - ``clip``: the cap ``C`` on ``p / q``.
    - ``source_ids``: ``(B,)`` or ``(B, L)`` indices into ``mindgap.schemas.SOURCES``, for
      per-source stats.

    Plain cross-entropy is always part of the stats, whatever ``kind``.
    """
    if num_tokens <= 0:
        raise ValueError("num_tokens must be positive")
    mask_f = mask.to(logp.dtype)
    w = token_weights(logp, kind, behavior_logprobs=behavior_logprobs,
                      has_behavior=has_behavior, clip=clip)
    loss = (-(w * logp) * mask_f).sum() / num_tokens
    return loss, _stats(logp, w, mask, source_ids)


def loss_from_logits(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                     kind: LossKind, num_tokens: float, **kwargs: object
                     ) -> tuple[torch.Tensor, LossStats]:
    """``token_loss`` on ``response_logprobs(logits, targets, mask)``."""
    logp = response_logprobs(logits, targets, mask)
    return token_loss(logp, mask, kind, num_tokens, **kwargs)  # type: ignore[arg-type]
