"""Read problems from JSONL, Parquet or Hugging Face datasets; write models as JSON lines.

Reading maps source fields onto :class:`mindgap.schemas.Problem` with a :class:`FieldMap`,
usually one of the :data:`PRESETS`::

    problems = read_problems("gsm8k_test.jsonl", preset="gsm8k", limit=100)

The format follows the name: ``.jsonl``/``.json`` (JSON lines), ``.parquet``; anything else
is opened with Hugging Face ``datasets`` (``load_from_disk`` for a folder written by
``save_to_disk``, else ``load_dataset``, which takes a hub name or a folder of data files).

The question and the solution may be composed from several fields with a template
(``"{body} {question}"``). The reference answer is the mapped answer field (a list is joined, a
preset may clean it: ASDiv's ``9 (apples)`` is ``9``), else derived from the solution (the last
``\\boxed{}``, else the GSM8K ``#### n`` line), as DESIGN.md prescribes. A row without one is
invalid. Every bad row raises :class:`DatasetError` naming the source, the 1-based line (row)
number and the field, e.g. ``data.jsonl:17: field 'question': missing`` (never a field's
value); with ``skip_invalid=True`` it is logged as a warning, counted in a :class:`ReadReport`,
and skipped. A source that fails to read raises :class:`UnreadableSource`. For untrusted sources
(the rewriter API's server-side data sets) ``max_rows`` and ``max_line_bytes`` bound the work: a
JSON line longer than the cap is a bad row, skipped without being held in memory, and the row
past ``max_rows`` raises :class:`TooManyRows`. Problems that arrive whole (the API's inline
items) get the same checks from :func:`problem_errors`.

Writing (``write_jsonl``, ``append_jsonl``) flushes and fsyncs on every call, and
``read_jsonl_ids`` ignores an unterminated last line, so a killed run can ``--resume``.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import string
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mindgap.answers import derive_answer
from mindgap.jsonl import JsonlError, json_lines, json_value
from mindgap.schemas import Problem

__all__ = [
    "PRESETS",
    "PRESET_FILES",
    "DatasetError",
    "DatasetFormat",
    "FieldMap",
    "ReadOptions",
    "ReadReport",
    "TooManyRows",
    "UnreadableSource",
    "append_jsonl",
    "dataset_format",
    "derive_answer",
    "field_overrides",
    "iter_problems",
    "problem_errors",
    "read_jsonl_ids",
    "read_problems",
    "reference_answer",
    "with_fields",
    "write_jsonl",
]

log = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)

_CALCULATOR = re.compile(r"<<[^<>\n]*>>")
_HF_DISK_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
_SKIP_CHUNK = 64 * 1024
_UNIT = re.compile(r"(?P<value>.*?\S)\s*\([^()]*\)\s*", re.DOTALL)
"""An answer with a trailing parenthesised unit or label: ``9 (apples)``."""
_MATH_DELIMITER = re.compile(r"(?<!\\)\$")
_FORMATTER = string.Formatter()
PROBLEM_FIELDS = ("id", "question", "solution", "answer", "metadata")
"""The :class:`FieldMap` fields that name source fields (what ``--field NAME=COLUMN`` sets)."""
_TEMPLATE_FIELDS = ("question", "solution")

AnswerCleanup = Literal["unit", "math"]
"""How a preset reads its answer field: ``unit`` drops a trailing parenthesised unit or label
(``9 (apples)`` is ``9``); ``math`` drops the ``$`` math delimiters (``$2^{1009}$``)."""

DatasetFormat = Literal["jsonl", "parquet", "hf-disk", "hf"]
"""How a source is read: JSON lines, Parquet, a ``save_to_disk`` folder, ``load_dataset``."""


class DatasetError(ValueError):
    """A source that cannot be read, or a row that does not make a valid problem."""


class UnreadableSource(DatasetError):
    """The source's reader failed (opening it or midway); the message quotes the reader's own
    error, which may name paths or data, so services answer with their own words."""


class TooManyRows(DatasetError):
    """The source has more rows than ``max_rows``; reading stopped at the first one beyond."""


def template_parts(spec: str) -> list[tuple[str, str | None]] | None:
    """A template's ``(literal text, column or None)`` parts; None when ``spec`` is a plain
    column name (no braces). ``{{`` and ``}}`` are literal braces; a placeholder is a bare
    column name (no format spec, no conversion). Raises ValueError for a bad template."""
    if "{" not in spec and "}" not in spec:
        return None
    try:
        parsed = list(_FORMATTER.parse(spec))
    except ValueError as exc:
        raise ValueError(f"bad template: {exc}") from None
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec_part, conversion in parsed:
        if name is not None and (not name or spec_part or conversion):
            raise ValueError("a template's placeholder is a column name in braces, "
                             "e.g. {question}")
        parts.append((literal, name))
    if all(name is None for _, name in parts):
        raise ValueError("a template needs a {column} placeholder ({{ and }} are braces)")
    return parts


def _columns(spec: str | None) -> set[str]:
    """The source columns a field map entry reads (a template's placeholders, else itself)."""
    if spec is None:
        return set()
    parts = template_parts(spec)
    return {spec} if parts is None else {name for _, name in parts if name is not None}


class FieldMap(BaseModel):
    """Which source field gives each :class:`~mindgap.schemas.Problem` field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    """Field with the problem id (a string or an integer). None: a stable id from the row,
    ``f"{stem}-{index}"``, where ``stem`` is the file name without suffix (for Hugging Face
    sources the last part of the name, plus ``-{split}`` when a split was chosen) and
    ``index`` the 0-based position of the row among all rows of the source, bad ones
    included, so ids do not shift when rows are skipped or the source is read with a limit."""
    question: str = "question"
    """Field with the problem statement (a non-empty string), or a template composing several
    (``"{body} {question}"``: each ``{column}`` is that field, a string, number or list)."""
    solution: str = "solution"
    """Field with the expert solution y* (a non-empty string; a list of strings is joined by
    blank lines), or a template like :attr:`question`."""
    answer: str | None = None
    """Field with the reference answer (string, number or a list of them, joined by ``", "``;
    an integral float is written as an integer). None, or a row where it is absent or empty:
    derived from the solution (last ``\\boxed{}``, else the ``#### n`` line). Templates that
    name this field get the answer as read (cleaned by :attr:`answer_cleanup`)."""
    answer_cleanup: AnswerCleanup | None = None
    """How the data set writes its answers beyond the bare value (see :data:`AnswerCleanup`)."""
    metadata: str | None = None
    """Field holding a JSON object to use as the problem's metadata."""
    keep_extra: bool = True
    """Copy the row's other fields into metadata when they are scalars (str, int, float,
    bool); lists and objects (e.g. NuminaMath's ``messages``) are left out."""
    strip_calculator: bool = False
    """Remove GSM8K calculator annotations ``<<48/2=24>>`` from the solution."""

    @field_validator("question", "solution")
    @classmethod
    def _valid_template(cls, value: str) -> str:
        template_parts(value)
        return value

    @field_validator("id", "answer", "metadata")
    @classmethod
    def _plain_column(cls, value: str | None) -> str | None:
        if value is not None and ("{" in value or "}" in value):
            raise ValueError("only question and solution may be templates")
        return value


PRESETS: dict[str, FieldMap] = {
    # The Problem fields themselves (what mindgap writes, e.g. mindgap/samples/problems.jsonl).
    "mindgap": FieldMap(id="id", question="question", solution="solution", answer="answer",
                        metadata="metadata"),
    # GSM8K: the worked solution lives in "answer" and ends with "#### n".
    "gsm8k": FieldMap(question="question", solution="answer", answer=None,
                      strip_calculator=True),
    # MATH / MATH-500: MATH-500 has an answer field; the original MATH does not (derived).
    "math": FieldMap(question="problem", solution="solution", answer="answer"),
    # NuminaMath-CoT: the answer is the solution's last \boxed{}.
    "numina": FieldMap(question="problem", solution="solution", answer=None),
    # Minerva: the answer is the solution's last \boxed{}.
    "minerva": FieldMap(question="problem", solution="solution", answer=None),
    # AIME: worked solutions (AoPS) do not always mark their answer (2 of the 30 of 2024:
    # one unmarked, one \boxed{\textbf{(073)}}), so the answer is stated after the solution.
    "aime": FieldMap(question="problem", answer="answer",
                     solution="{solution}\n\nThe answer is $\\boxed{{{answer}}}$."),
    # AMC: answers only (JSON numbers, 27.0); the solution states the answer.
    "amc": FieldMap(question="question", solution="The answer is $\\boxed{{{answer}}}$.",
                 answer="answer"),
    # OlympiadBench: solutions and final answers are lists; the answers are in $...$ and the
    # solutions do not mark them, so the final answer is stated after the solutions.
    "olympiadbench": FieldMap(
        question="question", answer="final_answer", answer_cleanup="math",
        solution="{solution}\n\nThe final answer is $\\boxed{{{final_answer}}}$."),
    # SVAMP: the question is split into body and question; the solution is the equation.
    "svamp": FieldMap(question="{Body} {Question}", answer="Answer",
                      solution="{Equation} = {Answer}\n#### {Answer}"),
    # ASDiv: body and question; the solution is the formula; answers carry units, "9 (apples)".
    "asdiv": FieldMap(question="{body} {question}", solution="{formula}\n#### {answer}",
                      answer="answer", answer_cleanup="unit"),
    # MultiArith: answers only.
    "multiarith": FieldMap(question="input", solution="#### {target}", answer="target"),
}
"""Field maps for known data sets; ``mindgap`` is the default. Where a data set has no worked
solution (amc, multiarith) or one that does not always state its answer (aime, olympiadbench,
svamp, asdiv), the preset's solution states the data set's answer after whatever working
there is."""

PRESET_FILES: dict[str, str] = {
    "aime24.jsonl": "aime", "amc23.jsonl": "amc", "asdiv.jsonl": "asdiv",
    "gsm8k_test.jsonl": "gsm8k", "math500.jsonl": "math", "minerva_math.jsonl": "minerva",
    "multiarith.jsonl": "multiarith", "olympiadbench.jsonl": "olympiadbench",
    "svamp.jsonl": "svamp",
}
"""The preset of each benchmark file in ``../shared/data/benchmarks`` (the Qwen2.5-Math
evaluation harness's files)."""

DEFAULT_PRESET = "mindgap"


class ProblemSelection(BaseModel):
    """Which rows of a data set become problems: the field mapping, the split, how many.

    Shared by the command line's data options and the rewriter API's server-side data sets.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    preset: str = Field(default=DEFAULT_PRESET, description="Field mapping of the rows: "
                        + ", ".join(sorted(PRESETS)) + ".",
                        json_schema_extra={"enum": sorted(PRESETS)})
    split: str = Field(default="train", min_length=1, max_length=256,
                       description="Split of a Hugging Face data set with several splits.")
    limit: int | None = Field(default=None, ge=1, description="Only the first N problems.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known: {', '.join(sorted(PRESETS))}")
        return value


@dataclass
class ReadReport:
    """What a read did: rows seen, problems kept, bad rows skipped (with their messages)."""

    rows: int = 0
    loaded: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def resolve_fields(preset: str | None = None, fields: FieldMap | None = None) -> FieldMap:
    """The field map to use: ``fields``, else the named preset, else ``mindgap``."""
    if fields is not None:
        if preset is not None:
            raise DatasetError("give either a preset or a field map, not both")
        return fields
    name = preset or DEFAULT_PRESET
    try:
        return PRESETS[name]
    except KeyError:
        raise DatasetError(
            f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
        ) from None


def field_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """``NAME=COLUMN`` pairs (``question=body``, ``question={body} {question}``) as a dict;
    NAME is one of :data:`PROBLEM_FIELDS`. Raises ValueError naming the bad pair."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        name, sep, column = pair.partition("=")
        name, column = name.strip(), column.strip()
        if not sep or not name or not column:
            raise ValueError(f"{pair!r}: expected NAME=COLUMN, e.g. question=body")
        if name not in PROBLEM_FIELDS:
            raise ValueError(f"{pair!r}: unknown field {name!r}; fields: "
                             f"{', '.join(PROBLEM_FIELDS)}")
        if name in overrides:
            raise ValueError(f"{pair!r}: field {name!r} given twice")
        overrides[name] = column
    return overrides


def with_fields(preset: str | None, pairs: Iterable[str]) -> FieldMap:
    """The preset's field map (default ``mindgap``) with ``NAME=COLUMN`` pairs replacing its
    fields (see :func:`field_overrides`); DatasetError for a bad pair or template."""
    try:
        overrides = field_overrides(pairs)
        base = resolve_fields(preset)
        return FieldMap.model_validate({**base.model_dump(), **overrides})
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        pair = f"{name}={overrides[name]}" if name in overrides else name
        message = str(first["msg"]).removeprefix("Value error, ")
        raise DatasetError(f"{pair!r}: {message}") from None
    except ValueError as exc:
        raise DatasetError(str(exc)) from None


class _RowError(Exception):
    """A bad row; the message lacks the location, which the caller adds."""


def _label(source_field: str, target: str) -> str:
    """``field 'answer' (solution)`` when the source field's name differs from the target."""
    if source_field == target:
        return f"field {source_field!r}"
    return f"field {source_field!r} ({target})"


def _text(row: dict[str, Any], source_field: str, target: str) -> str:
    """A required non-empty string field."""
    if source_field not in row or row[source_field] is None:
        raise _RowError(f"{_label(source_field, target)}: missing")
    value = row[source_field]
    if not isinstance(value, str):
        raise _RowError(
            f"{_label(source_field, target)}: expected a string, got {type(value).__name__}"
        )
    if not value.strip():
        raise _RowError(f"{_label(source_field, target)}: empty")
    return value


def _scalar_text(value: Any, source_field: str, target: str) -> str | None:
    """A string or number as text (an integral float as an integer: JSON ``27.0`` is 27);
    None when absent or blank."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _RowError(
            f"{_label(source_field, target)}: expected a string or number, "
            f"got {type(value).__name__}"
        )
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def _joined(value: Any, source_field: str, target: str, separator: str) -> str | None:
    """A scalar, or a list of scalars joined by ``separator``, as text; None when blank."""
    if not isinstance(value, list):
        return _scalar_text(value, source_field, target)
    items = [_scalar_text(item, source_field, target) for item in value]
    return separator.join(item for item in items if item is not None) or None


def _answer(row: dict[str, Any], fmap: FieldMap) -> str | None:
    """The mapped answer field as the data set means it (cleaned), or None."""
    if fmap.answer is None:
        return None
    answer = _joined(row.get(fmap.answer), fmap.answer, "answer", ", ")
    if answer is None or fmap.answer_cleanup is None:
        return answer
    if fmap.answer_cleanup == "unit":
        unit = _UNIT.fullmatch(answer)
        return unit.group("value") if unit else answer
    return _MATH_DELIMITER.sub("", answer).strip() or None


def _composed(row: dict[str, Any], spec: str, target: str, fmap: FieldMap) -> str:
    """A required field (a solution's list of strings joined by blank lines), or a template's
    fields composed (each part present and not blank)."""
    parts = template_parts(spec)
    if parts is None:
        if target != "solution" or not isinstance(row.get(spec), list):
            return _text(row, spec, target)
        joined = _joined(row[spec], spec, target, "\n\n")
        if joined is None:
            raise _RowError(f"{_label(spec, target)}: empty")
        return joined
    pieces = []
    for literal, name in parts:
        pieces.append(literal)
        if name is None:
            continue
        value = (_answer(row, fmap) if name == fmap.answer
                 else _joined(row.get(name), name, target, "\n\n"))
        if value is None:
            raise _RowError(f"{_label(name, target)}: missing")
        pieces.append(value)
    return "".join(pieces)


def _problem_id(row: dict[str, Any], fmap: FieldMap, default_id: str) -> str:
    """The row's id field as text, else the row's default id."""
    if fmap.id is None:
        return default_id
    if fmap.id not in row or row[fmap.id] is None:
        raise _RowError(f"{_label(fmap.id, 'id')}: missing")
    found = _scalar_text(row[fmap.id], fmap.id, "id")
    if found is None:
        raise _RowError(f"{_label(fmap.id, 'id')}: empty")
    return found


def _metadata(row: dict[str, Any], fmap: FieldMap) -> dict[str, Any]:
    """The row's unmapped scalar fields (with ``keep_extra``) and its metadata object."""
    metadata: dict[str, Any] = {}
    mapped = {fmap.id, fmap.answer, fmap.metadata} | _columns(fmap.question) \
        | _columns(fmap.solution)
    if fmap.keep_extra:
        for key, value in row.items():
            if key not in mapped and isinstance(value, str | int | float | bool):
                metadata[str(key)] = value
    if fmap.metadata is not None and row.get(fmap.metadata) is not None:
        given_meta = row[fmap.metadata]
        if not isinstance(given_meta, dict):
            raise _RowError(
                f"{_label(fmap.metadata, 'metadata')}: expected an object, "
                f"got {type(given_meta).__name__}"
            )
        metadata.update(given_meta)
    return metadata


def _to_problem(row: Any, fmap: FieldMap, default_id: str) -> Problem:
    """One source row as a Problem, or ``_RowError`` naming the bad field."""
    if not isinstance(row, dict):
        raise _RowError(f"row is not an object (got {type(row).__name__})")
    question = _composed(row, fmap.question, "question", fmap)
    solution = _composed(row, fmap.solution, "solution", fmap)
    if fmap.strip_calculator:
        solution = _CALCULATOR.sub("", solution)
    problem_id = _problem_id(row, fmap, default_id)
    answer = _answer(row, fmap) or derive_answer(solution)
    if answer is None:
        given = f"no field {fmap.answer!r}, " if fmap.answer is not None else ""
        raise _RowError(
            f"{_label(fmap.answer or 'answer', 'answer')}: no reference answer "
            f"({given}no \\boxed{{}} or '#### n' line in {fmap.solution!r})"
        )
    metadata = _metadata(row, fmap)
    try:
        return Problem(id=problem_id, question=question, solution=solution, answer=answer,
                       metadata=metadata)
    except ValidationError as exc:
        first = exc.errors()[0]
        target = str(first["loc"][0]) if first["loc"] else "row"
        source_field = {"id": fmap.id or "id", "question": fmap.question,
                        "solution": fmap.solution, "answer": fmap.answer or "answer",
                        "metadata": fmap.metadata or "metadata"}.get(target, target)
        raise _RowError(f"{_label(source_field, target)}: {first['msg']}") from None


def reference_answer(problem: Problem) -> str | None:
    """The answer a problem is checked against: its ``answer`` unless blank, else the one its
    solution states (last ``\\boxed{}``, else the ``#### n`` line); None when there is none."""
    given = (problem.answer or "").strip()
    return given or derive_answer(problem.solution)


def problem_errors(problem: Problem) -> list[tuple[str, str]]:
    """The checks a data set's row gets, for a problem that arrives whole (the rewriter API's
    inline items): ``(field, reason)`` for each blank id, question or solution, and a missing
    reference answer; the reasons never quote a value."""
    errors = [(name, "empty") for name in ("id", "question", "solution")
              if not getattr(problem, name).strip()]
    if reference_answer(problem) is None:
        errors.append(("answer", "no reference answer (no answer, and no \\boxed{} or "
                       "'#### n' line in the solution)"))
    return errors


# --- Sources: each yields (1-based line/row number, row or a parse error) ------------------


def dataset_format(path_or_name: str) -> DatasetFormat:
    """How :func:`read_problems` reads a source: ``jsonl`` or ``parquet`` by the suffix,
    ``hf-disk`` for a folder written by Hugging Face ``save_to_disk``, else ``hf``
    (``load_dataset``: a hub name or a folder of data files)."""
    path = Path(path_or_name)
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if path.is_dir() and any((path / marker).is_file() for marker in _HF_DISK_MARKERS):
        return "hf-disk"
    return "hf"


def _reader_module(module: str, source: str, what: str) -> Any:
    """A reader from the ``rewrite`` extra, absent from a ``serve``-only install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DatasetError(f"{source}: reading {what} needs {module.split('.')[0]}, from the "
                           "rewrite extra (pip install 'mindgap[rewrite]')") from exc


def _bounded_lines(path: Path, max_line_bytes: int | None) -> Iterator[tuple[int, bytes | None]]:
    """The non-blank lines of a file with their 1-based numbers; a line longer than
    ``max_line_bytes`` (its newline not counted) comes as None, skipped in chunks, never held
    whole."""
    limit = -1 if max_line_bytes is None else max_line_bytes + 1
    with path.open("rb") as handle:
        number = 0
        while raw := handle.readline(limit):
            number += 1
            if len(raw) == limit and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):
                    raw = handle.readline(_SKIP_CHUNK)
                yield number, None
            elif raw.strip():
                yield number, raw


def _jsonl_rows(path: Path, max_line_bytes: int | None) -> Iterator[tuple[int, Any]]:
    """Rows of a JSON-lines file with their 1-based line numbers; blank lines are skipped."""
    for number, raw in _bounded_lines(path, max_line_bytes):
        if raw is None:
            yield number, _RowError(f"line longer than {max_line_bytes} bytes")
            continue
        try:
            row = json_value(raw)
        except JsonlError as exc:
            row = _RowError(str(exc))
        yield number, row


def _parquet_rows(path: Path, label: str) -> Iterator[tuple[int, Any]]:
    """Rows of a Parquet file, read in batches, with 1-based row numbers."""
    pq = _reader_module("pyarrow.parquet", label, "Parquet")
    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:
        raise UnreadableSource(f"{label}: cannot read Parquet: {exc}") from exc
    number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield number, row


def _hf_dataset(name: str, label: str, split: str, config: str | None,
                from_disk: bool) -> tuple[Any, str]:
    """A Hugging Face dataset (``save_to_disk`` folder or ``load_dataset`` name) and the stem
    for default ids."""
    datasets = _reader_module("datasets", label, "a Hugging Face dataset")
    stem = Path(label).name or label
    try:
        if not from_disk:
            return datasets.load_dataset(name, config, split=split), f"{stem}-{split}"
        loaded = datasets.load_from_disk(name)
        if not isinstance(loaded, datasets.DatasetDict):
            return loaded, stem
        if split not in loaded:
            raise DatasetError(f"{label}: no split {split!r}; splits: "
                               f"{', '.join(sorted(loaded))}")
        return loaded[split], f"{stem}-{split}"
    except DatasetError:
        raise
    except Exception as exc:
        raise UnreadableSource(f"{label}: cannot load with Hugging Face datasets: {exc}"
                               ) from exc


def _guarded(rows: Iterator[tuple[int, Any]], label: str) -> Iterator[tuple[int, Any]]:
    """``rows``, a reader's failure midway raised as :class:`UnreadableSource`."""
    try:
        yield from rows
    except DatasetError:
        raise
    except Exception as exc:
        raise UnreadableSource(f"{label}: cannot read: {exc}") from exc


def _source(path_or_name: str, label: str,
            options: ReadOptions) -> tuple[Iterator[tuple[int, Any]], str]:
    """The rows of a source and the stem used for default ids (both named by ``label``)."""
    kind = dataset_format(path_or_name)
    if kind in ("jsonl", "parquet"):
        path = Path(path_or_name)
        if not path.is_file():
            raise DatasetError(f"{label}: no such file")
        rows = (_jsonl_rows(path, options.get("max_line_bytes")) if kind == "jsonl"
                else _parquet_rows(path, label))
        return _guarded(rows, label), Path(label).stem
    dataset, stem = _hf_dataset(path_or_name, label, options.get("split", "train"),
                                options.get("config"), from_disk=kind == "hf-disk")
    return _guarded(enumerate(iter(dataset), start=1), label), stem


class ReadOptions(TypedDict, total=False):
    """The options of :func:`read_problems` and :func:`iter_problems`, all optional."""

    preset: str | None
    """A :data:`PRESETS` name (default ``mindgap``)."""
    fields: FieldMap | None
    """A custom field map instead of a preset."""
    split: str
    """The split of a Hugging Face dataset (default ``train``)."""
    config: str | None
    """The configuration of a Hugging Face hub dataset."""
    limit: int | None
    """The most problems returned (default: all)."""
    skip_invalid: bool
    """Log, skip and count a bad row instead of raising (default False)."""
    report: ReadReport | None
    """Filled with the counts of the read."""
    name: str | None
    """How messages and default ids name the source (default: ``path_or_name``); the
    rewriter API passes the client's path, never the one it resolved."""
    max_rows: int | None
    """Raise :class:`TooManyRows` at the row beyond this many, bad rows included."""
    max_line_bytes: int | None
    """A longer JSON line is a bad row, skipped unread (default: no bound)."""


def iter_problems(path_or_name: str, **options: Unpack[ReadOptions]) -> Iterator[Problem]:
    """Yield problems one by one; see :func:`read_problems`."""
    limit = options.get("limit")
    skip_invalid = options.get("skip_invalid", False)
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0, got {limit}")
    fmap = resolve_fields(options.get("preset"), options.get("fields"))
    report = options.get("report") or ReadReport()
    label = options.get("name") or path_or_name
    max_rows = options.get("max_rows")
    rows, stem = _source(path_or_name, label, options)
    if limit == 0:
        return
    seen: dict[str, int] = {}
    for index, (number, row) in enumerate(rows):
        report.rows += 1
        if max_rows is not None and report.rows > max_rows:
            raise TooManyRows(f"{label}: more than {max_rows} rows")
        try:
            if isinstance(row, _RowError):
                raise row
            problem = _to_problem(row, fmap, f"{stem}-{index}")
            if problem.id in seen:
                raise _RowError(
                    f"{_label(fmap.id or 'id', 'id')}: duplicate id "
                    f"(first on line {seen[problem.id]})"
                )
        except _RowError as exc:
            message = f"{label}:{number}: {exc}"
            if not skip_invalid:
                raise DatasetError(message) from None
            log.warning("skipping bad row: %s", message)
            report.skipped += 1
            report.errors.append(message)
            continue
        seen[problem.id] = number
        report.loaded += 1
        yield problem
        if limit is not None and report.loaded >= limit:
            return


def read_problems(path_or_name: str, **options: Unpack[ReadOptions]) -> list[Problem]:
    """Read problems from a ``.jsonl``/``.json`` (JSON lines) or ``.parquet`` file, else a
    Hugging Face dataset (a folder from ``save_to_disk``, a folder of data files, or a hub name
    with ``config`` and ``split``); see :func:`dataset_format`.

    ``preset`` names a :data:`PRESETS` entry (default ``mindgap``); ``fields`` is a custom
    :class:`FieldMap` instead. ``limit`` caps the number of problems returned. A bad row or a
    duplicate id raises :class:`DatasetError`; with ``skip_invalid`` it is logged, skipped and
    counted in ``report`` (pass a :class:`ReadReport` to get the counts). ``name``,
    ``max_rows`` and ``max_line_bytes`` are for untrusted sources; see :class:`ReadOptions`.
    """
    return list(iter_problems(path_or_name, **options))


# --- Writing JSON lines -----------------------------------------------------------------


def _lines(models: Iterable[BaseModel]) -> bytes:
    return b"".join(model.model_dump_json().encode("utf-8") + b"\n" for model in models)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_jsonl(path: str | Path, models: Iterable[BaseModel]) -> int:
    """Write models one per line, replacing ``path`` atomically (temp file, fsync, rename).

    Returns the number of lines written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = list(models)
    # os.open with mode 0o666 honours the umask (mkstemp would leave the file 0600).
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(_lines(items))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return len(items)


def append_jsonl(path: str | Path, models: Iterable[BaseModel]) -> int:
    """Append models one per line in one write, then flush and fsync.

    An unterminated last line (left by a killed writer) is cut off first, so the new lines
    never run into it; :func:`read_jsonl_ids` never counted it. Returns the lines written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = list(models)
    data = _lines(items)
    with path.open("a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                keep = _last_newline_end(handle, size)
                log.warning("%s: dropping an unterminated last line (%d bytes)",
                            path, size - keep)
                handle.truncate(keep)
                handle.seek(keep)
        if data:
            handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return len(items)


def _last_newline_end(handle: Any, size: int, chunk: int = 65536) -> int:
    """Offset just past the last ``\\n`` of an open binary file, or 0 when there is none."""
    end = size
    while end > 0:
        start = max(0, end - chunk)
        handle.seek(start)
        found = handle.read(end - start).rfind(b"\n")
        if found != -1:
            return start + found + 1
        end = start
    return 0


def read_jsonl_ids(path: str | Path, key: str = "id") -> set[str]:
    """The ``key`` value of every complete line of a JSON-lines file (for ``--resume``).

    A missing file gives an empty set; an unterminated last line is ignored (a killed
    writer's partial record). A complete line that is not a JSON object with ``key`` raises
    :class:`DatasetError` naming the line.
    """
    path = Path(path)
    if not path.exists():
        return set()
    ids: set[str] = set()
    try:
        for number, row in json_lines(path, complete_only=True):
            if not isinstance(row, dict) or row.get(key) is None:
                raise DatasetError(f"{path}:{number}: field {key!r}: missing")
            ids.add(str(row[key]))
    except JsonlError as exc:
        raise DatasetError(str(exc)) from None
    return ids
