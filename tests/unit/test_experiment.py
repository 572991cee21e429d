"""The experiment's config, its problem splits, its flags and its drift measure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from mindgap.datasets import read_problems
from mindgap.options import to_flags
from mindgap.rewriter.drift import behavior_mean, drift_of
from mindgap.rewriter.eval_options import EvalOptions
from mindgap.rewriter.experiment import ConfigMismatchError, check_work_dir, write_problems
from mindgap.rewriter.experiment_config import ExperimentConfig, read_experiment_config
from mindgap.rewriter.gap import GapReport, GapStats
from mindgap.schemas import RewriteOptions
from mindgap.trainer.testing import synthetic_examples
from tests.conftest import DATA

ROOT = Path(__file__).resolve().parents[2]
SPLITS = {"train": {"benchmarks": "asdiv,svamp", "limit": 5},
          "heldout": {"benchmarks": ["asdiv", "multiarith"], "limit": 4},
          "drift": {"benchmarks": ["asdiv"], "limit": 3}}


def _config(tmp_path: Path, **extra: object) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        **SPLITS, "work_dir": str(tmp_path / "work"), "data_dir": str(DATA), **extra})


def _write(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("name", ["experiment-cpu.yaml", "experiment-gpu-7b.yaml",
                                  "experiment-gpu-1.5b.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    from mindgap.trainer.config import TrainConfig

    config = read_experiment_config(ROOT / "configs" / name)
    TrainConfig.model_validate({**config.training, "data": ["-"]})
    assert {arm.name for arm in config.arms} >= {"sft-expert", "dft-rewritten"}
    assert any(len(arm.seeds) > 1 for arm in config.arms if arm.name == "dft-rewritten")


@pytest.mark.parametrize(("values", "message"), [
    ({"train": {"benchmarks": "asdiv,nope", "limit": 2}}, "train.benchmarks: Value error, "
     "unknown benchmark 'nope'"),
    ({"training": {"loss": "sft"}}, "training: Value error, training: loss is set per arm"),
    ({"arms": [{"name": "a", "data": "expert", "loss": "sft"},
               {"name": "a", "data": "rewritten", "loss": "dft"}]}, "used twice"),
    ({"baseline": "nope"}, "baseline: no arm named 'nope'"),
    ({"arms": [{"name": "x", "data": "model", "loss": "sft"}]}, "arms.0.data"),
    ({"trian": {}}, "trian: Extra inputs are not permitted"),
])
def test_bad_config_names_its_field(tmp_path: Path, values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=r"experiment\.yaml: ") as caught:
        read_experiment_config(_write(tmp_path, {**SPLITS, **values}))
    assert message in str(caught.value)


def test_splits_are_disjoint_and_follow_each_other(tmp_path: Path) -> None:
    if not DATA.exists():
        pytest.skip(f"real data not available: {DATA} is absent (it lives in ../shared)")
    config = _config(tmp_path)
    assert write_problems(config) == {"train": 10, "heldout": 8, "drift": 3}
    data = tmp_path / "work" / "data"
    train = [p.id for p in read_problems(str(data / "train.jsonl"))]
    held = [p.id for p in read_problems(str(data / "heldout" / "asdiv.jsonl"))]
    drift = [p.id for p in read_problems(str(data / "drift_problems.jsonl"))]
    asdiv = [p.id for p in read_problems(str(DATA / "asdiv.jsonl"), preset="asdiv", limit=12)]
    assert train[:5] == asdiv[:5] and held == asdiv[5:9] and drift == asdiv[9:12]
    assert len({*train, *held, *drift}) == len(train) + len(held) + len(drift)


def test_too_few_problems_is_an_error(tmp_path: Path) -> None:
    if not DATA.exists():
        pytest.skip(f"real data not available: {DATA} is absent (it lives in ../shared)")
    config = _config(tmp_path, heldout={"benchmarks": ["aime24"], "limit": 31})
    with pytest.raises(ValueError, match="aime24: 30 problems left after the first 0"):
        write_problems(config)


def test_work_dir_refuses_other_settings_but_not_report_ones(tmp_path: Path) -> None:
    check_work_dir(_config(tmp_path))
    check_work_dir(_config(tmp_path, name="renamed", resamples=500))  # the report only
    with pytest.raises(ConfigMismatchError, match=r"other settings \(training\)"):
        check_work_dir(_config(tmp_path, training={"max_steps": 3}))
    check_work_dir(_config(tmp_path, training={"max_steps": 3}), force=True)
    saved = json.loads((tmp_path / "work" / "experiment.json").read_text())
    assert saved["training"] == {"max_steps": 3}


def test_to_flags_gives_only_what_differs_from_the_defaults() -> None:
    options = RewriteOptions(k_self=0, hide_answer=True, reject_cut=False, temperature=0.7)
    assert to_flags(options) == ["--k-self", "0", "--temperature", "0.7", "--hide-answer",
                                 "--no-reject-cut"]
    assert to_flags(EvalOptions()) == []


def _report(mean_logprob: float, ratio_mean: float) -> GapReport:
    stats = GapStats(count=2, tokens=4, mean_logprob=mean_logprob, perplexity=None,
                     ratio_mean=ratio_mean, ratio_var=0.0, ratio_max=1.0, ratio_ess=1.0,
                     ratio_clipped=0.0, behavior_abs_diff=None)
    return GapReport(model="m", clip=5.0, groups={"all": stats, "expert_solutions": stats},
                     examples=[])


def test_drift_is_the_k3_estimate_and_zero_for_the_start_model() -> None:
    examples = synthetic_examples(6, sources=("self",))
    start = behavior_mean(examples)
    assert drift_of(_report(start, 1.0), start).kl == pytest.approx(0.0)
    # tokens with log r = -1 and +1 (mean 0), r = e^-1 and e: (r - 1) - log r averages to
    # (e^-1 + e) / 2 - 1 > 0, while the mean of -log r would say 0
    ratio_mean = (math.exp(-1) + math.exp(1)) / 2
    assert drift_of(_report(start, ratio_mean), start).kl == pytest.approx(ratio_mean - 1)
    with pytest.raises(ValueError, match="no recorded log-probs"):
        behavior_mean(synthetic_examples(3, sources=("expert",)))


def test_every_config_field_is_in_the_readme() -> None:
    from mindgap.rewriter.experiment_config import Arm, ProblemSplit

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Experiments"):]
    section = section[:section.index("\n### ", 5)]
    for model in (ExperimentConfig, ProblemSplit, Arm):
        for name in model.model_fields:
            assert f"`{name}`" in section, f"{model.__name__}.{name} is not in the README"
