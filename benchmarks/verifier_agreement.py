"""Verifier agreement: mindgap's verdicts against the data's own answers and Math-Verify's.

Pairs, from ``../shared/data/benchmarks`` (OlympiadBench, MATH-500, Minerva):

- ``as_shipped``: the data's own solution against its answer (MATH-500 ``solution`` vs
  ``answer``; Minerva ``solution`` vs its last ``\\boxed{}``; OlympiadBench ``solution`` with
  the preset's stated answer vs ``final_answer``, multi-answer and interval problems included);
- the solution (boxes unwrapped) followed by a final statement in one of the forms real
  models use: ``boxes`` (every item of a multi-item answer in its own ``\\boxed{}``),
  ``solution_is`` ("Therefore the solution is $A$."), ``answer_display`` ("Answer: $$A$$"),
  ``is_the_answer`` ("Hence $A$ is the answer."), ``final_sentence`` ("Final Answer: The
  final answer is $A$. I hope it is correct.");
- each of those against the next row's different answer (``negative``: not equal).

mindgap runs through ``LocalVerifier`` (sandboxed, default timeout); Math-Verify runs
directly in this process's main thread (its ``signal.alarm`` timeouts need it), with its
default extraction configs and timeouts. Every disagreement is listed and classified:
against the data's label, and, where the two verifiers differ, ``ours-right`` or
``theirs-right`` (the data's label decides, unless ``OVERRIDES`` corrects it by hand).

Run: ``.venv/bin/python benchmarks/verifier_agreement.py [--limit N]``; results go to
``benchmarks/results/verifier_agreement.json``.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import _machine

from mindgap.answers import last_boxed, unbox
from mindgap.datasets import read_problems
from mindgap.jsonl import json_lines
from mindgap.schemas import VerifyRequest, VerifyResult
from mindgap.verifier.pool import LocalVerifier

DEFAULT_OUTPUT = _machine.RESULTS / "verifier_agreement.json"
TARGET_DATA = 0.995
TARGET_MATH_VERIFY = 0.99
_THOUSANDS = re.compile(r"^\\?\$?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_LATEX_COMMA = re.compile(r"\{,\}\s*|,\\!\s*")
_DOLLAR = re.compile(r"(?<!\\)\$")

FORMS: dict[str, Callable[[str], str]] = {
    "solution_is": lambda a: f"Therefore the solution is ${a}$.",
    "answer_display": lambda a: f"Answer: $${a}$$",
    "is_the_answer": lambda a: f"Hence ${a}$ is the answer.",
    "final_sentence": lambda a: f"Final Answer: The final answer is ${a}$. I hope it is correct.",
}
"""Final statements appended to a solution (``boxes`` and ``as_shipped`` are built apart)."""

OVERRIDES: dict[str, tuple[bool, str]] = {
    "math500:22:negative": (True, "the next different answer is 'x=5', the same as '5'"),
}
"""``dataset:row:negative`` (every form's pair against that row's next different answer) ->
(the right verdict, why), where the data's label is wrong: found by reviewing every
disagreement."""


@dataclass(frozen=True)
class Pair:
    """One (response, reference) pair and the verdict the data implies."""

    id: str
    dataset: str
    form: str
    response: str
    reference: str
    expected: bool




def items(answer: str) -> list[str]:
    """The items of a list answer (top-level commas; ``\\{...\\}`` unwrapped), else [answer]."""
    text = answer.strip()
    if text.startswith("\\{") and text.endswith("\\}"):
        text = text[2:-2]
    if _THOUSANDS.match(_LATEX_COMMA.sub(",", text)):
        return [answer]
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return [item for item in out if item] if len(out) > 1 else [answer]


def rows(data: Path, name: str, preset: str, limit: int | None) -> list[tuple[str, str, str]]:
    """``(shipped solution, body, answer)`` per row: the solution as the preset composes it,
    the working with its boxes unwrapped, and the answer as the data set means it."""
    path = data / name
    raw = [row for _, row in json_lines(path)][:limit]
    problems = read_problems(str(path), preset=preset, limit=limit)
    out = []
    for row, problem in zip(raw, problems, strict=True):
        solution = row["solution"]
        body = "\n\n".join(solution) if isinstance(solution, list) else solution
        answer = problem.answer or last_boxed(problem.solution) or ""
        out.append((problem.solution, unbox(body), answer))
    return out


def pairs_for(dataset: str, table: list[tuple[str, str, str]]) -> list[Pair]:
    """Every form of every row, and each against the next row's different answer."""
    answers = [answer for _, _, answer in table]
    out: list[Pair] = []
    for i, (shipped, body, answer) in enumerate(table):
        other = next((answers[(i + k) % len(answers)] for k in range(1, len(answers))
                      if answers[(i + k) % len(answers)].strip() != answer.strip()), None)
        responses = {"as_shipped": shipped}
        parts = items(answer)
        if len(parts) > 1:
            boxes = [f"$\\boxed{{{part}}}$" for part in parts]
            responses["boxes"] = (f"{body}\n\nSo the answers are {', '.join(boxes[:-1])} "
                                  f"and {boxes[-1]}.")
        for form, statement in FORMS.items():  # (a few Minerva answers hold "$ $")
            responses[form] = f"{body}\n\n{statement(_DOLLAR.sub('', answer))}"
        for form, response in responses.items():
            out.append(Pair(f"{dataset}:{i}:{form}", dataset, form, response, answer, True))
            if other is not None:
                out.append(Pair(f"{dataset}:{i}:{form}:negative", dataset, form + ":negative",
                                response, other, False))
    return out


