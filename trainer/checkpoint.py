"""Checkpoints that let a run continue exactly, and the final model folder.

Layout of ``OUT/checkpoints/step-00000042/``:

- ``model/``: a ``save_pretrained`` folder (full fp32 weights, config, tokenizer); loadable by
  any Hugging Face tool, and the weights a resumed run starts from;
- ``optimizer.pt``: the full (unsharded) AdamW state keyed by parameter name, so a run can
  resume with another number of ranks or another ``dist_mode``;
- ``trainer_state.pt``: step, scheduler state, the data source's committed position, the
  config and the last metrics;
- ``rng/rank-<r>.pt``: each rank's Python, NumPy and torch (CPU and CUDA) RNG states.

A checkpoint is written to ``step-N.tmp`` and renamed when complete, so a folder named
``step-N`` is always whole; ``latest_checkpoint`` picks the highest step. Only the newest
``keep_last`` checkpoints are kept.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

log = logging.getLogger(__name__)

_STEP = re.compile(r"^step-(\d+)$")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def checkpoints_root(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def list_checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = checkpoints_root(out)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _STEP.match(p.name)) and (p / "trainer_state.pt").exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: str | Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy, torch (and CUDA) RNG states."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full fp32 weights on CPU (a collective under FSDP: every rank must call it)."""
    return get_model_state_dict(model, options=_FULL)


def save_model(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor],
               tokenizer: Any | None) -> None:
    """``save_pretrained`` of ``model`` with the given full state (rank 0 only)."""
    model.save_pretrained(path, state_dict=state)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def save_checkpoint(out: str | Path, step: int, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, tokenizer: Any | None,
                    trainer_state: dict[str, Any], keep_last: int, rank: int = 0,
                    barrier: Callable[[], None] = lambda: None) -> Path:
    """Write ``OUT/checkpoints/step-N`` (collective: every rank calls it; rank 0 writes the
    shared files, each rank its RNG state). Returns the checkpoint's path."""
    root = checkpoints_root(out)
    final = root / f"step-{step:08d}"
    tmp = root / f"step-{step:08d}.tmp"
    if rank == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "rng").mkdir(parents=True)
    barrier()
    model_state = full_model_state(model)
    optim_state = get_optimizer_state_dict(model, optimizer, options=_FULL)
    torch.save(rng_state(), tmp / "rng" / f"rank-{rank}.pt")
    if rank == 0:
        save_model(tmp / "model", model, model_state, tokenizer)
        torch.save(optim_state, tmp / "optimizer.pt")
        torch.save({**trainer_state, "step": step, "scheduler": scheduler.state_dict()},
                   tmp / "trainer_state.pt")
    barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        for old in list_checkpoints(out)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path) / "trainer_state.pt", weights_only=False)


def restore_checkpoint(path: str | Path, *, model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, scheduler: Any,
                       rank: int = 0) -> dict[str, Any]:
    """Restore optimizer, scheduler and this rank's RNG states from ``path`` (the weights were
    loaded from ``path/model`` when the model was built); returns the trainer state."""
    path = Path(path)
    state = load_trainer_state(path)
    optim_state = torch.load(path / "optimizer.pt", weights_only=False)
    set_optimizer_state_dict(model, optimizer, optim_state,
                             options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(state["scheduler"])
    rng_file = path / "rng" / f"rank-{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))
    else:
        log.warning("no RNG state for rank %d in %s (another world size?): reseeding", rank,
                    path)
        torch.manual_seed(int(state.get("step", 0)) * 7919 + rank)
    return state
