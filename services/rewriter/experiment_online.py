"""Online arms of ``mindgap experiment``: the training problems rewritten while the arm trains.

An online run (``<arm>-s<seed>``) is skipped when finished (its final model and its data
file exist); otherwise it starts afresh, in this order:

1. its own queue on ``online.redis_url`` under the key prefix ``<online.prefix>:<hash of
   work_dir>:<run>``: that prefix's keys, the run's folder and its data file are deleted
   first, so a run killed midway starts over cleanly rather than mixing with what it had
   begun (``mindgap experiment`` checks that Redis answers before its first step);
2. one job of the training problems with the experiment's rewrite options, feeding the
   trainer (``Queue.jobs.create``, as the rewriter API does);
3. a ``mindgap worker`` child (the experiment's engine and start model; it follows the
   policy versions the trainer publishes, and its backpressure keeps it at most
   ``online.max_ahead_steps`` global batches ahead of the trainer), logging to
   ``logs/worker-RUN.log``;
4. ``mindgap train`` on the job's live stream (``publish_every``, ``max_staleness``) as the
   other child, like an offline arm (``arms/RUN/train.yaml``, ``logs/train-RUN.log``); a
   worker that exits before training ends is an error naming its log;
5. the worker stopped (SIGTERM, SIGKILL after a timeout); the job's results saved as the
   run's data (``data/online-RUN.jsonl``, what the report counts self/guided/expert of),
   the job's state and the published versions in ``arms/RUN/online.json``; then the
   published weights (``arms/RUN/policy``; the model is ``arms/RUN/final``) and the queue's
   keys are deleted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mindgap.datasets import read_problems
from mindgap.options import to_flags
from mindgap.queue import Queue
from mindgap.queue.store import REDIS_DOWN
from mindgap.redact import redact
from mindgap.rewriter.experiment import Layout, Runner, stop_child, write_json
from mindgap.rewriter.experiment_config import Arm, ExperimentConfig, run_name
from mindgap.rewriter.options import EngineOptions, WorkerOptions

_DELETE_CHUNK = 500


def queue_prefix(config: ExperimentConfig, run: str) -> str:
    """The key prefix of an online run's queue: unique to the work_dir and the run."""
    digest = hashlib.sha256(str(Path(config.work_dir).resolve()).encode()).hexdigest()[:12]
    return f"{config.online.prefix}:{digest}:{run}"


def drop_keys(queue: Queue) -> int:
    """Delete every key under the queue's prefix; how many."""
    keys = list(queue.redis.scan_iter(match=f"{queue.prefix}:*", count=_DELETE_CHUNK))
    for start in range(0, len(keys), _DELETE_CHUNK):
        queue.redis.delete(*keys[start:start + _DELETE_CHUNK])
    return len(keys)


def finished(layout: Layout, run: str) -> bool:
    """Whether an online run is done: its final model and its data file exist."""
    return layout.model(run).exists() and layout.online_data(run).exists()


def connect(config: ExperimentConfig, run: str) -> Queue:
    """The run's queue (no consumer groups created); a ``RuntimeError`` naming
    ``online.redis_url`` when Redis cannot be reached."""
    queue = Queue.from_url(config.online.redis_url, queue_prefix(config, run),
                           create_groups=False)
    try:
        queue.redis.ping()
    except REDIS_DOWN as exc:
        queue.close()
        raise RuntimeError(f"{run} is an online run: it needs the Redis of "
                           f"online.redis_url ({redact(config.online.redis_url)}): "
                           f"{exc}") from None
    return queue


def check_redis(config: ExperimentConfig) -> None:
    """Fail before any step when an online run is still to do and Redis cannot be reached."""
    layout = Layout(config)
    todo = [run_name(arm, seed) for arm, seed in config.runs()
            if arm.mode == "online" and not finished(layout, run_name(arm, seed))]
    if todo:
        connect(config, todo[0]).close()


