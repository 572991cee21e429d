"""The learning-rate schedule (linear warm-up, cosine decay) and its resume rules.

A resumed run continues the checkpoint's schedule exactly when its schedule settings
(``max_steps``, ``lr``, the warm-up, ``min_lr_ratio``) are the checkpoint's. When they differ
the resume is refused (``ScheduleChanged``), unless ``reschedule`` is set: then the schedule
is rebuilt for the new settings and continued from the checkpoint's step, and the log says
so. (Restarting the old scheduler's state inside a new horizon is what neither does.)
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch

from mindgap.trainer.config import TrainConfig

log = logging.getLogger(__name__)


class ScheduleChanged(ValueError):
    """A resume whose schedule settings differ from the checkpoint's, without reschedule."""


def warmup_steps_of(config: TrainConfig) -> int:
    return config.warmup_steps or math.ceil(config.warmup_ratio * config.max_steps)


def schedule_settings(config: TrainConfig) -> dict[str, float]:
    """What determines the learning rate of every step."""
    return {"max_steps": config.max_steps, "lr": config.lr,
            "warmup_steps": warmup_steps_of(config), "min_lr_ratio": config.min_lr_ratio}


def build_scheduler(optimizer: torch.optim.Optimizer,
                    config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    warmup, total, floor = warmup_steps_of(config), config.max_steps, config.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def restore_scheduler(scheduler: torch.optim.lr_scheduler.LambdaLR, config: TrainConfig,
                      saved: dict[str, Any], step: int) -> None:
    """Bring ``scheduler`` (built for ``config``, on the optimizer whose state was just
    restored) to ``step`` of a resumed run: the checkpoint's schedule continued, or with
    ``reschedule`` the new settings' schedule at ``step``; ``ScheduleChanged`` otherwise.

    ``saved`` is the checkpoint's trainer state (its ``config`` and ``scheduler``).
    """
    fields = TrainConfig.model_fields
    old = schedule_settings(TrainConfig.model_construct(
        **{k: v for k, v in saved["config"].items() if k in fields}))
    new = schedule_settings(config)
    optimizer = scheduler.optimizer
    if old == new:
        scheduler.load_state_dict(saved["scheduler"])
    else:
        changes = ", ".join(f"{k} {old[k]} -> {new[k]}" for k in new if old[k] != new[k])
        if not config.reschedule:
            raise ScheduleChanged(
                f"the checkpoint at step {step} was trained with another schedule ({changes});"
                " continuing its scheduler would restart it inside the old horizon. Pass "
                "--reschedule to rebuild the schedule for the new settings from this step, or "
                "resume with the checkpoint's settings")
        for group in optimizer.param_groups:
            group["initial_lr"] = config.lr
        scheduler.base_lrs = [config.lr] * len(optimizer.param_groups)
        scheduler.last_epoch = step
        with warnings.catch_warnings():  # get_lr outside step(): intended here
            warnings.simplefilter("ignore", UserWarning)
            scheduler._last_lr = scheduler.get_lr()  # type: ignore[assignment]
        log.warning("schedule rebuilt for the new settings (%s) at step %d: lr %.3e next",
                    changes, step, scheduler.get_last_lr()[0])
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr(), strict=True):
        group["lr"] = lr  # the optimizer steps with the scheduler's lr of this step
