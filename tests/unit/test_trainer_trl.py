"""mindgap's loss inside TRL's SFTTrainer equals mindgap's own on the same batch."""

from __future__ import annotations

import pytest
import torch

from mindgap.trainer.collate import Encoded, collate, encode_example
from mindgap.trainer.config import TrainConfig
from mindgap.trainer.loop import _forward_loss
from mindgap.trainer.testing import PAD, char_tokenizer, synthetic_examples, tiny_llama

pytest.importorskip("trl")

from mindgap.trainer.trl_loss import (
    MindgapSFTTrainer,
    TrlCollator,
    mindgap_loss,
    trl_rows,
)

EXAMPLES = synthetic_examples(9, seed=3)


def _mindgap(model: torch.nn.Module, kind: str, max_length: int) -> torch.Tensor:
    tok = char_tokenizer()
    encoded = [e for i, x in enumerate(EXAMPLES)
               if isinstance(e := encode_example(str(i), x, tok, max_length), Encoded)]
    n = sum(e.response_len for e in encoded)
    loss, _ = _forward_loss(model, collate(encoded, PAD), kind, n, 5.0, None,
                            torch.device("cpu"))
    return loss.detach()


@pytest.mark.parametrize("kind", ["sft", "dft", "is"])
def test_the_trl_loss_equals_mindgaps(kind):
    model = tiny_llama(0)
    batch = TrlCollator(PAD)(trl_rows(EXAMPLES, char_tokenizer(), max_length=14))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ours = _mindgap(model, kind, 14)
    assert abs(float(mindgap_loss(logits, batch, kind).detach()) - float(ours)) < 1e-6
    assert bool((batch["has_behavior"].sum(1) > 0).any()) and float(ours) > 0


def test_the_sft_trainer_subclass_computes_the_same_loss(tmp_path):
    from datasets import Dataset
    from trl import SFTConfig

    model = tiny_llama(0)
    rows = trl_rows(EXAMPLES, char_tokenizer())
    args = SFTConfig(output_dir=str(tmp_path), report_to=[], max_steps=1,
                     per_device_train_batch_size=len(rows), remove_unused_columns=False,
                     dataset_kwargs={"skip_prepare_dataset": True}, use_cpu=True)
    trainer = MindgapSFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                data_collator=TrlCollator(PAD),
                                processing_class=char_tokenizer(), loss_kind="is")
    batch = TrlCollator(PAD)(rows)
    got = trainer.compute_loss(model, batch)
    assert abs(float(got.detach()) - float(_mindgap(model, "is", TrainConfig().max_length))) < 1e-6
    trainer.train()  # one optimizer step through TRL's loop
    assert trainer.state.global_step == 1
