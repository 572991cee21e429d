"""Policy versions for online rewriting: the trainer publishes its weights every N steps.

Version ``k`` is the model after step ``k * publish_every``, saved with ``save_pretrained``
(safetensors, config, tokenizer) to ``PUBLISH_DIR/v<k>`` through a temporary folder and a
rename, so a worker never sees half a version; then it is recorded in Redis
(``mindgap.queue.policy``), where rewriter workers pick it up between batches. Collective
under FSDP: every rank gathers the full state, rank 0 writes.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from mindgap.queue.policy import PolicyVersions, StaleVersionError
from mindgap.trainer import checkpoint as ckpt
from mindgap.trainer.config import TrainConfig

log = logging.getLogger(__name__)


def publish_root(config: TrainConfig) -> Path:
    """Where versions are written: ``publish_dir``, else ``OUT/policy``."""
    return Path(config.publish_dir) if config.publish_dir else Path(config.out) / "policy"


def due_version(config: TrainConfig, step: int) -> int | None:
    """The version to publish after ``step``, or None when none is due."""
    every = config.publish_every
    return step // every if every and step % every == 0 else None


def publish(policy: PolicyVersions, config: TrainConfig, step: int, *, model: torch.nn.Module,
            tokenizer: Any, rank: int = 0, barrier: Any = lambda: None) -> dict[str, Any]:
    """Write and record the version due after ``step``; its metrics (``policy_version``,
    ``publish_s``) for the step's record. A version already published (a run resumed from a
    checkpoint older than its last publish) is left as it is."""
    version = due_version(config, step)
    if version is None:
        return {}
    start = time.perf_counter()
    root = publish_root(config)
    final, tmp = root / f"v{version}", root / f"v{version}.tmp"
    state = ckpt.full_model_state(model)  # a collective: every rank calls it
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        ckpt.save_model(tmp, model, state, tokenizer)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        try:
            policy.publish(version, str(final.resolve()), step)
        except StaleVersionError as exc:
            log.warning("%s: kept the published one", exc)
        log.info("published policy version %d (step %d) to %s", version, step, final)
    barrier()
    return {"policy_version": version, "publish_s": time.perf_counter() - start}
