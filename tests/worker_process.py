"""A rewriter worker process with a scripted engine, for multi-process queue tests.

Run: ``python -m tests.worker_process REDIS_URL PREFIX CONSUMER [DELAY_S]``. The engine answers
``\\boxed{<n>}`` for a question tagged ``ANSWER=<n>`` and raises for one tagged ``POISON``.
"""

from __future__ import annotations

import sys
import time

from mindgap.queue import Queue
from mindgap.rewriter.engines.base import Sample
from mindgap.rewriter.engines.scripted import ScriptedEngine
from mindgap.rewriter.worker import Worker
from mindgap.verifier.pool import LocalVerifier


class SlowScriptedEngine(ScriptedEngine):
    """Scripted answers after a fixed delay per call; raises on poisoned prompts."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(lambda prompt, i: "so \\boxed{"
                         + prompt.split("ANSWER=")[1].split()[0] + "}")
        self.delay_s = delay_s

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        if any("POISON" in p for p in prompts):
            raise RuntimeError("scripted engine refuses a POISON prompt")
        time.sleep(self.delay_s)
        return super().generate(prompts, n, temperature, top_p, max_tokens, seed)


def main() -> None:
    url, prefix, consumer = sys.argv[1:4]
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    queue = Queue.from_url(url, prefix, visibility_timeout_ms=1500)
    with LocalVerifier(workers=1) as verifier:
        worker = Worker(queue, SlowScriptedEngine(delay), verifier, consumer, batch_size=4,
                        block_ms=200)
        worker.install_signal_handlers()
        worker.run()


if __name__ == "__main__":
    main()