def run_ours(pairs: Sequence[Pair]) -> tuple[list[VerifyResult], float]:
    """mindgap's verdicts through the sandboxed pool, and the seconds it took."""
    with LocalVerifier() as pool:
        start = time.perf_counter()
        results = pool.verify_batch([VerifyRequest(response=p.response, reference=p.reference)
                                     for p in pairs])
        return results, time.perf_counter() - start


def run_math_verify(pairs: Sequence[Pair]) -> tuple[list[bool], float]:
    """Math-Verify called directly (main thread), library defaults, as a user would."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    start = time.perf_counter()
    verdicts = []
    for pair in pairs:
        reference = pair.reference if "$" in pair.reference else f"${pair.reference}$"
        try:
            verdicts.append(bool(verify(parse(reference), parse(pair.response))))
        except Exception:  # Math-Verify swallows most errors; count any that escape as False
            verdicts.append(False)
    return verdicts, time.perf_counter() - start


def truth(pair: Pair) -> tuple[bool, str | None]:
    """The right verdict: the data's, unless corrected by hand (with the reason)."""
    dataset, row, *_ = pair.id.split(":")
    key = f"{dataset}:{row}:negative"
    if not pair.expected and key in OVERRIDES:
        return OVERRIDES[key]
    return pair.expected, None


def _entry(pair: Pair, ours: VerifyResult, theirs: bool) -> dict[str, Any]:
    right, note = truth(pair)
    return {"id": pair.id, "expected_by_data": pair.expected, "right": right, "note": note,
            "ours": ours.correct, "ours_reason": ours.reason.value, "ours_detail": ours.detail,
            "extracted": ours.extracted, "math_verify": theirs, "reference": pair.reference,
            "response_tail": pair.response[-240:]}


def disagreements(pairs: Sequence[Pair], ours: Sequence[VerifyResult],
                  theirs: Sequence[bool]) -> dict[str, list[dict[str, Any]]]:
    """Pairs where we differ from the data's label, and where we differ from Math-Verify
    (each classified ``ours-right`` / ``theirs-right``)."""
    with_data, with_mv = [], []
    for pair, result, mv in zip(pairs, ours, theirs, strict=True):
        entry = _entry(pair, result, mv)
        if result.correct != pair.expected:
            entry["class"] = "data-wrong" if entry["right"] == result.correct else "ours-wrong"
            with_data.append(entry)
        if result.correct != mv:
            with_mv.append({**entry, "class": "ours-right" if result.correct == entry["right"]
                            else "theirs-right"})
    return {"with_data": with_data, "with_math_verify": with_mv}


