"""Checkpoints that let a run continue exactly, and the final model folder.

Layout of ``OUT/checkpoints/step-00000042/``:

- ``model/``: a ``save_pretrained`` folder (config, tokenizer, and the full weights once, in
  the training dtype: fp32, or bf16 when training in bf16); loadable by any Hugging Face
  tool, and the weights a resumed run starts from;
- ``optimizer.pt``: the full (unsharded) AdamW state keyed by parameter name, so a run can
  resume with another number of ranks or another ``dist_mode``;
- ``master_weights.safetensors`` (bf16 training only): the fp32 master weights, part of the
  optimizer's state, so that a resume is exact;
- ``trainer_state.pt``: step, scheduler state, the data source's committed position, the
  config and the last metrics;
- ``rng/rank-<r>.pt``: each rank's Python, NumPy and torch (CPU and CUDA) RNG states.

A checkpoint is written to ``step-N.tmp`` and renamed when complete, so a folder named
``step-N`` is always whole; ``latest_checkpoint`` picks the highest step. Only the newest
``save_total_limit`` checkpoints are kept. ``checkpoint_sizes`` measures what one holds.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

log = logging.getLogger(__name__)

_STEP = re.compile(r"^step-(\d+)$")
_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
MASTER = "master_weights.safetensors"


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


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _unshared(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the tensors that share storage with an earlier one (tied weights)."""
    seen: set[int] = set()
    out = {}
    for key, tensor in state.items():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            out[key] = tensor.contiguous()
    return out


def checkpoint_sizes(path: Path, num_params: int) -> dict[str, float]:
    """Bytes on disk of a checkpoint's weights (``model/*.safetensors``), optimizer state
    (``optimizer.pt`` and master weights) and everything, and bytes per parameter."""
    def size(files: list[Path]) -> int:
        return sum(f.stat().st_size for f in files if f.is_file())

    weights = size(list((path / "model").glob("*.safetensors")))
    optimizer = size([path / "optimizer.pt", path / MASTER])
    total = size(list(path.rglob("*")))
    return {"weights_bytes": weights, "optimizer_bytes": optimizer, "total_bytes": total,
            "weights_bytes_per_param": weights / num_params,
            "optimizer_bytes_per_param": optimizer / num_params}


def size_line(path: Path, sizes: dict[str, float]) -> str:
    """The log line of a checkpoint's size."""
    mib = 2.0 ** 20
    return (f"checkpoint {path.name}: {sizes['total_bytes'] / mib:.1f} MiB (weights "
            f"{sizes['weights_bytes'] / mib:.1f} MiB = "
            f"{sizes['weights_bytes_per_param']:.2f} B/param, optimizer "
            f"{sizes['optimizer_bytes'] / mib:.1f} MiB = "
            f"{sizes['optimizer_bytes_per_param']:.2f} B/param)")


def load_master_weights(path: Path, model: torch.nn.Module) -> bool:
    """Load a checkpoint's fp32 master weights into ``model`` if it has them."""
    file = Path(path) / MASTER
    if not file.exists():
        return False
    model.load_state_dict(load_file(file), strict=False)
    return True


def save_model(path: Path, model: torch.nn.Module, state: dict[str, torch.Tensor],
               tokenizer: Any | None) -> None:
    """``save_pretrained`` of ``model`` with the given full state (rank 0 only)."""
    model.save_pretrained(path, state_dict=state)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def save_checkpoint(out: str | Path, step: int, *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler: Any, tokenizer: Any | None,
                    trainer_state: dict[str, Any], save_total_limit: int,
                    weights_dtype: torch.dtype = torch.float32, rank: int = 0,
                    barrier: Callable[[], None] = lambda: None) -> Path:
    """Write ``OUT/checkpoints/step-N`` (collective: every rank calls it; rank 0 writes the
    shared files, each rank its RNG state), the weights in ``weights_dtype``. Returns the
    checkpoint's path."""
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
        save_model(tmp / "model", model, _cast(model_state, weights_dtype), tokenizer)
        if weights_dtype != torch.float32:
            save_file(_unshared(model_state), tmp / MASTER)
        torch.save(optim_state, tmp / "optimizer.pt")
        torch.save({**trainer_state, "step": step, "scheduler": scheduler.state_dict()},
                   tmp / "trainer_state.pt")
    barrier()
    if rank == 0:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        limit = save_total_limit
        for old in list_checkpoints(out)[:-limit] if limit > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def publish_final(model_dir: Path, final: Path, *, copy: bool) -> None:
    """Make ``final`` the last checkpoint's model folder: a relative link (the weights stay
    stored once), or with ``copy`` (or where links are not supported) a copy."""
    if final.is_symlink() or final.is_file():
        final.unlink()
    elif final.exists():
        shutil.rmtree(final)
    if not copy:
        try:
            final.symlink_to(os.path.relpath(model_dir, final.parent), target_is_directory=True)
            return
        except OSError as exc:
            log.warning("cannot link %s (%s): copying it", final, exc)
    shutil.copytree(model_dir, final)


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path) / "trainer_state.pt", weights_only=False)


def restore_checkpoint(path: str | Path, *, model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, rank: int = 0) -> dict[str, Any]:
    """Restore the optimizer and this rank's RNG states from ``path`` (the weights were
    loaded when the model was built); returns the trainer state, whose ``scheduler`` the
    caller restores (``mindgap.trainer.schedule.restore_scheduler``)."""
    path = Path(path)
    state = load_trainer_state(path)
    optim_state = torch.load(path / "optimizer.pt", weights_only=False)
    set_optimizer_state_dict(model, optimizer, optim_state,
                             options=StateDictOptions(full_state_dict=True))
    rng_file = path / "rng" / f"rank-{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, weights_only=False))
    else:
        log.warning("no RNG state for rank %d in %s (another world size?): reseeding", rank,
                    path)
        torch.manual_seed(int(state.get("step", 0)) * 7919 + rank)
    return state
