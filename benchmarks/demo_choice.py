"""How the packaged model does on each candidate sample problem: the data behind `make run`.

`make run` must show all three sources (self, guided, expert) on a handful of problems in a
few minutes. This measures, for every problem ``scripts/make_sample_problems.py --count N``
can write, how often SmolLM2-135M-Instruct solves it alone and with the guided prompt, with
the quality gates on, at each ``--temperatures`` value: ``--k`` samples of each kind, all in
one round (``--engine``: transformers, as `make run`, or vllm; ``--max-tokens``). It chose
the templates' order in ``scripts/sample_templates.toml``: make run's 8 problems (the
first 8) hold the three one-step templates the model can solve alone (birds, fish, ducks),
multi-step ones it solves only with the hint, and ones it solves neither way.

Run: ``.venv/bin/python benchmarks/demo_choice.py [--count 65] [--k 4]
[--temperatures 0.3 0.7] [--max-tokens 384] [--engine transformers]``.
Results: ``benchmarks/results/demo_choice.json`` (per problem and temperature: self and guided
successes out of k).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import _machine

from mindgap.rewriter.aligner import Aligner
from mindgap.rewriter.engines import make_engine
from mindgap.schemas import Problem, RewriteOptions, SampleRecord
from mindgap.verifier.pool import LocalVerifier

sys.path.insert(0, str(_machine.PROJECT_ROOT / "scripts"))
from make_sample_problems import make


def successes(records: list[SampleRecord], kind: str) -> Counter[str]:
    """Samples of ``kind`` that passed the verifier and every gate, per problem."""
    return Counter(r.problem_id for r in records
                   if r.prompt_kind == kind and r.verdict in ("kept", "correct"))


def measure(problems: list[Problem], temperature: float, k: int, max_tokens: int,
            engine: object, verifier: LocalVerifier) -> dict[str, dict[str, int]]:
    """Self and guided successes out of ``k`` per problem (guided for every problem)."""
    options = RewriteOptions(temperature=temperature, k_self=k, k_guided=0, round_size=k,
                             max_tokens=max_tokens)
    records: list[SampleRecord] = []
    Aligner(engine, verifier, options, on_samples=records.extend).align(problems)  # type: ignore[arg-type]
    guided = options.model_copy(update={"k_self": 0, "k_guided": k})
    Aligner(engine, verifier, guided, on_samples=records.extend).align(problems)  # type: ignore[arg-type]
    alone, hinted = successes(records, "plain"), successes(records, "guided")
    return {p.id: {"self": alone[p.id], "guided": hinted[p.id]} for p in problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=65)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.3, 0.7])
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--engine", choices=["transformers", "vllm"], default="transformers")
    args = parser.parse_args()
    info = _machine.machine_info()
    problems = make(args.seed, args.count)
    results: dict[str, dict[str, dict[str, int]]] = {}
    engine_options = {"seed": 0} if args.engine == "vllm" else {}
    with make_engine(args.engine, None, **engine_options) as engine, \
            LocalVerifier(workers=2) as verifier:
        for temperature in args.temperatures:
            results[str(temperature)] = measure(problems, temperature, args.k,
                                                args.max_tokens, engine, verifier)
    header = ["problem", "template", *(f"T={t} self/guided" for t in results)]
    rows = [[p.id, str(p.metadata["template"]),
             *(f"{r[p.id]['self']}/{r[p.id]['guided']} of {args.k}" for r in results.values())]
            for p in problems]
    print(_machine.format_table(header, rows))
    print(_machine.end_load(info))
    _machine.save_json(Path(_machine.RESULTS) / "demo_choice.json", {
        "machine": info, "engine": args.engine, "k": args.k, "max_tokens": args.max_tokens,
        "seed": args.seed,
        "templates": {p.id: p.metadata["template"] for p in problems}, "results": results})


if __name__ == "__main__":
    main()
