"""Collation (tokens, masks, behavior alignment, truncation, micro-batches) and FileStream."""

from __future__ import annotations

import json

import pytest
import torch

from mindgap.schemas import Behavior, RewriteOptions, SamplingParams
from mindgap.trainer.collate import Dropped, Encoded, collate, encode_example, micro_batches
from mindgap.trainer.sources import FileStream
from mindgap.trainer.testing import char_tokenizer, synthetic_examples, write_jsonl


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _example(prompt="abc", ids=(40, 41, 42, 1), logprobs=(-1.0, -2.0, -3.0, -4.0),
             source="self"):
    e = synthetic_examples(1, sources=(source,))[0]
    behavior = None if logprobs is None else Behavior(
        logprobs=list(logprobs), prompt_kind="plain", model="m",
        sampling=SamplingParams.of(RewriteOptions()))
    return e.model_copy(update={"prompt": prompt, "response_token_ids": list(ids),
                                "behavior": behavior})


def test_encode_appends_stored_response_ids(tok):
    enc = encode_example("k", _example(), tok, 100)
    assert isinstance(enc, Encoded)
    assert enc.ids == [97, 98, 99, 40, 41, 42, 1]  # no special tokens, response verbatim
    assert enc.prompt_len == 3 and enc.response_len == 4 and not enc.truncated


def test_collate_masks_and_aligns_behavior(tok):
    a = encode_example("a", _example(), tok, 100)
    b = encode_example("b", _example(prompt="xy", ids=(50, 1), logprobs=None,
                                     source="expert"), tok, 100)
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[97, 98, 99, 40, 41, 42, 1],
                                           [120, 121, 50, 1, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]
    # position i predicts token i + 1; the response is predicted from the prompt's last token
    assert batch["targets"][0].tolist()[:6] == [98, 99, 40, 41, 42, 1]
    assert batch["loss_mask"].tolist() == [[False, False, True, True, True, True, False],
                                           [False, True, True, False, False, False, False]]
    assert batch["behavior_logprobs"][0].tolist() == [0, 0, -1, -2, -3, -4, 0]
    assert batch["has_behavior"][0].tolist() == [False, False, True, True, True, True, False]
    assert not batch["has_behavior"][1].any()  # expert: no records
    assert batch["source_ids"].tolist() == [0, 2]
    masked_targets = batch["targets"][batch["loss_mask"]].tolist()
    assert masked_targets == [40, 41, 42, 1, 50, 1]


def test_truncation_rule(tok):
    enc = encode_example("k", _example(), tok, 5)  # prompt 3 + room for 2 response tokens
    assert enc.ids == [97, 98, 99, 40, 41] and enc.truncated
    assert enc.behavior == [-1.0, -2.0]
    dropped = encode_example("k", _example(), tok, 3)  # the prompt fills max_length
    assert isinstance(dropped, Dropped) and dropped.reason == "prompt_too_long"
    bad = encode_example("k", _example(logprobs=(-1.0,)), tok, 100)
    assert isinstance(bad, Dropped) and bad.reason == "behavior_mismatch"
    empty = encode_example("k", _example(ids=(), logprobs=()), tok, 100)
    assert isinstance(empty, Dropped) and empty.reason == "empty_response"


def test_micro_batches_respect_the_token_budget(tok):
    examples = synthetic_examples(20, seed=1)
    encoded = [encode_example(str(i), e, tok, 64) for i, e in enumerate(examples)]
    for budget in (1, 30, 64, 200, 10_000):
        mbs = micro_batches(encoded, budget)
        assert sorted(e.key for mb in mbs for e in mb) == sorted(e.key for e in encoded)
        for mb in mbs:
            assert len(mb) == 1 or len(mb) * max(len(e.ids) for e in mb) <= budget
    assert len(micro_batches(encoded, 10_000)) == 1


def _ids(batch):
    return [e.id for _, e in batch]


def test_file_source_epochs_shuffle_and_resume(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", synthetic_examples(10))
    src = FileStream(path, seed=7, epochs=2)
    seen = []
    while batch := src.next_batch(4):
        seen.append(_ids(batch))
        src.commit([k for k, _ in batch])
    flat = [i for b in seen for i in b]
    assert [len(b) for b in seen] == [4, 4, 4, 4, 4]  # batches run across the epoch boundary
    assert sorted(flat[:10]) == sorted(flat[10:]) == sorted(f"ex-{i}" for i in range(10))
    assert flat[:10] != flat[10:]  # another order each epoch
    assert flat[:10] != [f"ex-{i}" for i in range(10)]
    again = FileStream(path, seed=7, epochs=2)
    assert _ids(again.next_batch(20)) == flat  # deterministic

    # Save after 2 committed batches with a third read but not committed: resume re-serves it.
    src = FileStream(path, seed=7, epochs=2)
    for _ in range(2):
        b = src.next_batch(4)
        src.commit([k for k, _ in b])
    src.next_batch(4)
    state = json.loads(json.dumps(src.state()))
    assert (state["epoch"], state["offset"]) == (0, 8)
    resumed = FileStream(path, seed=7, epochs=2)
    resumed.load_state(state)
    rest = []
    while batch := resumed.next_batch(4):
        rest.extend(_ids(batch))
    assert flat[:8] + rest == flat
    other = FileStream(write_jsonl(tmp_path / "o.jsonl", synthetic_examples(9)), seed=7)
    with pytest.raises(ValueError, match="other data"):
        other.load_state(state)


def test_file_source_shards_by_rank(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", synthetic_examples(12))
    whole = FileStream(path, seed=1)
    ranks = [FileStream(path, seed=1, rank=r, world_size=3) for r in range(3)]
    for _ in range(3):  # 18 examples: into the second epoch
        batch = _ids(whole.next_batch(6))
        served = [r.next_batch(6) for r in ranks]
        shares = [_ids(b) for b in served]
        assert sorted(i for share in shares for i in share) == sorted(batch)
        assert shares[1] == batch[1::3]
        for r, b in zip(ranks, served, strict=True):
            r.commit([k for k, _ in b])  # each rank commits its own share
        whole.commit([])
        # every rank holds the same global position
        assert len({json.dumps(r.state()) for r in ranks}) == 1
    assert (ranks[0].state()["epoch"], ranks[0].state()["offset"]) == (1, 6)


def test_file_source_commit_only_after_all_keys(tmp_path):
    src = FileStream.from_examples(synthetic_examples(6), shuffle=False)
    a = src.next_batch(2)
    b = src.next_batch(2)
    src.commit([a[0][0]])
    assert src.state()["offset"] == 0
    src.commit([a[1][0]])
    assert src.state()["offset"] == 2
    src.commit([k for k, _ in b])
    assert src.state()["offset"] == 4


def test_file_source_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    examples = synthetic_examples(5)
    table = pa.Table.from_pylist([e.model_dump(mode="json") for e in examples])
    pq.write_table(table, tmp_path / "d.parquet")
    src = FileStream(tmp_path / "d.parquet", shuffle=False)
    got = [e for _, e in src.next_batch(5)]
    assert got == examples
    assert torch.is_tensor(torch.tensor(got[0].response_token_ids))