def train_online(runner: Runner, arm: Arm, seed: int) -> None:
    """One online arm and seed, afresh unless finished (see the module's docstring)."""
    run, layout = run_name(arm, seed), runner.layout
    if finished(layout, run):
        runner.echo(f"[experiment] train {run}: cached ({layout.online_data(run)})")
        return
    shutil.rmtree(layout.arm(run), ignore_errors=True)
    layout.online_data(run).unlink(missing_ok=True)
    queue = connect(runner.config, run)
    try:
        dropped = drop_keys(queue)
        if dropped:
            runner.echo(f"[experiment] {run}: deleted {dropped} keys of an earlier attempt "
                        f"({queue.prefix}); starting afresh")
        queue.store.ensure_groups()
        problems = read_problems(str(layout.data / "train.jsonl"))
        queue.jobs.create(run, problems, runner.config.rewrite.model_dump(mode="json"),
                          feed_trainer=True)
        _train_beside_worker(runner, arm, seed, queue.prefix)
        _save(queue, layout, run)
        shutil.rmtree(layout.arm(run) / "policy", ignore_errors=True)
        drop_keys(queue)
    finally:
        queue.close()


def _worker_args(config: ExperimentConfig, prefix: str, run: str, seed: int) -> list[str]:
    """``mindgap worker``'s arguments for an online run (the Redis URL, which may hold a
    password, goes by the environment: see :func:`_train_beside_worker`)."""
    online = config.online
    high_water = online.high_water(int(config.training["global_batch"]))
    engine = EngineOptions(engine=config.engine, model=config.model or None)
    worker = WorkerOptions(consumer=run, batch_size=online.worker_batch_size,
                           high_water=high_water, low_water=high_water, engine_seed=seed)
    return ["worker", *to_flags(engine), *to_flags(worker), "--prefix", prefix]


def _train_settings(config: ExperimentConfig, arm: Arm, seed: int, prefix: str,
                    folder: Path) -> dict[str, Any]:
    """The run's own ``mindgap train`` options: the job's live stream, versions, staleness."""
    online = config.online
    return {"redis": online.redis_url, "redis_prefix": prefix, "job": run_name(arm, seed),
            "publish_every": online.publish_every, "publish_dir": str(folder / "policy"),
            "max_staleness": online.max_staleness, "loss": arm.loss, "seed": seed,
            "log_example_ids": True}


def _train_beside_worker(runner: Runner, arm: Arm, seed: int, prefix: str) -> None:
    """Train the run while a worker child rewrites its job; stop the worker after."""
    run = run_name(arm, seed)
    label = f"worker-{run}"
    args = _worker_args(runner.config, prefix, run, seed)
    runner.layout.logs.mkdir(parents=True, exist_ok=True)
    log_path = runner.layout.log(label)
    runner.echo(f"[experiment] {label}: mindgap {' '.join(args)} (while {run} trains)")
    with log_path.open("a", encoding="utf-8") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "mindgap.cli", *args], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "MINDGAP_QUEUE_REDIS_URL": runner.config.online.redis_url})

        def watch() -> None:
            if worker.poll() is not None:
                raise RuntimeError(f"{label}: the worker exited with {worker.returncode} "
                                   f"before {run} finished training; see {log_path}")

        try:
            runner.launch_train(run, _train_settings(runner.config, arm, seed, prefix,
                                                     runner.layout.arm(run)), watch=watch)
        finally:
            status = stop_child(worker)
    runner.echo(f"[experiment] {label}: stopped (exit status {status})")


def _save(queue: Queue, layout: Layout, run: str) -> None:
    """The job's results as the run's data file (written last: it marks the run finished),
    its state and the published versions as ``online.json``."""
    state = queue.jobs.status(run)
    write_json(layout.online_summary(run), {
        "prefix": queue.prefix, "job": state.model_dump(mode="json") if state else None,
        "versions": [{"version": v.version, "step": v.step} for v in queue.policy.history()]})
    data = layout.online_data(run)
    tmp = data.with_name(f".{data.name}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for _, example in queue.jobs.results(run):
            handle.write(example + "\n")
    tmp.replace(data)
