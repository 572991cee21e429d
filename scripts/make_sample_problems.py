"""Write mindgap/samples/problems.jsonl: 32 arithmetic word problems made up by this script.

The templates are data, in scripts/sample_templates.toml. Deterministic (seeded). Each
problem has a short GSM8K-style worked solution ending in ``#### n`` and the ``answer`` field,
in the ``mindgap`` preset format (id, question, solution, answer). Every equation
``a op b = c`` in a solution is re-evaluated and the final answer is checked against the one
computed independently, so the sample cannot ship a wrong answer.

    .venv/bin/python scripts/make_sample_problems.py [--seed 2024] [--out PATH]
"""

from __future__ import annotations

import argparse
import ast
import math
import operator
import random
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from mindgap.datasets import derive_answer, read_problems, write_jsonl
from mindgap.schemas import Problem
from mindgap.verifier.arithmetic import calculations

ROOT = Path(__file__).resolve().parents[1]

COUNT = 32
DEFAULT_OUT = ROOT / "mindgap" / "samples" / "problems.jsonl"
TEMPLATES_FILE = Path(__file__).with_name("sample_templates.toml")
NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jonah",
         "Kira", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]


class Template(NamedTuple):
    """A kind of word problem (one ``[[template]]`` of ``sample_templates.toml``): how its
    numbers are drawn, its question and worked solution."""

    name: str
    values: str
    """Assignments ``name = expression`` (a line or ``;`` apart), run in order, so the random
    draws happen in the order written: integers, ``+ - * //``, ``randint(a, b)``,
    ``choice([...])``, ``gcd(a, b)``, ``NAMES`` and earlier names; ``answer`` is the answer."""
    question: str
    """The question; ``{name}`` placeholders take the values."""
    lines: list[str]
    """The lines of the worked solution, without the ``####`` line."""


TEMPLATES = [Template(**fields) for fields in
             tomllib.loads(TEMPLATES_FILE.read_text(encoding="utf-8"))["template"]]

_OPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv}


def _evaluate(node: ast.AST, names: dict[str, Any], calls: dict[str, Callable[..., Any]]) -> Any:
    """The value of a template's expression: integers, names, lists, ``+ - * / //``, unary
    minus and calls of ``calls``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        return names[node.id]
    if isinstance(node, ast.List):
        return [_evaluate(item, names, calls) for item in node.elts]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand, names, calls)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_evaluate(node.left, names, calls),
                                   _evaluate(node.right, names, calls))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in calls:
        return calls[node.func.id](*(_evaluate(arg, names, calls) for arg in node.args))
    raise ValueError(f"unsupported expression: {ast.unparse(node)}")


def build(template: Template, rng: random.Random) -> tuple[str, list[str], int]:
    """A question, the lines of its worked solution (without the #### line) and the answer."""
    values: dict[str, Any] = {"NAMES": NAMES}
    calls = {"randint": rng.randint, "choice": rng.choice, "gcd": math.gcd}
    for statement in ast.parse(template.values).body:
        assert isinstance(statement, ast.Assign) and isinstance(statement.targets[0], ast.Name)
        values[statement.targets[0].id] = _evaluate(statement.value, values, calls)
    return (template.question.format(**values),
            [line.format(**values) for line in template.lines], values["answer"])


def check(question: str, solution: str, answer: int) -> None:
    """Assert every calculation in the solution holds (read as the rewriter's quality gate
    reads responses) and the solution ends in ``#### answer``."""
    assert answer > 0, (question, answer)
    shown = calculations(solution)
    assert shown, solution
    for calculation in shown:
        assert calculation.first_error() is None, (calculation.first_error(), solution)
    assert shown[-1].values[-1] == answer, (solution, answer)
    assert solution.endswith(f"#### {answer}"), solution
    assert derive_answer(solution) == str(answer), solution


def make(seed: int, count: int = COUNT) -> list[Problem]:
    """``count`` problems, cycling through the templates, deterministically from ``seed``."""
    rng = random.Random(seed)
    problems: list[Problem] = []
    seen: set[str] = set()
    index = 0
    while len(problems) < count:
        template = TEMPLATES[index % len(TEMPLATES)]
        index += 1
        question, lines, answer = build(template, rng)
        if question in seen:
            continue
        seen.add(question)
        solution = "\n".join([*lines, f"#### {answer}"])
        check(question, solution, answer)
        problems.append(Problem(id=f"sample-{len(problems):03d}", question=question,
                                solution=solution, answer=str(answer),
                                metadata={"template": template.name}))
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    problems = make(args.seed)
    write_jsonl(args.out, problems)
    assert read_problems(str(args.out)) == problems  # round trip through the mindgap preset
    print(f"wrote {len(problems)} problems to {args.out}")


if __name__ == "__main__":
    main()
