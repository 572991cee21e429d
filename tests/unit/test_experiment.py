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
    assert "online" in yaml.safe_load((ROOT / "configs" / name).read_text())
    if name == "experiment-cpu.yaml":
        online, = (arm for arm in config.arms if arm.mode == "online")
        assert (online.name, online.data, online.loss) == ("is-online", "rewritten", "is")
        assert config.online.publish_every * 2 <= config.training["max_steps"]


@pytest.mark.parametrize(("values", "message"), [
    ({"train": {"benchmarks": "asdiv,nope", "limit": 2}}, "train.benchmarks: Value error, "
     "unknown benchmark 'nope'"),
    ({"training": {"loss": "sft"}}, "training: Value error, training: loss is set per arm"),
    ({"arms": [{"name": "a", "data": "expert", "loss": "sft"},
               {"name": "a", "data": "rewritten", "loss": "dft"}]}, "used twice"),
    ({"baseline": "nope"}, "baseline: no arm named 'nope'"),
    ({"arms": [{"name": "x", "data": "model", "loss": "sft"}]}, "arms.0.data"),
    ({"trian": {}}, "trian: Extra inputs are not permitted"),
    ({"arms": [{"name": "x", "data": "expert", "loss": "is", "mode": "online"}],
      "baseline": "x"}, "arms.0: Value error, arm x: mode online rewrites the training "
     "problems while it trains, so it needs data 'rewritten'"),
    ({"arms": [{"name": "x", "data": "rewritten", "loss": "is", "mode": "later"}],
      "baseline": "x"}, "arms.0.mode: Input should be 'offline' or 'online'"),
    ({"arms": [{"name": "x", "data": "rewritten", "loss": "is", "mode": "online"}],
      "baseline": "x"}, "online arms need training.global_batch"),
    ({"training": {"publish-every": 2}}, "training: publish_every is set per arm"),
    ({"training": {"max_staleness": 2}}, "training: max_staleness is set per arm"),
    ({"online": {"publish_every": 0}}, "online.publish_every: Input should be greater than"),
    ({"online": {"max_ahead": 3}}, "online.max_ahead: Extra inputs are not permitted"),
    ({"online": {"prefix": "a*"}}, "online.prefix: String should match pattern"),
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


def test_online_options_default_to_the_queue_settings(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    monkeypatch.setenv("MINDGAP_QUEUE_REDIS_URL", "redis://elsewhere:6380/2")
    config = _config(tmp_path, training={"global_batch": 4}, baseline="x",
                     arms=[{"name": "x", "data": "rewritten", "loss": "is", "mode": "online"}])
    assert config.online.redis_url == "redis://elsewhere:6380/2"
    assert (config.online.publish_every, config.online.max_staleness) == (2, 1)
    assert config.online.high_water(4) == 4 * config.online.max_ahead_steps
    assert config.arms[0].mode == "online"
    assert _config(tmp_path).arms[0].mode == "offline"


def test_online_prefix_is_the_work_dirs_and_the_runs(tmp_path: Path) -> None:
    from mindgap.rewriter.experiment_online import queue_prefix

    one, other = _config(tmp_path / "a"), _config(tmp_path / "b")
    assert queue_prefix(one, "r-s0") == queue_prefix(one, "r-s0")
    assert queue_prefix(one, "r-s0").startswith("mindgap-experiment:")
    assert queue_prefix(one, "r-s0").endswith(":r-s0")
    assert queue_prefix(one, "r-s0") != queue_prefix(other, "r-s0")


def test_work_dir_refuses_other_settings_but_not_report_ones(tmp_path: Path) -> None:
    check_work_dir(_config(tmp_path))
    check_work_dir(_config(tmp_path, name="renamed", resamples=500))  # the report only
    check_work_dir(_config(tmp_path, online={"redis_url": "redis://other:6379/1"}))
    with pytest.raises(ConfigMismatchError, match=r"other settings \(online\)"):
        check_work_dir(_config(tmp_path, online={"publish_every": 3}))
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
    from mindgap.rewriter.experiment_config import Arm, OnlineOptions, ProblemSplit

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Experiments"):]
    section = section[:section.index("\n### ", 5)]
    for model in (ExperimentConfig, ProblemSplit, Arm, OnlineOptions):
        for name in model.model_fields:
            assert f"`{name}`" in section, f"{model.__name__}.{name} is not in the README"


def test_training_gap_is_the_batch_log_prob_under_the_trained_weights() -> None:
    from mindgap.rewriter.experiment_report import training_gap

    gap = training_gap({"ce": [2.0, 1.0, math.nan, 1.5], "w_var": [0.1, 0.3, math.nan]})
    assert gap["train_logprob_mean"] == pytest.approx(-1.5)
    assert gap["train_logprob_sd"] == pytest.approx(math.sqrt(0.5 / 3))
    assert (gap["train_logprob_first"], gap["train_logprob_last"]) == (-2.0, -1.5)
    assert gap["w_var_mean"] == pytest.approx(0.2)
    assert set(training_gap({"ce": [], "w_var": []}).values()) == {None}


def _online_config(tmp_path: Path) -> ExperimentConfig:
    return _config(tmp_path, training={"global_batch": 2}, online={"publish_every": 1},
                   arms=[{"name": "sft-expert", "data": "expert", "loss": "sft"},
                         {"name": "is-rewritten", "data": "rewritten", "loss": "is"},
                         {"name": "is-online", "data": "rewritten", "loss": "is",
                          "mode": "online"}])


def test_online_metrics_read_the_runs_files_and_the_trainers_keys_when_there(
        tmp_path: Path) -> None:
    from mindgap.rewriter.experiment import Layout, write_json
    from mindgap.rewriter.experiment_report import online_metrics
    from mindgap.trainer.testing import write_jsonl

    config = _online_config(tmp_path)
    layout = Layout(config)
    layout.arm("is-online-s0").mkdir(parents=True)
    layout.data.mkdir(parents=True)
    write_jsonl(layout.online_data("is-online-s0"), synthetic_examples(3))
    write_json(layout.online_summary("is-online-s0"), {
        "job": {"status": "completed"}, "versions": [{"version": 1, "step": 1}]})
    rows = [{"step": 1, "examples_self": 1, "examples_expert": 1,
             "example_ids": ["ex-0", "ex-2"]},
            {"step": 2, "examples_guided": 1, "example_ids": ["ex-1"]}]
    before = online_metrics(config, "is-online-s0", rows)  # the trainer's keys not yet there
    assert before["versions"] == 1 and before["job"] == {"status": "completed"}
    assert before["produced"] == {"self": 1, "guided": 1, "expert": 1}
    assert before["trained"] == {"self": 1, "guided": 1, "expert": 1}
    assert before["staleness"] == {}
    assert before["staleness_max"] is None and before["stale_dropped"] is None
    rows[0].update(staleness_mean=0.0, staleness_max=0, stale_dropped=0, stale_requeued=0)
    rows[1].update(staleness_mean=None, staleness_max=1, stale_dropped=2, stale_requeued=1,
                   stale_trained=1)
    during = online_metrics(config, "is-online-s0", rows)  # the steps' counts so far
    assert (during["staleness_mean"], during["staleness_max"]) == (0.0, 1)
    assert (during["stale_dropped"], during["stale_requeued"], during["stale_trained"]) == \
        (2, 1, 1)
    write_json(layout.arm("is-online-s0") / "summary.json", {"staleness": {
        "histogram": {"0": 5, "1": 2}, "stale_dropped": 3, "stale_requeued": 3,
        "stale_trained": 0}})
    after = online_metrics(config, "is-online-s0", rows)  # the trainer's summary: the run's
    assert after["staleness"] == {"0": 5, "1": 2}
    assert (after["stale_dropped"], after["stale_requeued"]) == (3, 3)


def _synthetic_metrics(seed_noise: bool) -> dict:
    """A report's metrics as ``collect`` makes them: an offline and an online run."""
    from mindgap.rewriter.experiment_report import training_gap

    interval = {"diff": 0.02, "low": -0.03, "high": 0.07, "problems": 50}
    measured = {"drift_kl": 0.01, "drift_expert_logprob": -1.0, "no_answer": 0.2,
                "accuracy": {"asdiv": 0.1, "average": 0.1}, "mean_tokens": 40.0}

    def run(data: str, loss: str, mode: str, ce: list[float], online: dict | None) -> dict:
        curves = {"step": [1.0, 2.0], "loss": [1.0, 0.8], "ce": ce, "grad_norm": [1.0, 2.0],
                  "w_mean": [1.0, 1.0], "w_var": [0.2, 0.4], "ess_frac": [0.9, 0.9],
                  "response_tokens": [10.0, 12.0]}
        return {"data": data, "loss": loss, "mode": mode, "seed": 0, "final_loss": 0.8,
                "grad_norm_mean": 1.5, "grad_norm_sd": 0.5, "loss_jitter": 0.2,
                "response_tokens": 22, **training_gap(curves), "online": online,
                "curves": curves, **measured, "vs_start": interval, "vs_baseline": interval}

    online = {"job": {"status": "completed"}, "versions": 2, "staleness": {"0": 3, "1": 1},
              "staleness_mean": 0.25, "staleness_max": 1, "stale_dropped": 1,
              "stale_requeued": 1, "stale_trained": 0,
              "trained": {"self": 1, "guided": 3, "expert": 0},
              "produced": {"self": 1, "guided": 4, "expert": 0}}
    data = {"examples": 4, "sources": {"expert": 4}, "mean_logprob": -2.0, "ratio_mean": 1.0,
            "ratio_var": 0.1, "ratio_ess": 0.9, "ratio_clipped": 0.0, "tokens": 40}
    return {"name": "synthetic", "baseline": "sft-expert-s0", "step_seconds": {},
            "data": {"expert": data, "rewritten": data},
            "runs": {"start": {"data": None, "loss": None, "mode": None, **measured},
                     "sft-expert-s0": {**run("expert", "sft", "offline", [2.5, 2.0], None),
                                       "vs_baseline": None},
                     "is-rewritten-s0": run("rewritten", "is", "offline", [2.0, 1.8], None),
                     "is-online-s0": run("rewritten", "is", "online", [1.2, 1.0], online)},
            "seed_noise": {"sft-expert": interval} if seed_noise else {},
            "eval": {"n": 4, "benchmarks": ["asdiv"], "problems_per_benchmark": 4}}


@pytest.mark.parametrize("seed_noise", [True, False])
def test_report_compares_offline_and_online_runs(tmp_path: Path, seed_noise: bool) -> None:
    from mindgap.rewriter.experiment_plots import plot_online
    from mindgap.rewriter.experiment_tables import report_markdown

    metrics = _synthetic_metrics(seed_noise)
    text = report_markdown(metrics, _online_config(tmp_path))
    section = text[text.index("## Offline and online"):].split("\n## ")[0]
    assert "| is-online-s0 | online | rewritten | is | -1.100 ± 0.100 | -1.200 → -1.000 " \
           "| 0.3000 | 2 | 0: 3, 1: 1 (trainer: mean 0.25, max 1) | 1 / 1 / 0 " \
           "| 1 / 3 / 0 (1 / 4 / 0; job completed) |" in section
    assert "| is-rewritten-s0 | offline | rewritten | is | -1.900 ± 0.100 | -2.000 → -1.800 " \
           "| 0.3000 | – | – | – | – |" in section
    assert "- is-online-s0: batch log-prob at training -1.100 vs is-rewritten-s0 -1.900; " \
           "held-out vs sft-expert-s0 +2.0 [-3.0, +7.0] points" in section
    assert ("Seed noise, for scale: sft-expert +2.0 [-3.0, +7.0]" if seed_noise
            else "Seed noise is not measured") in section
    assert "![offline and online](online.png)" in section
    assert "Online arms (is-online) have the training problems rewritten" in text
    assert "| is-online-s0 | rewritten | is | online |" in text  # the runs table
    png = plot_online(metrics, tmp_path / "online.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_watched_child_is_stopped_when_the_watch_fails(tmp_path: Path) -> None:
    import sys
    import time

    from mindgap.rewriter.experiment import Runner

    def watch() -> None:
        raise RuntimeError("the worker exited")

    runner = Runner(_config(tmp_path), echo=lambda line: None)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="the worker exited"):
        runner.mindgap("sleeper", ["-c", "import time; time.sleep(60)"], [sys.executable],
                       watch=watch)
    assert time.monotonic() - start < 30  # stopped, not waited for
    assert (tmp_path / "work" / "logs" / "sleeper.log").exists()
    with pytest.raises(RuntimeError, match=r"sleeper: .* exited with 3; see .*sleeper\.log"):
        runner.mindgap("sleeper", ["-c", "raise SystemExit(3)"], [sys.executable])


def test_online_runs_to_do_need_redis_before_any_step(tmp_path: Path) -> None:
    from mindgap.rewriter.experiment_online import check_redis

    check_redis(_config(tmp_path, online={"redis_url": "redis://user:pw@127.0.0.1:1/0"}))
    config = _config(tmp_path, training={"global_batch": 2}, baseline="x",
                     online={"redis_url": "redis://user:pw@127.0.0.1:1/0"},
                     arms=[{"name": "x", "data": "rewritten", "loss": "is", "mode": "online"}])
    with pytest.raises(RuntimeError, match=r"x-s0 is an online run: it needs the Redis of "
                       r"online.redis_url \(redis://user:\*\*\*@127.0.0.1:1/0\)"):
        check_redis(config)
