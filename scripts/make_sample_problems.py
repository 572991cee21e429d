"""Write mindgap/samples/problems.jsonl: 32 arithmetic word problems made up by this script.

Deterministic (seeded). Each problem has a short GSM8K-style worked solution ending in
``#### n`` and the ``answer`` field, in the ``mindgap`` preset format (id, question, solution,
answer). Every equation ``a op b = c`` in a solution is re-evaluated and the final answer is
checked against the one computed independently, so the sample cannot ship a wrong answer.

    .venv/bin/python scripts/make_sample_problems.py [--seed 2024] [--out PATH]
"""

from __future__ import annotations

import argparse
import ast
import operator
import random
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from mindgap.datasets import derive_answer, read_problems, write_jsonl  # noqa: E402
from mindgap.schemas import Problem  # noqa: E402

COUNT = 32
DEFAULT_OUT = ROOT / "mindgap" / "samples" / "problems.jsonl"
NAMES = ["Ava", "Ben", "Chloe", "Diego", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jonah",
         "Kira", "Liam", "Maya", "Noah", "Olga", "Priya", "Quinn", "Rosa", "Sam", "Tariq"]

Made = tuple[str, list[str], int]
"""A question, the lines of its worked solution (without the #### line), the answer."""


def apples(rng: random.Random) -> Made:
    name = rng.choice(NAMES)
    have, bags, per_bag = rng.randint(5, 20), rng.randint(2, 6), rng.randint(3, 8)
    bought = bags * per_bag
    give = rng.randint(2, have + bought - 1)
    answer = have + bought - give
    question = (f"{name} has {have} apples. {name} buys {bags} bags with {per_bag} apples in "
                f"each bag, then gives {give} apples to friends. How many apples does {name} "
                "have now?")
    lines = [f"{name} buys {bags} * {per_bag} = {bought} apples.",
             f"Then {name} has {have} + {bought} = {have + bought} apples.",
             f"After giving some away, {name} has {have + bought} - {give} = {answer} apples."]
    return question, lines, answer


def tickets(rng: random.Random) -> Made:
    adult_price, child_price = rng.randint(8, 15), rng.randint(3, 7)
    adults, children = rng.randint(1, 4), rng.randint(1, 5)
    adult_cost, child_cost = adults * adult_price, children * child_price
    answer = adult_cost + child_cost
    question = (f"Museum tickets cost ${adult_price} for an adult and ${child_price} for a "
                f"child. A family buys {adults} adult tickets and {children} child tickets. "
                "How many dollars do they pay in total?")
    lines = [f"The adult tickets cost {adults} * {adult_price} = ${adult_cost}.",
             f"The child tickets cost {children} * {child_price} = ${child_cost}.",
             f"In total they pay {adult_cost} + {child_cost} = ${answer}."]
    return question, lines, answer


def trains(rng: random.Random) -> Made:
    speed1, hours1 = rng.choice([40, 50, 60, 70, 80]), rng.randint(2, 4)
    speed2, hours2 = rng.choice([30, 45, 55, 90]), rng.randint(1, 3)
    leg1, leg2 = speed1 * hours1, speed2 * hours2
    answer = leg1 + leg2
    question = (f"A train travels at {speed1} km per hour for {hours1} hours, then at "
                f"{speed2} km per hour for {hours2} more hours. How many kilometers does the "
                "train travel in all?")
    lines = [f"First it travels {speed1} * {hours1} = {leg1} km.",
             f"Then it travels {speed2} * {hours2} = {leg2} km.",
             f"Altogether it travels {leg1} + {leg2} = {answer} km."]
    return question, lines, answer


def savings(rng: random.Random) -> Made:
    name = rng.choice(NAMES)
    weekly, weeks = rng.randint(5, 25), rng.randint(4, 12)
    saved = weekly * weeks
    spent = rng.randint(10, saved - 5)
    answer = saved - spent
    question = (f"{name} saves ${weekly} every week for {weeks} weeks, then spends ${spent} on "
                f"a gift. How many dollars does {name} have left?")
    lines = [f"{name} saves {weekly} * {weeks} = ${saved}.",
             f"After buying the gift, {name} has {saved} - {spent} = ${answer} left."]
    return question, lines, answer


def recipes(rng: random.Random) -> Made:
    cups, cookies = rng.randint(2, 5), rng.choice([12, 16, 20, 24])
    batches = rng.randint(2, 6)
    wanted = cookies * batches
    answer = cups * batches
    question = (f"A cookie recipe uses {cups} cups of flour to make {cookies} cookies. How many "
                f"cups of flour are needed to make {wanted} cookies?")
    lines = [f"{wanted} cookies are {wanted} / {cookies} = {batches} batches.",
             f"The batches need {batches} * {cups} = {answer} cups of flour."]
    return question, lines, answer


def books(rng: random.Random) -> Made:
    name = rng.choice(NAMES)
    per_day, days_left, days_done = rng.randint(10, 30), rng.randint(3, 10), rng.randint(1, 5)
    read = per_day * days_done
    remaining = per_day * days_left
    pages = read + remaining
    answer = days_left
    question = (f"{name}'s book has {pages} pages. {name} has already read {read} pages and "
                f"reads {per_day} pages a day. How many more days will it take {name} to "
                "finish the book?")
    lines = [f"There are {pages} - {read} = {remaining} pages left.",
             f"At {per_day} pages a day that takes {remaining} / {per_day} = {answer} days."]
    return question, lines, answer


