"""``mindgap experiment``: rewrite once, train every arm from the same start, measure each.

Every step is a ``mindgap`` command run as a child process (``rewrite``, ``gap``, ``train``,
``eval``), each into its own file under ``work_dir``; a step whose output is complete is
skipped, and an unfinished one is continued with that command's own resume, so a killed
experiment picks up where it stopped. Each child owns its engine and exits with it: a vLLM
engine never outlives its step. The steps, in order:

1. problems: the training, held-out and drift problems, disjoint by construction;
2. rewrite: the training problems rewritten (``rewritten.jsonl``) and as expert solutions
   only (``expert.jsonl``: ``--k-self 0 --k-guided 0``);
3. gap: both data sets scored under the start model (policy gap, importance weights);
4. drift set: the start model's own responses to the drift prompts;
5. train: every arm and seed (``mindgap train``, same steps and batch from the same start);
   an online arm's run rewrites its data meanwhile (``experiment_online``);
6. drift: the drift set scored under every trained model (KL from the start model);
7. eval: held-out accuracy (``mindgap eval``) of the start model and every trained model;
8. report: ``report.md``, PNGs and the raw metrics in ``report_dir``.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from mindgap.datasets import read_problems, write_jsonl
from mindgap.jsonl import read_models
from mindgap.options import to_flags
from mindgap.rewriter.eval_options import BenchmarkOptions
from mindgap.rewriter.experiment_config import ExperimentConfig, ProblemSplit, run_name
from mindgap.schemas import AlignedExample, Problem

START = "start"
"""The run name of the untrained start model in the evaluations and drifts."""
REPORT_ONLY = ("name", "report_dir", "baseline", "resamples")
"""Config fields that change the report only: a cached run may be re-reported with others."""
CHILD_STOP_S = 300.0
"""How long a child stopped with SIGTERM may take to finish (a batch in hand) before SIGKILL."""


class ConfigMismatchError(ValueError):
    """``work_dir`` holds the stages of another config."""


class Layout:
    """Where each stage's output lives under ``work_dir``."""

    def __init__(self, config: ExperimentConfig) -> None:
        self.root = Path(config.work_dir)
        self.data = self.root / "data"
        self.heldout = self.data / "heldout"
        self.logs = self.root / "logs"

    def dataset(self, kind: str) -> Path:
        """``expert`` or ``rewritten`` training data (aligned examples)."""
        return self.data / f"{kind}.jsonl"

    def gap(self, kind: str) -> Path:
        return self.root / "gap" / f"{kind}.json"

    def drift_set(self) -> Path:
        return self.data / "drift.jsonl"

    def drift(self, run: str) -> Path:
        return self.root / "drift" / f"{run}.json"

    def eval(self, run: str) -> Path:
        return self.root / "eval" / f"{run}.json"

    def arm(self, run: str) -> Path:
        return self.root / "arms" / run

    def timings(self) -> Path:
        """Wall seconds of each step, by label."""
        return self.root / "timings.json"

    def model(self, run: str) -> Path:
        """A trained run's model folder (``mindgap train``'s ``OUT/final``)."""
        return self.arm(run) / "final"

    def online_data(self, run: str) -> Path:
        """An online run's data: the aligned examples its worker produced (its job's results)."""
        return self.data / f"online-{run}.jsonl"

    def online_summary(self, run: str) -> Path:
        """An online run's job state and published policy versions."""
        return self.arm(run) / "online.json"

    def log(self, label: str) -> Path:
        """A step's log (a child's stdout)."""
        return self.logs / f"{label}.log"


def check_work_dir(config: ExperimentConfig, force: bool = False) -> None:
    """Record ``config`` in ``work_dir``; refuse a folder written with other settings (but
    the report's), unless ``force``."""
    layout = Layout(config)
    stamp = layout.root / "experiment.json"
    settings = config.model_dump(mode="json", exclude={**dict.fromkeys(REPORT_ONLY, True),
                                                       "online": {"redis_url"}})
    if stamp.exists() and not force:
        previous = json.loads(stamp.read_text(encoding="utf-8"))
        changed = sorted(k for k in settings.keys() | previous.keys()
                         if settings.get(k) != previous.get(k))
        if changed:
            raise ConfigMismatchError(
                f"{layout.root} holds an experiment with other settings ({', '.join(changed)}); "
                "use another work_dir, or --force to reuse its finished stages")
    layout.root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(settings, indent=1) + "\n", encoding="utf-8")


def _read(config: ExperimentConfig, split: ProblemSplit, name: str, limit: int | None
          ) -> list[Problem]:
    """The first ``limit`` problems of one part of ``split`` (a benchmark is read as
    ``mindgap eval`` reads it)."""
    if split.dataset:
        return read_problems(split.dataset, preset=split.preset or "mindgap",
                             split=split.split, limit=limit)
    benchmark, = BenchmarkOptions(benchmarks=name, data_dir=config.data_dir).resolve()
    return benchmark.read(split.split, limit)


