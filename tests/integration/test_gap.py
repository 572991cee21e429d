"""The policy gap with the real SmolLM2: own samples are likelier than expert text."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from mindgap.datasets import write_jsonl
from mindgap.jsonl import JsonlError
from mindgap.rewriter.gap import GROUPS, GapReport, format_gap, gap_command, measure_gap, plot_gap
from mindgap.rewriter.prompts import PromptTemplates
from mindgap.schemas import (
    AlignedExample,
    AttemptCounts,
    Behavior,
    SamplingParams,
    Source,
    Timings,
)

if TYPE_CHECKING:
    from mindgap.rewriter.engines.transformers_engine import TransformersEngine

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
pytestmark = pytest.mark.slow

# (question, hand-written expert solution, answer)
PROBLEMS = [
    ("What is 17 + 25?", "Units: 7+5=12, carry 1; tens: 1+2+1=4. So 42.\n\\boxed{42}", "42"),
    ("What is 6 times 7?", "6*7 = 6*5 + 6*2 = 30 + 12 = 42; hence \\boxed{42}", "42"),
    ("What is 100 minus 37?", "100-37: 100-30=70, 70-7=63 => \\boxed{63}", "63"),
]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared, loaded machine two threads can be many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine() -> TransformersEngine:
    from mindgap.rewriter.engines.transformers_engine import TransformersEngine

    return TransformersEngine(None, device="cpu")


def _example(engine: TransformersEngine, index: int, source: Source, response: str,
             ids: list[int], behavior: Behavior | None) -> AlignedExample:
    question, solution, answer = PROBLEMS[index]
    prompt = engine.render_chat(PromptTemplates().plain_prompt(question))
    return AlignedExample(
        id=f"p{index}:{source}", problem_id=f"p{index}", prompt=prompt, response=response,
        response_token_ids=ids, source=source, reference_answer=answer,
        expert_solution=solution, behavior=behavior, attempts=AttemptCounts(),
        timings=Timings())


@pytest.fixture(scope="module")
def examples(engine: TransformersEngine) -> list[AlignedExample]:
    """Two self examples sampled now (real behavior log-probs) and two expert fallbacks."""
    templates = PromptTemplates()
    prompts = [engine.render_chat(templates.plain_prompt(q)) for q, _, _ in PROBLEMS[:2]]
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=40, seed=3)
    outputs = engine.generate(prompts, n=1, temperature=1.0, top_p=1.0, max_tokens=40, seed=3)
    out = []
    for index, (sample,) in enumerate(outputs):
        behavior = Behavior(logprobs=sample.logprobs, prompt_kind="plain",
                            model=engine.model_name, sampling=sampling)
        out.append(_example(engine, index, "self", sample.text, sample.token_ids, behavior))
    for index in (2, 0):
        solution = PROBLEMS[index][1]
        ids = [*engine.tokenize(solution), engine.eos_token_id]
        out.append(_example(engine, index, "expert", solution, ids, None))
    return out


def test_gap_with_real_model(engine: TransformersEngine, examples: list[AlignedExample],
                             tmp_path: Path) -> None:
    report = measure_gap(engine, examples)
    print("\n" + format_gap(report))
    groups = report.groups
    self_, expert, originals = groups["self"], groups["expert"], groups["expert_solutions"]
    assert (self_.count, expert.count, originals.count, groups["all"].count) == (2, 2, 4, 4)
    assert groups["guided"].count == 0 and groups["guided"].mean_logprob is None
    assert self_.tokens == sum(len(e.response_token_ids) for e in examples[:2])

    # The gap: the model's own samples are likelier than the expert originals.
    assert self_.mean_logprob is not None and originals.mean_logprob is not None
    assert self_.mean_logprob > originals.mean_logprob
    # Same model, same prompt: scores reproduce the recorded behavior log-probs, so w ~ 1.
    assert self_.behavior_abs_diff is not None and self_.behavior_abs_diff < 1e-3
    assert self_.ratio_mean is not None and abs(self_.ratio_mean - 1) < 1e-2
    assert self_.ratio_ess is not None and self_.ratio_ess > 0.99
    # Expert tokens: q = 1, so w = p <= 1; expert kept responses equal their originals.
    assert expert.ratio_max is not None and expert.ratio_max <= 1.0
    assert expert.behavior_abs_diff is None
    for row in report.examples:
        if row.source == "expert":
            assert row.mean_logprob == pytest.approx(row.expert_mean_logprob)
    assert originals.perplexity == pytest.approx(2.718281828 ** -originals.mean_logprob)

    # The batched forward pass agrees with the engine's one-by-one score().
    single = measure_gap(engine, examples, batch_size=1)
    for name in GROUPS:
        a, b = report.groups[name].mean_logprob, single.groups[name].mean_logprob
        assert (a is None) == (b is None)
        if a is not None:
            assert a == pytest.approx(b, abs=1e-4)

    png = plot_gap(report, tmp_path / "gap.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = format_gap(report)
    for label in ("self", "guided", "expert", "all kept", "expert originals", engine.model_name):
        assert label in table
    assert GapReport.model_validate_json(report.model_dump_json()) == report


def test_gap_command_writes_outputs(examples: list[AlignedExample], tmp_path: Path) -> None:
    data = tmp_path / "aligned.jsonl"
    write_jsonl(data, examples)
    printed: list[str] = []
    report = gap_command(None, data, plot=tmp_path / "out" / "gap.png",
                         out_json=tmp_path / "out" / "gap.json", progress=False,
                         echo=printed.append)
    assert (tmp_path / "out" / "gap.png").stat().st_size > 0
    saved = json.loads((tmp_path / "out" / "gap.json").read_text(encoding="utf-8"))
    assert saved["groups"]["self"]["count"] == 2 and len(saved["examples"]) == 4
    assert "expert originals" in printed[0]
    assert report.groups["all"].count == 4
    sources = Counter(e.source for e in report.examples)
    assert printed[1].startswith(f"kept {sources['self']} own solutions, {sources['guided']} "
                                 f"guided, {sources['expert']} expert; the kept responses are ")
    assert "nats/token likelier" in printed[1]  # self responses: the model's own text


def test_gap_command_names_the_bad_line(examples: list[AlignedExample], tmp_path: Path) -> None:
    data = tmp_path / "aligned.jsonl"
    write_jsonl(data, examples[:1])
    with data.open("a", encoding="utf-8") as handle:
        handle.write('{"id": "broken"}\n')
    with pytest.raises(JsonlError, match=r"aligned\.jsonl:2: field") as raised:
        gap_command(None, data, progress=False, echo=lambda line: None)
    assert isinstance(raised.value, ValueError)  # ``mindgap gap`` prints it as an error
