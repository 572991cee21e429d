"""A scripted engine: answers set in advance (benchmarks of the aligner's scheduling, tests).

Its answers come from a ``Script``; token ids are character codes (a text longer than
``max_tokens`` is cut there, finish reason ``length``) and every token's log-probability is a
fixed small number, so the aligner's logic runs without a model.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mindgap.rewriter.engines.base import Engine, Sample

Script = Callable[[str, int], str]
"""(prompt, call index) -> response text."""


class ScriptedEngine(Engine):
    """Answers each prompt with a scripted text; token ids are character codes."""

    def __init__(self, script: Script, policy_version: int = 0) -> None:
        self.script = script
        self.model_name = "scripted"
        self.policy_version = policy_version
        self.eos_token_id = 0
        self.calls: list[tuple[int, int]] = []  # (prompts, n) per generate call
        self.loaded: list[tuple[str, int]] = []  # (path, version) per load_policy

    def load_policy(self, path: str, version: int) -> None:
        """Record the load (the script stays the same)."""
        self.loaded.append((path, version))
        self.policy_version = version

    def render_chat(self, user_message: str) -> str:
        return f"<user>{user_message}</user><assistant>"

    def tokenize(self, text: str) -> list[int]:
        return [ord(ch) for ch in text]

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        call = len(self.calls)
        self.calls.append((len(prompts), n))
        out = []
        for prompt in prompts:
            texts = [self.script(prompt, call * 1000 + j) for j in range(n)]
            out.append([self._sample(t, max_tokens) for t in texts])
        return out

    def _sample(self, text: str, max_tokens: int) -> Sample:
        """``text`` as sampled: cut at ``max_tokens`` characters (finish reason ``length``)."""
        finish = "length" if len(text) > max_tokens else "stop"
        text = text[:max_tokens]
        return Sample(text, self.tokenize(text), [-0.1 * (1 + (len(text) % 3))] * len(text),
                      finish)

    def _score_tokens(self, prompt_ids: list[int], token_ids: list[int],
                      temperature: float) -> list[float]:
        return [-0.1] * len(token_ids)


def bernoulli_script(p: float, seed: int = 0) -> Script:
    """Correct (``\\boxed{<answer>}`` per the prompt's 'ANSWER=' tag) with probability p."""
    rng = random.Random(seed)

    def script(prompt: str, index: int) -> str:
        answer = prompt.split("ANSWER=")[1].split()[0]
        return f"work... \\boxed{{{answer if rng.random() < p else 'wrong'}}}"

    return script