def _take(config: ExperimentConfig, split: ProblemSplit, taken: dict[str, int]
          ) -> dict[str, list[Problem]]:
    """``split.limit`` problems of each part after the ``taken`` ones (updated)."""
    found = {}
    for name in split.names():
        start = taken.get(name, 0)
        limit = None if split.limit is None else start + split.limit
        problems = _read(config, split, name, limit)[start:]
        if split.limit is not None and len(problems) < split.limit:
            raise ValueError(f"{name}: {len(problems)} problems left after the first {start}, "
                             f"{split.limit} asked for")
        taken[name] = start + len(problems)
        found[name] = problems
    return found


def write_problems(config: ExperimentConfig) -> dict[str, int]:
    """The training, held-out and drift problems as files (disjoint: each split takes the
    problems after the earlier ones of the same file); counts by split."""
    layout = Layout(config)
    taken: dict[str, int] = {}
    train = [p for ps in _take(config, config.train, taken).values() for p in ps]
    heldout = _take(config, config.heldout, taken)
    drift = [p for ps in _take(config, config.drift, taken).values() for p in ps]
    layout.heldout.mkdir(parents=True, exist_ok=True)
    write_jsonl(layout.data / "train.jsonl", train)
    for name, problems in heldout.items():
        write_jsonl(layout.heldout / f"{name}.jsonl", problems)
    write_jsonl(layout.data / "drift_problems.jsonl", drift)
    return {"train": len(train), "heldout": sum(map(len, heldout.values())),
            "drift": len(drift)}