def summary(pairs: Sequence[Pair], ours: Sequence[VerifyResult],
            theirs: Sequence[bool], key: Callable[[Pair], str]) -> dict[str, dict[str, Any]]:
    """Per group: pairs, agreement with the data's label and with Math-Verify, and both
    verifiers' accuracy against the right verdict."""
    groups: dict[str, Counter[str]] = {}
    for pair, result, mv in zip(pairs, ours, theirs, strict=True):
        count = groups.setdefault(key(pair), Counter())
        right, _ = truth(pair)
        count.update(pairs=1, data=result.correct == pair.expected, mv=result.correct == mv,
                     ours_right=result.correct == right, mv_right=mv == right)
    return {name: {"pairs": c["pairs"], "agree_with_data": c["data"] / c["pairs"],
                   "agree_with_math_verify": c["mv"] / c["pairs"],
                   "ours_accuracy": c["ours_right"] / c["pairs"],
                   "math_verify_accuracy": c["mv_right"] / c["pairs"]}
            for name, c in sorted(groups.items())}


def table(groups: dict[str, dict[str, Any]]) -> str:
    """The summary as a plain table."""
    return _machine.format_table(
        ["group", "pairs", "= data", "= math-verify", "ours right", "math-verify right"],
        [[name, str(g["pairs"]), f"{g['agree_with_data']:.2%}",
          f"{g['agree_with_math_verify']:.2%}", f"{g['ours_accuracy']:.2%}",
          f"{g['math_verify_accuracy']:.2%}"] for name, g in groups.items()])


DATASETS = (("olympiadbench", "olympiadbench.jsonl", "olympiadbench"),
            ("math500", "math500.jsonl", "math"), ("minerva", "minerva_math.jsonl", "minerva"))


def main(argv: Sequence[str] | None = None) -> int:
    """Build the pairs, run both verifiers, print and save the agreement; exit 1 with
    ``--strict`` when a target is missed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=_machine.DEFAULT_DATA_DIR)
    parser.add_argument("--limit", type=int, default=None, help="rows per data set")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    info = _machine.machine_info()
    pairs = [pair for dataset, name, preset in DATASETS
             for pair in pairs_for(dataset, rows(args.data_dir, name, preset, args.limit))]
    ours, ours_s = run_ours(pairs)
    theirs, theirs_s = run_math_verify(pairs)
    overall = summary(pairs, ours, theirs, lambda p: "all")["all"]
    by_dataset = summary(pairs, ours, theirs, lambda p: p.dataset)
    by_form = summary(pairs, ours, theirs, lambda p: f"{p.dataset}/{p.form}")
    diffs = disagreements(pairs, ours, theirs)
    checks = {"agree_with_data": overall["agree_with_data"] >= TARGET_DATA,
              "agree_with_math_verify": overall["agree_with_math_verify"] >= TARGET_MATH_VERIFY}
    print(table({"all": overall, **by_dataset}), table(by_form), sep="\n\n")
    for kind, entries in diffs.items():
        classes = dict(Counter(e["class"] for e in entries))
        print(f"\ndisagreements {kind}: {len(entries)} {classes}")
        for e in entries:
            print(f"  {e['id']} [{e['class']}] ours={e['ours']} mv={e['math_verify']} "
                  f"extracted={e['extracted']!r} ref={e['reference']!r} ({e['ours_detail']})")
    print(_machine.end_load(info))
    _machine.save_json(args.output, {
        "benchmark": "verifier_agreement", "machine": info,
        "data": {"dir": str(args.data_dir), "limit": args.limit,
                 "datasets": [name for _, name, _ in DATASETS]},
        "forms": ["as_shipped", "boxes", *FORMS], "overrides": {
            key: {"right": right, "why": why} for key, (right, why) in OVERRIDES.items()},
        "targets": {"agree_with_data_min": TARGET_DATA,
                    "agree_with_math_verify_min": TARGET_MATH_VERIFY},
        "seconds": {"mindgap_pool": ours_s, "math_verify_direct": theirs_s},
        "overall": overall, "by_dataset": by_dataset, "by_form": by_form,
        "checks": {name: _machine.verdict(ok) for name, ok in checks.items()},
        "disagreements": diffs, "example_pair": asdict(pairs[0]) if pairs else None,
    })
    return 1 if args.strict and not all(checks.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
