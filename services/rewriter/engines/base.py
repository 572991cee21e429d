"""The engine contract: sample responses with their behavior log-probs, and re-score tokens."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


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


class Engine(ABC):
    """Generates from rendered (chat-templated) prompt strings."""

    model_name: str
    policy_version: int = 0
    eos_token_id: int | None = None
    """The token that ends a response (appended to expert solutions for training)."""

    @abstractmethod
    def generate(self, prompts: list[str], n: int, temperature: float = 1.0, top_p: float = 1.0,
                 max_tokens: int = 512, seed: int | None = None) -> list[list[Sample]]:
        """``n`` samples for each prompt, in prompt order."""

    @abstractmethod
    def score(self, prompt: str, token_ids: list[int], temperature: float = 1.0) -> list[float]:
        """Log-probabilities of ``token_ids`` following ``prompt`` under ``log_softmax(z / T)``."""

    def _score_ids(self, prompt: str, token_ids: list[int], temperature: float) -> list[int]:
        """Checked arguments of ``score``: the prompt's token ids (empty: nothing to score)."""
        if temperature <= 0:
            raise ValueError(f"score needs a positive temperature, not {temperature}")
        if not token_ids:
            return []
        prompt_ids = self.tokenize(prompt)
        if not prompt_ids:
            raise ValueError("score needs a non-empty prompt")
        return prompt_ids

    @abstractmethod
    def render_chat(self, user_message: str) -> str:
        """The model's chat template applied to one user message, ready for generation."""

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added."""

    def close(self) -> None:  # noqa: B027 - engines without resources need not override
        """Release the engine's resources (processes, memory)."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
