"""The trainer's policy versions: when one is due, where it goes, and a repeat publish."""

from __future__ import annotations

from pathlib import Path

import pytest

from mindgap.queue.policy import StaleVersionError
from mindgap.trainer.config import TrainConfig
from mindgap.trainer.publish import due_version, publish, publish_root
from mindgap.trainer.testing import char_tokenizer, tiny_llama


class RecordingPolicy:
    """Stands in for ``Queue.policy``: records publishes, refuses a version seen before."""

    def __init__(self) -> None:
        self.published: list[tuple[int, str, int]] = []

    def publish(self, version: int, path: str, step: int) -> None:
        if any(v >= version for v, _, _ in self.published):
            raise StaleVersionError(f"policy version {version} is not newer")
        self.published.append((version, path, step))


def _config(tmp_path: Path, **kw: object) -> TrainConfig:
    return TrainConfig(redis="redis://127.0.0.1:6379/0", out=str(tmp_path / "out"), **kw)


def test_publish_needs_redis() -> None:
    with pytest.raises(ValueError, match="publish_every needs redis"):
        TrainConfig(data=["a.jsonl"], publish_every=2)
    with pytest.raises(ValueError, match="max_staleness needs publish_every"):
        TrainConfig(redis="redis://h:6379/0", max_staleness=1)


def test_a_version_is_due_every_n_steps(tmp_path: Path) -> None:
    config = _config(tmp_path, publish_every=3)
    assert [due_version(config, s) for s in range(1, 8)] == [None, None, 1, None, None, 2, None]
    assert due_version(_config(tmp_path), 3) is None
    assert publish_root(config) == tmp_path / "out" / "policy"
    assert publish_root(_config(tmp_path, publish_every=3, publish_dir="/shared/p")) == \
        Path("/shared/p")


def test_publish_writes_the_folder_then_records_it(tmp_path: Path) -> None:
    config = _config(tmp_path, publish_every=2)
    policy = RecordingPolicy()
    model, tokenizer = tiny_llama(0), char_tokenizer()
    assert publish(policy, config, 3, model=model, tokenizer=tokenizer) == {}  # not due
    metrics = publish(policy, config, 4, model=model, tokenizer=tokenizer)
    folder = tmp_path / "out" / "policy" / "v2"
    assert metrics["policy_version"] == 2 and metrics["publish_s"] > 0
    assert (folder / "model.safetensors").exists() and (folder / "tokenizer.json").exists()
    assert not (folder.parent / "v2.tmp").exists()
    assert policy.published == [(2, str(folder.resolve()), 4)]
    # a run resumed from an older checkpoint publishes version 2 again: kept as it was
    assert publish(policy, config, 4, model=model, tokenizer=tokenizer)["policy_version"] == 2
    assert len(policy.published) == 1
