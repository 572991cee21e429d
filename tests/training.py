"""What the trainer's run tests share: the subprocess environment, reading a run's outputs,
killing a run at a chosen moment, and training beside a scripted rewriter worker."""

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
from mindgap.queue import Backpressure, Queue
from mindgap.rewriter.engines.scripted import ScriptedEngine, bernoulli_script
from mindgap.rewriter.worker import Worker
from mindgap.schemas import AlignedExample, Problem
from mindgap.trainer.config import TrainConfig
from mindgap.verifier.pool import LocalVerifier

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


def answerable_problems(count: int) -> list[Problem]:
    """``p0 .. p<count-1>``, each solved by the scripted engine (``ANSWER=i``)."""
    return [Problem(id=f"p{i}", question=f"q{i} ANSWER={i}", solution=f"\\boxed{{{i}}}",
                    answer=str(i)) for i in range(count)]


def job_results(queue: Queue, job_id: str) -> list[AlignedExample]:
    """A job's results, in completion order."""
    return [AlignedExample.model_validate_json(raw) for _, raw in queue.jobs.results(job_id)]


def train_beside_scripted_worker(queue: Queue, config: TrainConfig, *, batch_size: int,
                                 high_water: int, low_water: int, block_ms: int
                                 ) -> tuple[dict, bool, ScriptedEngine]:
    """``train_beside_worker`` with a worker on a scripted engine that solves every problem,
    held back by backpressure (``high_water`` / ``low_water`` untrained examples); also the
    engine, which records the versions it loaded."""
    engine = ScriptedEngine(bernoulli_script(1.0))
    with LocalVerifier(workers=1) as verifier:
        worker = Worker(queue, engine, verifier, "w0", batch_size=batch_size,
                        block_ms=block_ms, backpressure=Backpressure(
                            queue.aligned, high_water, low_water, interval_s=0.05))
        summary, ended = train_beside_worker(config, worker, timeout_s=240)
    return summary, ended, engine
