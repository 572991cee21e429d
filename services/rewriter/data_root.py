"""Server-side data sets (``dataset.path`` of ``POST /v1/jobs``): files and ``save_to_disk``
folders under the configured data root (``MINDGAP_REWRITER_DATA_ROOT``), read with bounds.

A path is resolved (a relative one against the root), symbolic links included, and must then
lie under the root; every path that does not, whether or not it exists, gets the answer a
missing file gets. Only regular files and ``save_to_disk`` folders (whose files, links
resolved, must lie under the root too, and whose metadata may name only files inside them)
are read, within ``max_dataset_bytes`` (413), at most ``max_job_items`` rows (413, reading
stops there) and lines of at most :data:`MAX_LINE_BYTES`. Errors name the client's path, line
numbers and field names, never a value from the file nor the resolved path.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from mindgap.config import RewriterSettings
from mindgap.datasets import (
    DatasetError,
    ReadReport,
    TooManyRows,
    UnreadableSource,
    dataset_format,
    read_problems,
)
from mindgap.jobs import DatasetSpec, dataset_error_line
from mindgap.rewriter.rejections import Rejected, invalid
from mindgap.schemas import Problem

MAX_LINE_BYTES = 4 * 1024 * 1024
"""Longest JSON line of a server-side data set; a longer one is a bad row, never held whole."""
MAX_METADATA_BYTES = 1024 * 1024
"""Largest ``state.json``/``dataset_dict.json`` of a ``save_to_disk`` folder."""
MAX_FOLDER_ENTRIES = 10_000
"""Most files and folders in a ``save_to_disk`` folder."""

_NOT_A_DATA_SET = ("not a .jsonl, .json or .parquet file, nor a folder written by Hugging Face "
                   "save_to_disk")


def _refused(given: str, reason: str) -> Rejected:
    return invalid([{"field": "dataset.path", "message": f"{given}: {reason}"}])


def _absent(given: str) -> Rejected:
    """The one answer for a path that is missing or lies outside the root."""
    return _refused(given, "no such data set under the server's data root")


def _real(path: Path) -> Path | None:
    """``path`` with every symbolic link resolved (None when it cannot be)."""
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return None


def _under(path: Path, root: Path) -> Path | None:
    """``path`` resolved when it lies under ``root`` (itself resolved), else None."""
    real = _real(path)
    return real if real is not None and real.is_relative_to(root) else None


def _stat(path: Path | None) -> os.stat_result | None:
    """The status of ``path`` (links followed); None without a path or when it cannot be had."""
    if path is None:
        return None
    try:
        return path.stat()
    except OSError:
        return None


def _plain_names(names: Any) -> bool:
    """Whether ``names`` is a list of file names that stay in their folder."""
    return isinstance(names, list) and all(
        isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
        and "\\" not in name for name in names)


def _metadata_ok(name: str, path: Path) -> bool:
    """Whether file ``name`` of a ``save_to_disk`` folder (at ``path``, links resolved), when
    it is the folder's metadata, names only files inside the folder."""
    if name not in ("state.json", "dataset_dict.json"):
        return True
    try:
        if path.stat().st_size > MAX_METADATA_BYTES:
            return False
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    if name == "dataset_dict.json":
        return _plain_names(data.get("splits"))
    files = data.get("_data_files")
    if not isinstance(files, list) or not all(isinstance(f, dict) for f in files):
        return False
    return _plain_names([f.get("filename") for f in files])


def _folder_bytes(folder: Path, root: Path, given: str) -> int:
    """The size of a ``save_to_disk`` folder's files, each checked: links resolved under the
    root, no linked folders, metadata naming files inside it only."""
    total = entries = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        entries += len(dirnames) + len(filenames)
        if entries > MAX_FOLDER_ENTRIES:
            raise _refused(given, f"more than {MAX_FOLDER_ENTRIES} entries in the folder")
        if any(Path(dirpath, name).is_symlink() for name in dirnames):
            raise _refused(given, "a save_to_disk folder holding a linked folder")
        for name in filenames:
            real = _under(Path(dirpath, name), root)
            info = _stat(real)
            if real is None or info is None or not stat.S_ISREG(info.st_mode):
                raise _refused(given, "a save_to_disk folder holding a link out of the data "
                               "root or something not a regular file")
            if not _metadata_ok(name, real):
                raise _refused(given, f"a save_to_disk folder whose {name} is unreadable or "
                               "names files outside it")
            total += info.st_size
    return total


def locate(given: str, settings: RewriterSettings) -> Path:
    """Where data set ``given`` is (relative paths are relative to the data root), resolved
    and checked; else ``Rejected``: 403 without a data root, 422, 413 over the size cap."""
    if settings.data_root is None:
        raise Rejected(403, "server-side data sets are disabled: the server has no data root "
                       "(MINDGAP_REWRITER_DATA_ROOT); send the problems as items")
    root = _real(settings.data_root)
    found = _under(root / given, root) if root is not None else None
    info = _stat(found)
    if root is None or found is None or info is None:
        raise _absent(given)
    if stat.S_ISDIR(info.st_mode):
        if dataset_format(str(found)) != "hf-disk":
            raise _refused(given, _NOT_A_DATA_SET)
        size = _folder_bytes(found, root, given)
    elif not stat.S_ISREG(info.st_mode):
        raise _refused(given, "not a regular file")
    elif dataset_format(str(found)) not in ("jsonl", "parquet"):
        raise _refused(given, _NOT_A_DATA_SET)
    else:
        size = info.st_size
    if size > settings.max_dataset_bytes:
        raise Rejected(413, f"{given}: data set larger than {settings.max_dataset_bytes} bytes "
                       "(MINDGAP_REWRITER_MAX_DATASET_BYTES)")
    if not os.access(found, os.R_OK):
        raise _refused(given, "not readable by the server")
    return found


def read_dataset(spec: DatasetSpec, settings: RewriterSettings) -> list[Problem]:
    """Read every row of a server-side data set; any bad one rejects the job with each bad
    row's line and field (422), more than ``max_job_items`` rows with a 413."""
    found = locate(spec.path, settings)
    report = ReadReport()
    try:
        problems = read_problems(str(found), name=spec.path, preset=spec.preset,
                                 split=spec.split, limit=spec.limit, skip_invalid=True,
                                 report=report, max_rows=settings.max_job_items,
                                 max_line_bytes=MAX_LINE_BYTES)
    except TooManyRows as exc:
        raise Rejected(413, f"{exc} (MINDGAP_REWRITER_MAX_JOB_ITEMS)") from None
    except UnreadableSource:
        raise _refused(spec.path, f"cannot be read as {dataset_format(str(found))}") from None
    except DatasetError as exc:
        raise invalid([{"field": "dataset", "message": str(exc)}]) from None
    if report.errors:
        errors = [{"field": "dataset", "line": dataset_error_line(message, spec.path),
                   "message": message} for message in report.errors]
        raise invalid(errors, total=report.skipped)
    if not problems:
        raise invalid([{"field": "dataset", "message": f"{spec.path}: no problems"}])
    return problems
