"""From aligned examples to padded tensors, micro-batches by a token budget.

Encoding of one example (``encode_example``):

- ``prompt`` is already chat-templated: it is tokenised with ``add_special_tokens=False``
  (no second BOS).
- ``response_token_ids`` are appended as stored: responses are never re-tokenised, so the
  tokens trained on are exactly the tokens sampled (and the behavior log-probs stay aligned).
- **Truncation rule** (``max_length`` counts prompt plus response tokens): the prompt is kept
  whole and the response's tail is cut to fit (its first tokens and their behavior log-probs
  are kept: a prefix of a sampled sequence is still a sample). An example whose prompt leaves
  room for no response token is dropped (``reason="prompt_too_long"``). So is an example
  with no response token, an empty prompt, or behavior log-probs that do not match its
  tokens one to one (``reason="empty_response"``, ``"empty_prompt"``,
  ``"behavior_mismatch"``). Dropped examples are counted in the step's metrics.

Tensors of a micro-batch (``collate``), all ``(B, L)`` with right padding:

- ``input_ids``, ``attention_mask``;
- ``targets``: the token each position predicts (``input_ids`` shifted left by one), so
  ``logits[:, i]`` is scored against ``targets[:, i]`` without shifting later;
- ``loss_mask``: True where the target is a response token (prompt and padding: False);
- ``behavior_logprobs`` / ``has_behavior``: the recorded ``log q`` of each target response
  token, ``0`` / False for expert responses, prompt and padding;
- ``source_ids``: ``(B,)`` index of each row's source in ``mindgap.schemas.SOURCES``.

``micro_batches`` packs examples so that ``rows * longest`` stays within ``batch_tokens``
(padded tokens count; an example longer than the budget goes alone). Gradient accumulation
over the micro-batches of an optimizer step is the loop's job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from mindgap.schemas import SOURCES, AlignedExample, Source

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """One tokenised example: ``ids = prompt ids + response ids`` (after truncation)."""

    key: str
    example_id: str
    ids: list[int]
    prompt_len: int
    behavior: list[float] | None
    source: Source
    truncated: bool = False

    @property
    def response_len(self) -> int:
        return len(self.ids) - self.prompt_len


@dataclass
class Dropped:
    """An example that cannot be trained on, and why."""

    key: str
    example_id: str
    reason: str


def encode_example(key: str, example: AlignedExample, tokenizer: Any,
                   max_length: int) -> Encoded | Dropped:
    """Tokenise one example per the module's rules (prompt tokens + stored response tokens)."""
    prompt_ids = list(tokenizer(example.prompt, add_special_tokens=False)["input_ids"])
    response = list(example.response_token_ids)
    behavior = list(example.behavior.logprobs) if example.behavior is not None else None
    if not response:
        return Dropped(key, example.id, "empty_response")
    if not prompt_ids:  # nothing to predict the first response token from
        return Dropped(key, example.id, "empty_prompt")
    if behavior is not None and len(behavior) != len(response):
        log.warning("example %s: %d behavior log-probs for %d response tokens; dropped",
                    example.id, len(behavior), len(response))
        return Dropped(key, example.id, "behavior_mismatch")
    room = max_length - len(prompt_ids)
    if room < 1:
        return Dropped(key, example.id, "prompt_too_long")
    truncated = len(response) > room
    if truncated:
        response = response[:room]
        behavior = behavior[:room] if behavior is not None else None
    return Encoded(key, example.id, prompt_ids + response, len(prompt_ids), behavior,
                   example.source, truncated)


def micro_batches(encoded: list[Encoded], batch_tokens: int) -> list[list[Encoded]]:
    """Pack examples (longest first) into micro-batches of at most ``batch_tokens`` padded
    tokens each; an example longer than the budget forms a micro-batch alone."""
    order = sorted(encoded, key=lambda e: len(e.ids), reverse=True)
    batches: list[list[Encoded]] = []
    current: list[Encoded] = []
    longest = 0
    for e in order:
        n = len(e.ids)
        if current and max(longest, n) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(e)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


def collate(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors of one micro-batch (see the module docstring)."""
    rows, length = len(batch), max(len(e.ids) for e in batch)
    input_ids = torch.full((rows, length), pad_id, dtype=torch.long)
    attention = torch.zeros((rows, length), dtype=torch.long)
    targets = torch.full((rows, length), pad_id, dtype=torch.long)
    loss_mask = torch.zeros((rows, length), dtype=torch.bool)
    behavior = torch.zeros((rows, length), dtype=torch.float32)
    has_behavior = torch.zeros((rows, length), dtype=torch.bool)
    source_ids = torch.zeros(rows, dtype=torch.long)
    for r, e in enumerate(batch):
        n, p = len(e.ids), e.prompt_len
        ids = torch.tensor(e.ids, dtype=torch.long)
        input_ids[r, :n] = ids
        attention[r, :n] = 1
        targets[r, : n - 1] = ids[1:]
        # Position i predicts token i + 1: response tokens p .. n-1 are predicted at p-1 .. n-2.
        loss_mask[r, p - 1 : n - 1] = True
        if e.behavior is not None:
            behavior[r, p - 1 : n - 1] = torch.tensor(e.behavior, dtype=torch.float32)
            has_behavior[r, p - 1 : n - 1] = True
        source_ids[r] = SOURCES.index(e.source)
    return {"input_ids": input_ids, "attention_mask": attention, "targets": targets,
            "loss_mask": loss_mask, "behavior_logprobs": behavior,
            "has_behavior": has_behavior, "source_ids": source_ids}


def dummy_batch(pad_id: int) -> dict[str, torch.Tensor]:
    """A one-token micro-batch with no response token: its loss is 0. Ranks with fewer
    micro-batches run these so that every rank joins the same collectives (FSDP)."""
    return {"input_ids": torch.full((1, 1), pad_id, dtype=torch.long),
            "attention_mask": torch.ones((1, 1), dtype=torch.long),
            "targets": torch.full((1, 1), pad_id, dtype=torch.long),
            "loss_mask": torch.zeros((1, 1), dtype=torch.bool),
            "behavior_logprobs": torch.zeros((1, 1)),
            "has_behavior": torch.zeros((1, 1), dtype=torch.bool),
            "source_ids": torch.zeros(1, dtype=torch.long)}
