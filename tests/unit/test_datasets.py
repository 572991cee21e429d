"""Reading problems (JSONL, Parquet, Hugging Face) with presets; writing JSON lines safely."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from mindgap.datasets import (
    PRESETS,
    DatasetError,
    FieldMap,
    ReadReport,
    TooManyRows,
    UnreadableSource,
    append_jsonl,
    dataset_format,
    derive_answer,
    iter_problems,
    problem_errors,
    read_jsonl_ids,
    read_problems,
    reference_answer,
    with_fields,
    write_jsonl,
)
from mindgap.rewriter.options import DataOptions
from mindgap.schemas import Problem

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT.parent / "shared/data/benchmarks"
SAMPLE = ROOT / "mindgap" / "samples" / "problems.jsonl"


def write_rows(path: Path, rows: list[Any]) -> Path:
    """One JSON value per line; a str row is written verbatim (for broken lines)."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def benchmark(name: str) -> Path:
    path = BENCHMARKS / name
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared)")
    return path


GSM8K_ROW = {"question": "Tom has 2 bags of 3 apples. How many apples?",
             "answer": "He has 2 * 3 = <<2*3=6>>6 apples.\n#### 6", "idx": 7}
MATH_ROW = {"problem": "What is $1/2 + 1/4$?",
            "solution": "We get $\\boxed{\\frac{3}{4}}$.", "answer": "\\frac{3}{4}",
            "subject": "Algebra", "level": 1}
NUMINA_ROW = {"source": "synthetic_math", "problem": "Simplify $\\sqrt{8}$.",
              "solution": "First $\\boxed{4}$ is wrong; $\\sqrt{8} = \\boxed{2\\sqrt{2}}$.",
              "messages": [{"role": "user", "content": "Simplify"}]}


# --- Presets and field mapping ---------------------------------------------------------


def test_mindgap_preset_is_the_default(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "p.jsonl", [
        {"id": "a", "question": "1+1?", "solution": "1+1=2\n#### 2", "answer": "2",
         "metadata": {"k": 1}},
        {"id": "b", "question": "2+2?", "solution": "So \\boxed{4}."},
    ])
    problems = read_problems(str(path))
    assert [p.id for p in problems] == ["a", "b"]
    assert problems[0].answer == "2" and problems[0].metadata == {"k": 1}
    assert problems[1].answer == "4"  # derived from the boxed answer


def test_gsm8k_preset(tmp_path: Path) -> None:
    other = {**GSM8K_ROW, "answer": "10 - 4 = <<10-4=6>>6\n6 + 1 = 7\n#### 7"}
    path = write_rows(tmp_path / "gsm.jsonl", [GSM8K_ROW, other])
    first, second = read_problems(str(path), preset="gsm8k")
    assert first.id == "gsm-0" and second.id == "gsm-1"  # default ids: f"{stem}-{index}"
    assert first.question == GSM8K_ROW["question"]
    assert first.solution == "He has 2 * 3 = 6 apples.\n#### 6"  # calculator notes removed
    assert first.answer == "6" and second.answer == "7"
    assert first.metadata == {"idx": 7}


def test_math_preset_uses_the_answer_field_else_the_boxed_one(tmp_path: Path) -> None:
    no_answer = {k: v for k, v in MATH_ROW.items() if k != "answer"}  # the original MATH
    path = write_rows(tmp_path / "math.jsonl", [MATH_ROW, no_answer])
    given, derived = read_problems(str(path), preset="math")
    assert given.answer == derived.answer == "\\frac{3}{4}"
    assert given.metadata == {"subject": "Algebra", "level": 1}


def test_numina_preset_takes_the_last_boxed_and_drops_nested_extras(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "numina.jsonl", [NUMINA_ROW])
    (problem,) = read_problems(str(path), preset="numina")
    assert problem.question == NUMINA_ROW["problem"]
    assert problem.answer == "2\\sqrt{2}"
    assert problem.metadata == {"source": "synthetic_math"}  # "messages" is not a scalar


