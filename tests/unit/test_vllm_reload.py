"""The in-place reload's folder check (no vLLM needed): what cannot load in place is refused
before any weight is touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mindgap.rewriter.engines.vllm_reload import check_folder

RUNNING = {"architectures": ["LlamaForCausalLM"], "hidden_size": 576, "num_hidden_layers": 30,
           "vocab_size": 49152, "tie_word_embeddings": True}


def _folder(folder: Path, weights: bool = True, **config: object) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({**RUNNING, **config}))
    if weights:
        (folder / "model.safetensors").write_bytes(b"")
    return folder


def test_a_folder_of_the_same_shape_passes(tmp_path: Path) -> None:
    check_folder(_folder(tmp_path, torch_dtype="float32"), RUNNING)


def test_no_weights_or_another_shape_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no \*\.safetensors"):
        check_folder(_folder(tmp_path / "a", weights=False), RUNNING)
    with pytest.raises(ValueError, match="hidden_size is 128, the running model's 576"):
        check_folder(_folder(tmp_path / "b", hidden_size=128), RUNNING)
