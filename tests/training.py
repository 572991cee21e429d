"""What the trainer's run tests share: the subprocess environment, reading a run's outputs,
and killing a run at a chosen moment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from mindgap.jsonl import numbered_lines
from mindgap.trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def subprocess_env() -> dict[str, str]:
    """Environment of a ``python -m mindgap.trainer`` subprocess: offline, one thread."""
    return {**os.environ, "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``save_pretrained`` folder."""
    return load_file(folder / "model.safetensors")


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state dicts with the same keys."""
    assert sorted(a) == sorted(b)
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def scheduled_lrs(config: TrainConfig, count: int) -> list[float]:
    """The learning rate of each of the first ``count`` steps under ``config``'s schedule."""
    from mindgap.trainer.schedule import build_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    sched = build_scheduler(opt, config)
    lrs = []
    for _ in range(count):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return lrs


def steps(out: Path) -> list[dict]:
    """The run's ``metrics.jsonl`` records."""
    return [json.loads(raw) for _, raw in numbered_lines(out / "metrics.jsonl")]


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool],
              timeout_s: float = 180.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (polled every 10 ms), then reap it."""
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run did not get there in time"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)


def train_beside_worker(config: TrainConfig, worker: Any, timeout_s: float) -> tuple[dict, bool]:
    """Train per ``config`` in a thread while ``worker`` (a rewriter ``Worker``) runs in
    another; stop the worker once training ends or ``timeout_s`` passes. The training
    summary, and whether training ended in time."""
    from mindgap.trainer.loop import train

    summary: dict = {}
    trainer = threading.Thread(target=lambda: summary.update(train(config)), daemon=True)
    runner = threading.Thread(target=worker.run, daemon=True)
    runner.start()
    trainer.start()
    trainer.join(timeout=timeout_s)
    worker.stop.set()
    runner.join(timeout=30)
    return summary, not trainer.is_alive()