def pencils(rng: random.Random) -> Made:
    students, each = rng.randint(3, 8), rng.randint(2, 6)
    per_box = rng.choice([6, 8, 10, 12])
    total = students * each
    while total % per_box:  # whole boxes only
        each += 1
        total = students * each
    boxes = total // per_box
    answer = each
    question = (f"A teacher opens {boxes} boxes of pencils with {per_box} pencils in each box "
                f"and shares them equally among {students} students. How many pencils does "
                "each student get?")
    lines = [f"There are {boxes} * {per_box} = {total} pencils.",
             f"Each student gets {total} / {students} = {answer} pencils."]
    return question, lines, answer


def garden(rng: random.Random) -> Made:
    name = rng.choice(NAMES)
    rows, per_row = rng.randint(3, 9), rng.randint(4, 12)
    planted = rows * per_row
    eaten = rng.randint(1, planted // 3)
    answer = planted - eaten
    question = (f"{name} plants {rows} rows of lettuce with {per_row} plants in each row. "
                f"Rabbits eat {eaten} of the plants. How many lettuce plants are left?")
    lines = [f"{name} plants {rows} * {per_row} = {planted} plants.",
             f"After the rabbits, {planted} - {eaten} = {answer} plants are left."]
    return question, lines, answer


def bakery(rng: random.Random) -> Made:
    muffins, muffin_price = rng.randint(10, 40), rng.randint(2, 4)
    loaves, loaf_price = rng.randint(5, 20), rng.randint(3, 6)
    muffin_sales, loaf_sales = muffins * muffin_price, loaves * loaf_price
    sales = muffin_sales + loaf_sales
    costs = rng.randint(10, sales - 10)
    answer = sales - costs
    question = (f"A bakery sells {muffins} muffins at ${muffin_price} each and {loaves} loaves "
                f"of bread at ${loaf_price} each. The ingredients cost ${costs}. How many "
                "dollars of profit does the bakery make?")
    lines = [f"The muffins bring in {muffins} * {muffin_price} = ${muffin_sales}.",
             f"The bread brings in {loaves} * {loaf_price} = ${loaf_sales}.",
             f"Sales are {muffin_sales} + {loaf_sales} = ${sales}.",
             f"The profit is {sales} - {costs} = ${answer}."]
    return question, lines, answer


def bus(rng: random.Random) -> Made:
    start = rng.randint(15, 40)
    off1, on1 = rng.randint(2, 10), rng.randint(1, 12)
    after1 = start - off1 + on1
    off2 = rng.randint(1, after1 - 1)
    answer = after1 - off2
    question = (f"A bus leaves with {start} passengers. At the first stop {off1} people get off "
                f"and {on1} get on. At the second stop {off2} people get off. How many "
                "passengers are on the bus now?")
    lines = [f"After {off1} get off there are {start} - {off1} = {start - off1} passengers.",
             f"After {on1} get on there are {start - off1} + {on1} = {after1} passengers.",
             f"After the second stop there are {after1} - {off2} = {answer} passengers."]
    return question, lines, answer


TEMPLATES: list[tuple[str, Callable[[random.Random], Made]]] = [
    ("apples", apples), ("tickets", tickets), ("trains", trains), ("savings", savings),
    ("recipes", recipes), ("books", books), ("pencils", pencils), ("garden", garden),
    ("bakery", bakery), ("bus", bus),
]

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}
_EQUATION = re.compile(r"(\d+(?:\s*[-+*/]\s*\d+)+)\s*=\s*(\d+)")


def _evaluate(expression: str) -> Fraction:
    """Exact value of an arithmetic expression of integers and + - * /."""

    def walk(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError(f"unsupported expression: {expression}")

    return walk(ast.parse(expression, mode="eval").body)


def check(question: str, solution: str, answer: int) -> None:
    """Assert every equation in the solution holds and the solution ends in ``#### answer``."""
    assert answer > 0, (question, answer)
    equations = _EQUATION.findall(solution.replace("$", ""))
    assert equations, solution
    for expression, result in equations:
        assert _evaluate(expression) == int(result), f"{expression} != {result} in {solution!r}"
    last_line_value = int(equations[-1][1])
    assert last_line_value == answer, (solution, answer)
    assert solution.endswith(f"#### {answer}"), solution
    assert derive_answer(solution) == str(answer), solution


def make(seed: int, count: int = COUNT) -> list[Problem]:
    """``count`` problems, cycling through the templates, deterministically from ``seed``."""
    rng = random.Random(seed)
    problems: list[Problem] = []
    seen: set[str] = set()
    index = 0
    while len(problems) < count:
        template, build = TEMPLATES[index % len(TEMPLATES)]
        index += 1
        question, lines, answer = build(rng)
        if question in seen:
            continue
        seen.add(question)
        solution = "\n".join([*lines, f"#### {answer}"])
        check(question, solution, answer)
        problems.append(Problem(id=f"sample-{len(problems):03d}", question=question,
                                solution=solution, answer=str(answer),
                                metadata={"template": template}))
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