def test_custom_field_map(tmp_path: Path) -> None:
    fields = FieldMap(id="uid", question="prompt", solution="worked", answer="final",
                      keep_extra=False)
    path = write_rows(tmp_path / "custom.jsonl", [
        {"uid": 17, "prompt": "Q?", "worked": "So 5.", "final": 5, "note": "x"},
        {"uid": "u2", "prompt": "R?", "worked": "Thus \\boxed{x^{2}}", "final": ""},
    ])
    first, second = read_problems(str(path), fields=fields)
    assert (first.id, first.answer, first.metadata) == ("17", "5", {})
    assert (second.id, second.answer) == ("u2", "x^{2}")  # empty answer field: derived


ASDIV_ROW = {"body": "Seven red apples and two green apples are in the basket.",
             "question": "How many apples are in the basket?", "formula": "7+2=9",
             "answer": "9 (apples)", "idx": 0}


def test_templates_compose_fields_and_the_answer_drops_its_unit(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "asdiv.jsonl", [ASDIV_ROW, {**ASDIV_ROW, "answer": "Mrs. Hilt"}])
    first, named = read_problems(str(path), preset="asdiv")
    assert first.question == f"{ASDIV_ROW['body']} {ASDIV_ROW['question']}"
    assert (first.solution, first.answer) == ("7+2=9\n#### 9", "9")
    assert first.id == "asdiv-0"  # no id field: a stable id from the row number
    assert first.metadata == {"idx": 0}  # composed fields are not copied into metadata
    assert named.answer == "Mrs. Hilt"  # a label without a parenthesised unit stays whole


def test_list_fields_math_delimiters_and_integral_floats(tmp_path: Path) -> None:
    olympiad = write_rows(tmp_path / "olympiad.jsonl", [
        {"question": "Q?", "solution": ["First way.", "Second way."],
         "final_answer": ["$2^{10}$", "$3$"], "unit": None}])
    (problem,) = read_problems(str(olympiad), preset="olympiadbench")
    assert problem.answer == "2^{10}, 3"
    assert problem.solution == ("First way.\n\nSecond way.\n\n"
                                "The final answer is $\\boxed{2^{10}, 3}$.")
    amc = write_rows(tmp_path / "amc.jsonl", [{"question": "Q?", "answer": 27.0},
                                             {"question": "R?", "answer": 2.5}])
    whole, half = read_problems(str(amc), preset="amc")
    assert (whole.answer, whole.solution) == ("27", "The answer is $\\boxed{27}$.")
    assert half.answer == "2.5"


def test_a_template_field_missing_is_a_row_error(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "svamp.jsonl", [{"Body": "B.", "Equation": "1+1",
                                                  "Answer": 2.0}])
    with pytest.raises(DatasetError, match=r"svamp.jsonl:1: field 'Question' \(question\): "
                       "missing"):
        read_problems(str(path), preset="svamp")


def test_field_overrides_replace_the_presets_fields(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "own.jsonl", [{"text": "Q?", "sol": "So \\boxed{4}.",
                                                "key": "k1"}])
    fields = with_fields("math", ["question=text", "solution=Work: {sol}", "id=key",
                                  "answer=none_here"])
    (problem,) = read_problems(str(path), fields=fields)
    assert (problem.id, problem.question, problem.answer) == ("k1", "Q?", "4")
    assert problem.solution == "Work: So \\boxed{4}."
    assert with_fields("gsm8k", []) == PRESETS["gsm8k"]


@pytest.mark.parametrize(("pairs", "message"), [
    (["question"], "'question': expected NAME=COLUMN"),
    (["=body"], "'=body': expected NAME=COLUMN"),
    (["title=body"], "'title=body': unknown field 'title'"),
    (["question=a", "question=b"], "'question=b': field 'question' given twice"),
    (["answer={a}"], "'answer={a}': only question and solution may be templates"),
    (["question={a:>3}"], "'question={a:>3}': a template's placeholder is a column name"),
    (["question={a"], "'question={a': bad template"),
    (["question=just {{braces}}"], "'question=just {{braces}}': a template needs a {column}"),
])
def test_bad_field_overrides_name_the_pair(pairs: list[str], message: str) -> None:
    with pytest.raises(DatasetError, match=re.escape(message)):
        with_fields(None, pairs)
    with pytest.raises(ValueError, match=re.escape("--field " + message)):
        DataOptions(data="x.jsonl", field=pairs)


