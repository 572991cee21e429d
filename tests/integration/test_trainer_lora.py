"""LoRA through peft on a tiny random Llama: every loss lowers the loss, checkpoints hold the
adapter only, the adapter reloads (and resumes), the merged model equals the adapted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mindgap.trainer.config import TrainConfig
from mindgap.trainer.loop import evaluate, train
from mindgap.trainer.testing import (
    char_tokenizer,
    save_tiny_model,
    synthetic_examples,
    tiny_llama,
    write_jsonl,
)

peft = pytest.importorskip("peft")
EXAMPLES = synthetic_examples(12, seed=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("trainer-lora")
    torch.set_num_threads(1)
    model = save_tiny_model(base / "model", seed=0)
    data = write_jsonl(base / "aligned.jsonl", EXAMPLES)
    return base, model, data


def _config(setup, name: str, **kw) -> TrainConfig:
    base, model, data = setup
    values = dict(data=[str(data)], model=str(model), out=str(base / name), max_steps=8,
                  global_batch=12, batch_tokens=400, lr=3e-2, lora_r=4, lora_alpha=8,
                  progress=False)
    values.update(kw)
    return TrainConfig(**values)


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[5, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize("loss", ["sft", "dft", "is"])
def test_lora_lowers_the_loss_and_the_adapter_reloads(setup, loss):
    config = _config(setup, f"lora-{loss}", loss=loss)
    tokenizer = char_tokenizer()
    before = evaluate(tiny_llama(0), tokenizer, EXAMPLES, config)
    model = tiny_llama(0)
    summary = train(config, model=model, tokenizer=tokenizer)
    assert isinstance(model, torch.nn.Module) and summary["steps"] == 8
    final = Path(config.out) / "final"
    assert (final / "adapter_config.json").is_file()
    assert not (final / "model.safetensors").exists()  # the adapter only
    reloaded = peft.PeftModel.from_pretrained(tiny_llama(0), str(final))
    after = evaluate(reloaded, tokenizer, EXAMPLES, config)
    assert after["ce"] < before["ce"] - 0.01, (before["ce"], after["ce"])
    assert summary["checkpoint_sizes"]["weights_bytes_per_param"] < 1.0  # adapters are small


def test_merged_saving_and_resume(setup):
    merged = _config(setup, "lora-merged", lora_save="merged", max_steps=4)
    train(merged)
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(Path(merged.out) / "final")
    adapter = Path(merged.out) / "checkpoints" / "step-00000004" / "model"
    adapted = peft.PeftModel.from_pretrained(tiny_llama(0), str(adapter))
    assert torch.allclose(_logits(plain), _logits(adapted), atol=1e-5)

    part = _config(setup, "lora-resumed", max_steps=4, stop_after=2)
    train(part)
    train(part.model_copy(update={"stop_after": None, "resume": "latest"}))
    whole = _config(setup, "lora-whole", max_steps=4)
    train(whole)
    a = peft.PeftModel.from_pretrained(tiny_llama(0), str(Path(whole.out) / "final"))
    b = peft.PeftModel.from_pretrained(tiny_llama(0), str(Path(part.out) / "final"))
    assert torch.equal(_logits(a), _logits(b))
