"""JSON-lines files: numbered lines, and typed reads whose errors name the file, line and field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class JsonlError(ValueError):
    """A line of a JSON-lines file is not what it should be.

    The message names file and line, except from :func:`json_value`, which sees one line only.
    """


def first_error(exc: ValidationError) -> tuple[str, str]:
    """The dotted location and message of a validation error's first problem."""
    first = exc.errors()[0]
    return ".".join(str(part) for part in first["loc"]), first["msg"]


def numbered_lines(path: str | Path, *, complete_only: bool = False) -> Iterator[tuple[int, bytes]]:
    """The non-blank lines of a file with their 1-based numbers, as bytes.

    With ``complete_only`` the reading stops at a last line without a newline: the partial
    tail an interrupted writer leaves behind.
    """
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if complete_only and not raw.endswith(b"\n"):
                return
            if raw.strip():
                yield number, raw


def json_value(raw: bytes) -> Any:
    """The JSON value of one line; raises :class:`JsonlError` (invalid UTF-8 or JSON)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonlError(f"invalid UTF-8 at byte {exc.start}") from None
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise JsonlError(f"invalid JSON: {exc}") from None


def json_lines(path: str | Path, *, complete_only: bool = False) -> Iterator[tuple[int, Any]]:
    """The JSON value of every non-blank line with its number (``complete_only`` as in
    :func:`numbered_lines`); raises :class:`JsonlError` naming ``path:line``."""
    for number, raw in numbered_lines(path, complete_only=complete_only):
        try:
            value = json_value(raw)
        except JsonlError as exc:
            raise JsonlError(f"{path}:{number}: {exc}") from None
        yield number, value


def read_models(path: str | Path, model: type[ModelT]) -> list[ModelT]:
    """Every non-blank line of ``path`` parsed as ``model``; raises :class:`JsonlError`."""
    records = []
    for number, raw in numbered_lines(path):
        try:
            records.append(model.model_validate_json(raw))
        except ValidationError as exc:
            field, message = first_error(exc)
            where = f"field '{field}': " if field else ""
            raise JsonlError(f"{path}:{number}: {where}{message}") from None
    return records