def test_data_options_field_map() -> None:
    options = DataOptions(data="x.jsonl", preset="asdiv", field=["question=body"])
    assert options.field_map() == PRESETS["asdiv"].model_copy(update={"question": "body"})
    assert DataOptions(data="x.jsonl").field_map() == PRESETS["mindgap"]


def test_preset_errors(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "p.jsonl", [GSM8K_ROW])
    with pytest.raises(DatasetError, match="unknown preset 'nope'"):
        read_problems(str(path), preset="nope")
    with pytest.raises(DatasetError, match="not both"):
        read_problems(str(path), preset="gsm8k", fields=PRESETS["gsm8k"])
    with pytest.raises(DatasetError, match="no such file"):
        read_problems(str(tmp_path / "absent.jsonl"))


@pytest.mark.parametrize(("solution", "expected"), [
    ("so $\\boxed{\\frac{1}{\\sqrt{2}}}$", "\\frac{1}{\\sqrt{2}}"),
    ("\\boxed{1} then \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
    ("3 + 4 = 7\n#### 7", "7"),
    ("#### 1\nrevised\n#### 1,000 ", "1,000"),
    ("\\boxed{9}\n#### 8", "9"),  # boxed first, as the verifier does
    ("no answer here, 42", None),
    ("\\boxed{}", None),
])
def test_derive_answer(solution: str, expected: str | None) -> None:
    assert derive_answer(solution) == expected


# --- Bad rows ----------------------------------------------------------------------------


def bad_file(tmp_path: Path) -> Path:
    ok = {"id": "ok", "question": "Q", "solution": "#### 1"}
    return write_rows(tmp_path / "data.jsonl", [
        ok,                                                           # 1
        "{not json",                                                  # 2
        {"id": "q", "solution": "#### 1"},                            # 3 question missing
        {"id": "e", "question": "Q", "solution": "   "},              # 4 solution empty
        {"id": "t", "question": ["Q"], "solution": "#### 1"},         # 5 wrong type
        {"id": "n", "question": "Q", "solution": "no final answer"},  # 6 no answer
        [1, 2],                                                       # 7 not an object
        {"id": "ok2", "question": "Q", "solution": "\\boxed{2}"},     # 8
    ])


def test_bad_row_message_names_file_line_and_field(tmp_path: Path) -> None:
    path = bad_file(tmp_path)
    with pytest.raises(DatasetError) as info:
        read_problems(str(path))
    assert str(info.value).startswith(f"{path}:2: invalid JSON")
    lines = path.read_text().splitlines()
    for number, expected in [(3, "field 'question': missing"), (4, "field 'solution': empty"),
                             (5, "field 'question': expected a string, got list"),
                             (6, "field 'answer': no reference answer"),
                             (7, "row is not an object")]:
        # Blank lines still count: the bad row keeps its line number.
        single = write_rows(tmp_path / "data.jsonl", [""] * (number - 1) + [lines[number - 1]])
        with pytest.raises(DatasetError) as info:
            read_problems(str(single))
        assert str(info.value).startswith(f"{single}:{number}: {expected}"), str(info.value)


def test_message_names_the_source_field_when_it_differs(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "gsm.jsonl", [GSM8K_ROW, {"question": "Q", "answer": 5}])
    with pytest.raises(DatasetError, match=r"gsm\.jsonl:2: field 'answer' \(solution\): "
                       "expected a string, got int"):
        read_problems(str(path), preset="gsm8k")


def test_skip_invalid_logs_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = bad_file(tmp_path)
    report = ReadReport()
    with caplog.at_level(logging.WARNING, logger="mindgap.datasets"):
        problems = read_problems(str(path), skip_invalid=True, report=report)
    assert [p.id for p in problems] == ["ok", "ok2"]
    assert (report.rows, report.loaded, report.skipped) == (8, 2, 6)
    assert report.errors[1] == f"{path}:3: field 'question': missing"
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 6 and f"{path}:3: field 'question': missing" in warned[1]


def test_invalid_utf8_and_bad_unicode_are_row_errors(tmp_path: Path) -> None:
    path = tmp_path / "u.jsonl"
    path.write_bytes(b'{"id": "a", "question": "Q\xff", "solution": "#### 1"}\n'
                     b'{"id": "b", "question": "Q\\ud800", "solution": "#### 1"}\n')
    report = ReadReport()
    assert read_problems(str(path), skip_invalid=True, report=report) == []
    assert report.errors[0].startswith(f"{path}:1: invalid UTF-8")
    assert report.errors[1].startswith(f"{path}:2: field 'question': ")
    assert "unicode" in report.errors[1].lower()


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    row = {"id": "same", "question": "Q", "solution": "#### 1"}
    path = write_rows(tmp_path / "dup.jsonl", [row, {**row, "id": "other"}, "", row])
    with pytest.raises(DatasetError, match=r"dup\.jsonl:4: field 'id': duplicate id "
                       r"\(first on line 1\)") as info:
        read_problems(str(path))
    assert "same" not in str(info.value)  # messages name lines and fields, never values
    report = ReadReport()
    assert len(read_problems(str(path), skip_invalid=True, report=report)) == 2
    assert report.skipped == 1



# --- Untrusted sources: bounded reads, messages that name the client's path ------------


def test_a_line_over_the_cap_is_a_bad_row_never_held_whole(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    good = json.dumps({"id": "b", "question": "Q", "solution": "#### 1"})
    with path.open("wb") as handle:
        handle.write(b'{"id": "a", "question": "' + b"x" * (8 * 1024 * 1024) + b'"}\n')
        handle.write(good.encode() + b"\n")
    report = ReadReport()
    tracemalloc.start()
    try:
        problems = read_problems(str(path), max_line_bytes=1024, skip_invalid=True,
                                 report=report)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [p.id for p in problems] == ["b"]
    assert report.errors == [f"{path}:1: line longer than 1024 bytes"]
    assert peak < 1024 * 1024, peak
    exact = write_rows(tmp_path / "exact.jsonl", [good])
    assert len(read_problems(str(exact), max_line_bytes=len(good))) == 1  # newline not counted
    with pytest.raises(DatasetError, match=r"exact\.jsonl:1: line longer than"):
        read_problems(str(exact), max_line_bytes=len(good) - 1)


def test_max_rows_stops_at_the_row_beyond(tmp_path: Path) -> None:
    rows = [{"id": f"p{i}", "question": "Q", "solution": f"#### {i}"} for i in range(5)]
    path = write_rows(tmp_path / "rows.jsonl", [*rows, "{broken"])
    assert len(read_problems(str(path), max_rows=6, skip_invalid=True)) == 5
    with pytest.raises(TooManyRows, match=r"rows\.jsonl: more than 4 rows"):
        read_problems(str(path), max_rows=4)
    assert len(read_problems(str(path), max_rows=3, limit=3)) == 3  # the limit comes first


def test_name_labels_messages_and_default_ids(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "v3.jsonl", [GSM8K_ROW, {"question": "Q"}])
    report = ReadReport()
    (problem,) = read_problems(str(path), preset="gsm8k", name="latest.jsonl",
                               skip_invalid=True, report=report)
    assert problem.id == "latest-0"
    assert report.errors == ["latest.jsonl:2: field 'answer' (solution): missing"]


def test_a_failing_reader_is_an_unreadable_source(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(UnreadableSource, match=r"broken\.parquet: cannot read Parquet"):
        read_problems(str(path))
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    with pytest.raises(DatasetError, match="no such file"):
        read_problems(str(folder))


def test_problem_errors_are_the_row_checks() -> None:
    def problem(**changes: Any) -> Problem:
        return Problem(**{"id": "a", "question": "Q", "solution": "S", "answer": "1",
                          **changes})

    assert problem_errors(problem()) == []
    assert reference_answer(problem(answer=" 7 ")) == "7"
    assert reference_answer(problem(answer=None, solution="so \\boxed{3}")) == "3"
    assert reference_answer(problem(answer="  ", solution="x\n#### 4")) == "4"
    assert [f for f, _ in problem_errors(problem(answer=None))] == ["answer"]
    assert [f for f, _ in problem_errors(problem(id=" ", question="\n", solution="\t",
                                                 answer=" "))] == [
        "id", "question", "solution", "answer"]
    assert "no reference answer" in problem_errors(problem(answer=None))[0][1]

def test_limit(tmp_path: Path) -> None:
    rows = [{"id": f"p{i}", "question": "Q", "solution": f"#### {i}"} for i in range(10)]
    path = write_rows(tmp_path / "many.jsonl", rows)
    assert [p.id for p in read_problems(str(path), limit=3)] == ["p0", "p1", "p2"]
    assert read_problems(str(path), limit=0) == []
    assert len(read_problems(str(path), limit=100)) == 10
    iterator = iter_problems(str(path))
    assert next(iterator).id == "p0"


def test_limit_counts_good_rows_and_default_ids_stay_stable(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "g.jsonl", [
        {"question": "Q"}, GSM8K_ROW, GSM8K_ROW])
    problems = read_problems(str(path), preset="gsm8k", limit=1, skip_invalid=True)
    assert [p.id for p in problems] == ["g-1"]  # the index counts the bad row too


def test_dataset_format(tmp_path: Path) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "dataset_info.json").write_text("{}")
    (tmp_path / "plain").mkdir()
    assert [dataset_format(str(tmp_path / name)) for name in
            ("a.jsonl", "b.JSON", "c.parquet", "saved", "plain")] == [
        "jsonl", "jsonl", "parquet", "hf-disk", "hf"]
    assert dataset_format("openai/gsm8k") == "hf"


def test_missing_reader_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if absent
    monkeypatch.setitem(sys.modules, "datasets", None)
    (tmp_path / "x.parquet").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"x\.parquet: reading Parquet needs pyarrow, from "
                       r"the rewrite extra \(pip install 'mindgap\[rewrite\]'\)"):
        read_problems(str(tmp_path / "x.parquet"))
    with pytest.raises(DatasetError, match="reading a Hugging Face dataset needs datasets"):
        read_problems("some/hub-name")


# --- Parquet -------------------------------------------------------------------------------


def test_parquet_presets_and_row_numbers(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "math.parquet"
    bad = {**MATH_ROW, "problem": None}
    pq.write_table(pa.Table.from_pylist([MATH_ROW, MATH_ROW, bad]), path)
    with pytest.raises(DatasetError, match=r"math\.parquet:3: field 'problem' \(question\): "
                       "missing"):
        read_problems(str(path), preset="math")
    problems = read_problems(str(path), preset="math", limit=2)
    assert [p.id for p in problems] == ["math-0", "math-1"]
    assert problems[0].answer == "\\frac{3}{4}"

    gsm = tmp_path / "gsm.parquet"
    pq.write_table(pa.Table.from_pylist([GSM8K_ROW]), gsm)
    (problem,) = read_problems(str(gsm), preset="gsm8k")
    assert problem.answer == "6"


# --- Hugging Face datasets ---------------------------------------------------------------


def test_hf_save_to_disk_round_trip(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "numina_hf"
    datasets.Dataset.from_list([NUMINA_ROW, {**NUMINA_ROW, "solution": "\\boxed{7}"}]) \
        .save_to_disk(str(folder))
    problems = read_problems(str(folder), preset="numina")
    assert [p.answer for p in problems] == ["2\\sqrt{2}", "7"]
    assert problems[0].id == "numina_hf-0"

    dict_folder = tmp_path / "gsm_hf"
    datasets.DatasetDict({
        "train": datasets.Dataset.from_list([GSM8K_ROW]),
        "test": datasets.Dataset.from_list([GSM8K_ROW, {**GSM8K_ROW, "answer": "#### 9"}]),
    }).save_to_disk(str(dict_folder))
    test = read_problems(str(dict_folder), preset="gsm8k", split="test")
    assert [(p.id, p.answer) for p in test] == [("gsm_hf-test-0", "6"), ("gsm_hf-test-1", "9")]
    with pytest.raises(DatasetError, match="no split 'validation'; splits: test, train"):
        read_problems(str(dict_folder), preset="gsm8k", split="validation")


# --- Writing, appending, resuming ----------------------------------------------------------


def problem(i: int) -> Problem:
    return Problem(id=f"p{i}", question=f"Q{i}", solution=f"#### {i}", answer=str(i))


def test_write_append_and_read_ids(tmp_path: Path) -> None:
    path = tmp_path / "out" / "problems.jsonl"
    assert read_jsonl_ids(path) == set()  # a fresh run
    assert write_jsonl(path, [problem(0), problem(1)]) == 2
    assert append_jsonl(path, [problem(2)]) == 1
    assert append_jsonl(path, []) == 0
    assert read_jsonl_ids(path) == {"p0", "p1", "p2"}
    assert read_problems(str(path)) == [problem(0), problem(1), problem(2)]
    assert write_jsonl(path, [problem(5)]) == 1  # write replaces
    assert read_jsonl_ids(path) == {"p5"}
    assert [p.name for p in path.parent.iterdir()] == ["problems.jsonl"]  # no temp file left


def test_partial_trailing_line_is_ignored_then_cut_on_append(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "aligned.jsonl"
    append_jsonl(path, [problem(0), problem(1)])
    complete = path.read_bytes()
    partial = problem(2).model_dump_json().encode()[:-1]
    with path.open("ab") as handle:  # a killed writer's half line
        handle.write(partial)
    assert read_jsonl_ids(path) == {"p0", "p1"}
    # Even a complete JSON object without its newline is not trusted.
    path.write_bytes(complete + problem(2).model_dump_json().encode())
    assert read_jsonl_ids(path) == {"p0", "p1"}

    with caplog.at_level(logging.WARNING, logger="mindgap.datasets"):
        append_jsonl(path, [problem(3)])
    assert "unterminated last line" in caplog.text
    assert path.read_bytes() == complete + problem(3).model_dump_json().encode() + b"\n"
    assert read_jsonl_ids(path) == {"p0", "p1", "p3"}

    only_partial = tmp_path / "only.jsonl"
    only_partial.write_bytes(b'{"id": "p9"')
    assert read_jsonl_ids(only_partial) == set()
    append_jsonl(only_partial, [problem(4)])
    assert read_jsonl_ids(only_partial) == {"p4"}


def test_read_ids_key_and_corrupt_lines(tmp_path: Path) -> None:
    path = tmp_path / "aligned.jsonl"
    path.write_text('{"id": "e1", "problem_id": "p1"}\n\n{"id": "e2", "problem_id": 2}\n')
    assert read_jsonl_ids(path, key="problem_id") == {"p1", "2"}
    path.write_text('{"id": "e1"}\n{broken\n{"id": "e3"}\n')
    with pytest.raises(DatasetError, match=r"aligned\.jsonl:2: invalid JSON"):
        read_jsonl_ids(path)
    path.write_text('{"id": "e1"}\n{"other": 1}\n')
    with pytest.raises(DatasetError, match=r"aligned\.jsonl:2: field 'id': missing"):
        read_jsonl_ids(path)


# --- The shipped sample and the real benchmark files ---------------------------------------


def test_shipped_sample_loads() -> None:
    problems = read_problems(str(SAMPLE))
    assert len(problems) == 32
    assert len({p.id for p in problems}) == 32
    for p in problems:
        assert p.answer and p.answer.isdigit()
        assert p.solution.endswith(f"#### {p.answer}")
        assert derive_answer(p.solution) == p.answer


def test_sample_script_is_deterministic_and_matches_the_file() -> None:
    script = ROOT / "scripts" / "make_sample_problems.py"
    spec = importlib.util.spec_from_file_location("make_sample_problems", script)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    made = module.make(2024)
    assert made == module.make(2024)
    assert made == read_problems(str(SAMPLE))


def test_real_gsm8k_file() -> None:
    path = benchmark("gsm8k_test.jsonl")
    problems = read_problems(str(path), preset="gsm8k", limit=8)
    assert len(problems) == 8
    assert problems[0].id == "gsm8k_test-0"
    assert problems[0].answer == "18"  # Janet's ducks
    for p in problems:
        assert p.answer and "<<" not in p.solution and "####" in p.solution


def test_real_math500_file() -> None:
    path = benchmark("math500.jsonl")
    report = ReadReport()
    problems = read_problems(str(path), preset="math", report=report)
    assert len(problems) == report.rows == 500 and report.skipped == 0
    assert problems[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert {"subject", "level", "unique_id"} <= problems[0].metadata.keys()
    # The given answer agrees with the solution's last boxed answer for nearly every row.
    agree = sum(derive_answer(p.solution) == p.answer for p in problems)
    assert agree >= 450