class Runner:
    """Runs the steps of one experiment, skipping finished ones; ``echo`` tells progress."""

    def __init__(self, config: ExperimentConfig, echo: Callable[[str], object]) -> None:
        self.config = config
        self.layout = Layout(config)
        self.echo = echo
        self.steps = 0

    def mindgap(self, label: str, args: list[str], command: list[str] | None = None,
                watch: Callable[[], None] | None = None) -> None:
        """Run ``mindgap ARGS`` (or ``command + ARGS``) as a child: stdout to
        ``logs/LABEL.log``, stderr (progress bars) shown. ``watch`` is called every second
        while it runs; what it raises stops the child (SIGTERM) and propagates."""
        command = [*(command or [sys.executable, "-m", "mindgap.cli"]), *args]
        self.steps += 1
        self.echo(f"[experiment] step {self.steps}: {label}: mindgap {' '.join(args)}")
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        start = time.monotonic()
        with self.layout.log(label).open("a", encoding="utf-8") as log:
            child = subprocess.Popen(command, stdout=log)
            try:
                while child.poll() is None:
                    try:
                        child.wait(timeout=1.0 if watch else None)
                    except subprocess.TimeoutExpired:
                        if watch:
                            watch()
            except BaseException:
                stop_child(child)
                raise
            finally:
                self.record_time(label, time.monotonic() - start)
        if child.returncode != 0:
            raise RuntimeError(f"{label}: {' '.join(command)} exited with "
                               f"{child.returncode}; see {self.layout.log(label)} "
                               "(run the experiment again to continue)")

    def record_time(self, label: str, seconds: float) -> None:
        """Add ``seconds`` to the step's wall time in ``work_dir/timings.json`` (a step
        continued after a kill adds up)."""
        path = self.layout.timings()
        timings = read_json(path) if path.exists() else {}
        timings[label] = round(timings.get(label, 0.0) + seconds, 1)
        write_json(path, timings)

    def skip(self, label: str, output: Path) -> bool:
        """Whether ``output`` is there already (the step is then skipped, and said so)."""
        if output.exists():
            self.echo(f"[experiment] {label}: cached ({output})")
            return True
        return False

    def model_args(self, run: str) -> list[str]:
        """``--model`` of a run's model (nothing for the packaged default start model)."""
        if run == START:
            return ["--model", self.config.model] if self.config.model else []
        return ["--model", str(self.layout.model(run))]

    def rewrite(self, kind: str) -> None:
        """The training problems into ``kind``'s data set (expert: no sampling at all)."""
        out = self.layout.dataset(kind)
        if self.skip(f"rewrite {kind}", out.with_name(out.name + ".done")):
            return
        options = self.config.rewrite
        engine = self.config.engine
        if kind == "expert":
            options = options.model_copy(update={"k_self": 0, "k_guided": 0})
            engine = "transformers"  # tokenizing only
        resume = ["--resume"] if out.exists() else []
        self.mindgap(f"rewrite-{kind}", [
            "rewrite", "--data", str(self.layout.data / "train.jsonl"), "--out", str(out),
            "--engine", engine, *self.model_args(START), *to_flags(options), *resume,
            *(["--samples-out", str(out.with_suffix(".samples.jsonl"))] if kind != "expert"
              else [])])
        out.with_name(out.name + ".done").touch()

    def gap(self, label: str, data: Path, run: str, out: Path) -> None:
        """``mindgap gap`` of ``data`` under ``run``'s model into ``out``."""
        if not self.skip(label, out):
            self.mindgap(label.replace(" ", "-"), ["gap", "--data", str(data),
                                                   *self.model_args(run), "--out", str(out)])

    def drift_set(self) -> None:
        """The start model's own responses to the drift prompts."""
        out = self.layout.drift_set()
        if self.skip("drift set", out):
            return
        from mindgap.rewriter.drift import sample_reference
        from mindgap.rewriter.engines import make_engine

        self.steps += 1
        self.echo(f"[experiment] step {self.steps}: drift set: sampling the start model")
        problems = read_problems(str(self.layout.data / "drift_problems.jsonl"))
        extra = {"seed": self.config.eval.seed} if self.config.engine == "vllm" else {}
        start = time.monotonic()
        with make_engine(self.config.engine, self.config.model or None, **extra) as engine:
            examples = sample_reference(engine, problems, self.config.drift_max_tokens,
                                        seed=self.config.eval.seed)
        self.record_time("drift-set", time.monotonic() - start)
        write_jsonl(out, examples)

    def train(self, run: str, data: str, loss: str, seed: int) -> None:
        """One offline arm and seed: ``mindgap train`` from the start model into ``arms/RUN``,
        continued from its last checkpoint."""
        if self.skip(f"train {run}", self.layout.model(run)):
            return
        self.launch_train(run, {"data": [str(self.layout.dataset(data))], "loss": loss,
                                "seed": seed, "resume": "latest"})

    def launch_train(self, run: str, settings: dict[str, Any],
                     watch: Callable[[], None] | None = None) -> None:
        """``mindgap train`` (or ``train_launcher``) from the start model into ``arms/RUN``
        with the shared ``training`` options and the run's ``settings``, written to
        ``arms/RUN/train.yaml``; ``watch`` as in :meth:`mindgap`."""
        folder = self.layout.arm(run)
        folder.mkdir(parents=True, exist_ok=True)
        settings = {**self.config.training, "model": self.config.model, **settings,
                    "out": str(folder)}
        config_file = folder / "train.yaml"
        config_file.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
        if self.config.train_launcher:
            self.mindgap(f"train-{run}", ["--config", str(config_file)],
                         [*shlex.split(self.config.train_launcher), "-m", "mindgap.trainer"],
                         watch=watch)
        else:
            self.mindgap(f"train-{run}", ["train", "--config", str(config_file)], watch=watch)

    def evaluate(self, run: str) -> None:
        """Held-out accuracy of ``run``'s model (``mindgap eval``, resumed when begun)."""
        out = self.layout.eval(run)
        if self.skip(f"eval {run}", out):
            return
        benchmarks = ",".join(str(self.layout.heldout / f"{name}.jsonl")
                              for name in self.config.heldout.names())
        log = out.with_suffix(".jsonl")
        self.mindgap(f"eval-{run}", [
            "eval", "--engine", self.config.engine, *self.model_args(run), "--benchmarks",
            benchmarks, "--preset", "mindgap", *to_flags(self.config.eval), "--out", str(out),
            *(["--resume"] if log.exists() else [])])

    def run(self) -> None:
        """Every step in order (finished ones skipped), then the report."""
        from mindgap.rewriter.experiment_online import check_redis, train_online
        from mindgap.rewriter.experiment_report import write_report

        check_redis(self.config)
        counts = write_problems(self.config)
        self.echo(f"[experiment] problems: {counts['train']} training, {counts['heldout']} "
                  f"held-out, {counts['drift']} drift (in {self.layout.data})")
        for kind in ("rewritten", "expert"):
            self.rewrite(kind)
            self.gap(f"gap {kind}", self.layout.dataset(kind), START, self.layout.gap(kind))
        self.drift_set()
        runs = [START]
        for arm, seed in self.config.runs():
            run = run_name(arm, seed)
            if arm.mode == "online":
                train_online(self, arm, seed)
            else:
                self.train(run, arm.data, arm.loss, seed)
            runs.append(run)
        for run in runs:
            self.gap(f"drift {run}", self.layout.drift_set(), run, self.layout.drift(run))
            self.evaluate(run)
        report = write_report(self.config)
        self.echo(f"[experiment] report: {report}")


def stop_child(child: subprocess.Popen[Any], timeout_s: float = CHILD_STOP_S) -> int:
    """Stop a child process: SIGTERM, then SIGKILL after ``timeout_s``; its exit status."""
    if child.poll() is None:
        child.terminate()
        try:
            child.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode


def copy_rewrite_summary(config: ExperimentConfig, target: Path) -> None:
    """The rewritten data's summary, next to the report."""
    from mindgap.rewriter.rewrite import summary_path

    summary = summary_path(Layout(config).dataset("rewritten"))
    if summary.exists():
        shutil.copyfile(summary, target / "rewritten.summary.json")


def read_aligned(path: Path) -> list[AlignedExample]:
    """The aligned examples of a file (a training data set, the drift set)."""
    return read_models(path, AlignedExample)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
