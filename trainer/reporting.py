"""Where a run's metrics go: ``OUT/metrics.jsonl``, TensorBoard (``OUT/tb``), wandb
(``OUT/wandb``), and the progress bar (rank 0 only).

Every metric has one name and one unit wherever it appears: the progress bar shows a subset
of the metrics.jsonl keys under the same names (``self/guided/expert=2/3/1`` is
``examples_self``, ``examples_guided``, ``examples_expert``). ``check_reporters`` fails
early, naming the extra to install, when a requested reporter's package is missing: nothing
is skipped silently.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mindgap.jsonl import numbered_lines
from mindgap.schemas import SOURCES
from mindgap.trainer.config import TrainConfig

EXTRA = "mindgap[report]"
_MODULES = {"tensorboard": "torch.utils.tensorboard", "wandb": "wandb"}


class ReporterMissing(RuntimeError):
    """A reporter of ``report_to`` whose package is not installed."""


def check_reporters(names: Sequence[str]) -> None:
    """Raise ``ReporterMissing`` for the first reporter whose package cannot be imported."""
    for name in names:
        module = _MODULES.get(name)
        if module is None:
            continue
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ReporterMissing(
                f"--report-to {name}: {name} is not installed ({exc}); install it with "
                f"pip install '{EXTRA}' or drop it from --report-to") from exc


class Metrics:
    """The reporters of ``config.report_to`` (enabled on rank 0 only)."""

    def __init__(self, config: TrainConfig, is_main: bool, start_step: int) -> None:
        self.enabled = is_main
        out = Path(config.out)
        self.path = out / "metrics.jsonl" if "jsonl" in config.report_to else None
        self.tb: Any = None
        self.wandb: Any = None
        if not is_main:
            return
        out.mkdir(parents=True, exist_ok=True)
        if self.path is not None and self.path.exists():  # a resumed run rewrites later steps
            kept = [raw for _, raw in numbered_lines(self.path, complete_only=True)
                    if json.loads(raw).get("step", 0) <= start_step]
            self.path.write_bytes(b"".join(kept))
        if "tensorboard" in config.report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tb"))
        if "wandb" in config.report_to:
            import wandb

            self.wandb = wandb.init(project=config.wandb_project, name=out.resolve().name,
                                    dir=str(out), config=config.model_dump())

    def write(self, record: dict[str, Any]) -> None:
        """One step's record, to every reporter."""
        if not self.enabled:
            return
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        scalars = {k: v for k, v in record.items()
                   if isinstance(v, int | float) and not isinstance(v, bool) and k != "step"}
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, record["step"])
        if self.wandb is not None:
            self.wandb.log(scalars, step=record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def bar_postfix(record: dict[str, Any]) -> dict[str, str]:
    """The progress bar's fields: metrics.jsonl keys, same units (README, "Metrics")."""
    return {
        "loss": f"{record['loss']:.4f}", "ce": f"{record['ce']:.4f}",
        "w_mean": f"{record['w_mean']:.3f}", "w_max": f"{record['w_max']:.2f}",
        "ess_frac": f"{record['ess_frac']:.2f}", "grad_norm": f"{record['grad_norm']:.3f}",
        "lr": f"{record['lr']:.2e}", "tokens_per_s": f"{record['tokens_per_s']:.0f}",
        "/".join(SOURCES): "/".join(str(record[f"examples_{s}"]) for s in SOURCES)}
