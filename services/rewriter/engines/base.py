"""The engine contract: sample responses with their behavior log-probs, and re-score tokens.

The base class holds what every engine shares: the chat template and tokenising (with the
model's Hugging Face ``tokenizer``), and ``score`` / ``score_batch``, which check their
arguments once and hand token ids to the engine's hook. An engine implements ``generate`` and
``_score_tokens``, and may override ``_score_tokens_batch`` to score many sequences at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

_UNIT_TEMPERATURE_EPS = 1e-6

ScoreRequest = tuple[str, Sequence[int], float]
"""One sequence to score: (prompt, token ids, temperature)."""


@dataclass(frozen=True)
class Sample:
    """One sampled response.

    ``logprobs[i]`` is the log-probability of ``token_ids[i]`` under the distribution the
    engine actually sampled from (after temperature and top-p).
    """

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str


class ScoreRow(NamedTuple):
    """A checked score request, as the hooks get it: both id lists non-empty, ``T > 0``."""

    prompt_ids: list[int]
    token_ids: list[int]
    temperature: float


def is_unit_temperature(temperature: float) -> bool:
    """Whether ``temperature`` is 1 (where ``log_softmax(z / T)`` is the raw ``log_softmax``)."""
    return abs(temperature - 1.0) < _UNIT_TEMPERATURE_EPS


class PolicyReloadUnsupported(RuntimeError):
    """The engine cannot load new weights (its policy version cannot advance)."""


class Engine(ABC):
    """Generates from rendered (chat-templated) prompt strings."""

    model_name: str
    policy_version: int = 0
    eos_token_id: int | None = None
    """The token that ends a response (appended to expert solutions for training)."""
    tokenizer: Any
    """The model's Hugging Face tokenizer; an engine without one overrides ``render_chat``
    and ``tokenize``."""

    def render_chat(self, user_message: str) -> str:
        """The model's chat template applied to one user message, ready for generation."""
        return str(self.tokenizer.apply_chat_template(
            [{"role": "user", "content": user_message}], tokenize=False,
            add_generation_prompt=True))

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    @abstractmethod
    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        """``n`` samples for each prompt, in prompt order."""

    def score(self, prompt: str, token_ids: Sequence[int],
              temperature: float = 1.0) -> list[float]:
        """Log-probabilities of ``token_ids`` following ``prompt`` under ``log_softmax(z / T)``.

        Raises ``ValueError`` for ``T <= 0``, and for an empty prompt with tokens to score.
        """
        return self.score_batch([(prompt, token_ids, temperature)])[0]

    def score_batch(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """``score`` of each (prompt, token ids, temperature), in order; engines that can
        score many sequences in one pass (transformers: one padded forward pass) do."""
        rows = [self._score_row(*request) for request in requests]
        todo = [row for row in rows if row.token_ids]
        scored = iter(self._score_tokens_batch(todo) if todo else [])
        return [next(scored) if row.token_ids else [] for row in rows]

    def _score_row(self, prompt: str, token_ids: Sequence[int], temperature: float) -> ScoreRow:
        """The checked arguments of ``score`` (empty ``token_ids``: nothing to score)."""
        if temperature <= 0:
            raise ValueError(f"score needs a positive temperature, not {temperature}")
        if not token_ids:
            return ScoreRow([], [], temperature)
        prompt_ids = self.tokenize(prompt)
        if not prompt_ids:
            raise ValueError("score needs a non-empty prompt")
        return ScoreRow(prompt_ids, list(token_ids), temperature)

    @abstractmethod
    def _score_tokens(self, prompt_ids: list[int], token_ids: list[int],
                      temperature: float) -> list[float]:
        """The engine's hook: ``log_softmax(z / T)`` of ``token_ids`` after ``prompt_ids``
        (both non-empty, ``T > 0``: ``score`` has checked them)."""

    def _score_tokens_batch(self, rows: list[ScoreRow]) -> list[list[float]]:
        """The hook for many rows (at least one); by default one ``_score_tokens`` each."""
        return [self._score_tokens(*row) for row in rows]

    def load_policy(self, path: str, version: int) -> None:
        """Generate and score with the weights of the folder ``path`` from now on, as policy
        ``version`` (online rewriting); :class:`PolicyReloadUnsupported` where the engine
        cannot, so its version cannot advance."""
        raise PolicyReloadUnsupported(f"the {type(self).__name__} cannot load new weights")

    def close(self) -> None:  # noqa: B027 - engines without resources need not override
        """Release the engine's resources (processes, memory)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
