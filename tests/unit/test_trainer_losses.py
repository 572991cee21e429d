"""The token-level losses of DESIGN.md on a tiny random Llama and on a 1-layer model."""

from __future__ import annotations

import math

import pytest
import torch

from mindgap.trainer.collate import collate, encode_example
from mindgap.trainer.losses import (
    LossStats,
    loss_from_logits,
    response_logprobs,
    token_loss,
    token_weights,
)
from mindgap.trainer.testing import char_tokenizer, synthetic_examples, tiny_llama

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def batch() -> dict[str, torch.Tensor]:
    tok = char_tokenizer()
    examples = synthetic_examples(8, seed=3)
    encoded = [encode_example(str(i), e, tok, 64) for i, e in enumerate(examples)]
    return collate(encoded, tok.pad_token_id)


def _loss_and_grads(model: torch.nn.Module, batch: dict[str, torch.Tensor], kind: str,
                    num_tokens: float | None = None, **kwargs):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    n = num_tokens if num_tokens is not None else float(batch["loss_mask"].sum())
    kwargs.setdefault("clip", 5.0)
    loss, stats = loss_from_logits(logits, batch["targets"], batch["loss_mask"], kind, n,
                                   source_ids=batch["source_ids"], **kwargs)
    loss.backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters()
             if p.grad is not None}
    return loss.detach(), stats, grads


def _assert_grads_close(a, b, atol=1e-7, rtol=1e-5):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=atol, rtol=rtol, msg=name)


def _on_policy_logprobs(model, batch):
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits
        return response_logprobs(logits, batch["targets"], batch["loss_mask"])


def test_is_equals_sft_on_policy(batch):
    model = tiny_llama(1)
    q = _on_policy_logprobs(model, batch)  # q = p: the weight is exactly 1
    has = batch["loss_mask"].clone()
    sft, _, g_sft = _loss_and_grads(model, batch, "sft")
    is_, stats, g_is = _loss_and_grads(model, batch, "is", behavior_logprobs=q,
                                       has_behavior=has)
    torch.testing.assert_close(is_, sft)
    _assert_grads_close(g_is, g_sft)
    summary = stats.summary()
    assert summary["w_mean"] == pytest.approx(1.0, abs=1e-5)
    assert summary["ess_frac"] == pytest.approx(1.0, abs=1e-5)
    assert summary["ce"] == pytest.approx(float(sft), rel=1e-5)


def test_is_equals_dft_without_behavior(batch):
    model = tiny_llama(2)
    no_behavior = torch.zeros_like(batch["loss_mask"])
    dft, dstats, g_dft = _loss_and_grads(model, batch, "dft")
    is_, istats, g_is = _loss_and_grads(model, batch, "is",
                                        behavior_logprobs=batch["behavior_logprobs"],
                                        has_behavior=no_behavior)
    torch.testing.assert_close(is_, dft)
    _assert_grads_close(g_is, g_dft)
    assert istats.summary()["w_mean"] == pytest.approx(dstats.summary()["w_mean"])
    # Expert rows of a real batch have no records: their weights are p, whatever the cap.
    _, _, g_none = _loss_and_grads(model, batch, "is")  # no behavior tensor at all
    _assert_grads_close(g_none, g_dft)


def test_ratio_truncated_at_c(batch):
    model = tiny_llama(3)
    mask = batch["loss_mask"]
    tiny_q = torch.full(mask.shape, -50.0)  # q ~ e^-50: p / q is huge
    sft, _, g_sft = _loss_and_grads(model, batch, "sft")
    for cap in (5.0, 2.0):
        is_, stats, g_is = _loss_and_grads(model, batch, "is", behavior_logprobs=tiny_q,
                                           has_behavior=mask, clip=cap)
        torch.testing.assert_close(is_, cap * sft)
        _assert_grads_close(g_is, {k: cap * v for k, v in g_sft.items()})
        s = stats.summary()
        assert s["w_max"] == pytest.approx(cap)
        assert s["w_mean"] == pytest.approx(cap)


def test_token_weights_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.9, 0.1]]))
    q = torch.log(torch.tensor([[0.25, 0.01, 0.9, 0.5]]))
    has = torch.tensor([[True, True, True, False]])
    torch.testing.assert_close(token_weights(logp, "sft", clip=5.0), torch.ones(1, 4))
    torch.testing.assert_close(token_weights(logp, "dft", clip=5.0),
                               torch.tensor([[0.5, 0.2, 0.9, 0.1]]))
    # 0.5/0.25 = 2; 0.2/0.01 = 20 -> C = 5; 0.9/0.9 = 1; no record -> p = 0.1
    torch.testing.assert_close(
        token_weights(logp, "is", behavior_logprobs=q, has_behavior=has, clip=5.0),
        torch.tensor([[2.0, 5.0, 1.0, 0.1]]))
    with pytest.raises(ValueError):
        token_weights(logp, "ppo", clip=5.0)  # type: ignore[arg-type]


def test_prompt_tokens_get_no_gradient(batch):
    model = tiny_llama(4)
    _, _, grads = _loss_and_grads(model, batch, "is",
                                  behavior_logprobs=batch["behavior_logprobs"],
                                  has_behavior=batch["has_behavior"])
    # Change every prompt (and padding) target: nothing may change.
    perturbed = dict(batch)
    targets = batch["targets"].clone()
    outside = ~batch["loss_mask"]
    targets[outside] = (targets[outside] + 17) % 128
    perturbed["targets"] = targets
    _, _, grads2 = _loss_and_grads(model, perturbed, "is",
                                   behavior_logprobs=batch["behavior_logprobs"] + 3 * outside,
                                   has_behavior=batch["has_behavior"])
    _assert_grads_close(grads, grads2, atol=0, rtol=0)
    # The mask covers exactly the response tokens of each row.
    for r in range(batch["input_ids"].shape[0]):
        n = int(batch["attention_mask"][r].sum())
        masked = batch["loss_mask"][r].nonzero().flatten().tolist()
        assert masked[-1] == n - 2  # the last position predicts nothing
        assert all(not m for m in batch["loss_mask"][r, n - 1:].tolist())


@pytest.mark.parametrize("kind", ["sft", "dft", "is"])
def test_gradient_matches_hand_computation(kind):
    """One linear layer: z_t = W h_t; d/dW of sum_t w_t * -log softmax(z_t)[y_t] / N is
    sum_t w_t (softmax(z_t) - onehot(y_t)) h_t^T / N with w_t a constant."""
    torch.manual_seed(0)
    vocab, dim, length = 7, 5, 6
    h = torch.randn(1, length, dim, dtype=torch.float64)
    weight = torch.randn(vocab, dim, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, vocab, (1, length))
    mask = torch.tensor([[False, False, True, True, True, True]])
    has = torch.tensor([[False, False, True, True, False, True]])
    q = torch.log(torch.tensor([[1.0, 1.0, 0.05, 0.6, 1.0, 0.001]], dtype=torch.float64))
    num_tokens = 10.0  # a global count larger than this batch's 4 tokens
    logits = h @ weight.T
    loss, _ = loss_from_logits(logits, targets, mask, kind, num_tokens,
                               behavior_logprobs=q, has_behavior=has, clip=5.0)
    loss.backward()

    with torch.no_grad():
        probs = torch.softmax(h @ weight.T, dim=-1)[0]
        expected = torch.zeros(vocab, dim, dtype=torch.float64)
        value = 0.0
        for t in range(length):
            if not mask[0, t]:
                continue
            p = float(probs[t, targets[0, t]])
            if kind == "sft":
                w = 1.0
            elif kind == "dft" or not has[0, t]:
                w = p
            else:
                w = min(p / math.exp(float(q[0, t])), 5.0)
            onehot = torch.zeros(vocab, dtype=torch.float64)
            onehot[targets[0, t]] = 1.0
            expected += w * torch.outer(probs[t] - onehot, h[0, t]) / num_tokens
            value += -w * math.log(p) / num_tokens
    assert loss.item() == pytest.approx(value, rel=1e-6)
    torch.testing.assert_close(weight.grad, expected, rtol=1e-5, atol=1e-10)


@pytest.mark.parametrize("kind", ["sft", "is"])
def test_global_normalisation_independent_of_split(kind):
    """1 micro-batch of 8 and 4 micro-batches of 2 give the same accumulated gradient."""
    tok = char_tokenizer()
    examples = synthetic_examples(8, seed=5)
    encoded = [encode_example(str(i), e, tok, 64) for i, e in enumerate(examples)]
    total = float(sum(e.response_len for e in encoded))
    model = tiny_llama(6)

    def accumulate(groups):
        model.zero_grad(set_to_none=True)
        loss_total, stats = 0.0, LossStats.zeros()
        for group in groups:
            b = collate(group, tok.pad_token_id)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            loss, s = loss_from_logits(logits, b["targets"], b["loss_mask"], kind, total,
                                       behavior_logprobs=b["behavior_logprobs"],
                                       has_behavior=b["has_behavior"], clip=5.0,
                                       source_ids=b["source_ids"])
            loss.backward()
            loss_total += loss.item()
            stats = stats + s
        return loss_total, stats, {n: p.grad.clone() for n, p in model.named_parameters()}

    l1, s1, g1 = accumulate([encoded])
    l4, s4, g4 = accumulate([encoded[i:i + 2] for i in range(0, 8, 2)])
    assert l1 == pytest.approx(l4, rel=1e-5)
    _assert_grads_close(g1, g4, atol=1e-7, rtol=1e-4)
    for key, value in s1.summary().items():
        assert s4.summary()[key] == pytest.approx(value, rel=1e-5), key
    assert s1.summary()["loss"] == pytest.approx(l1, rel=1e-5)


def test_stats_by_hand():
    logp = torch.log(torch.tensor([[0.5, 0.25, 0.5], [0.8, 0.5, 0.5]]))
    mask = torch.tensor([[True, True, False], [True, True, True]])
    loss, stats = token_loss(logp, mask, "dft", 5.0, clip=5.0, source_ids=torch.tensor([0, 2]))
    s = stats.summary()
    w = [0.5, 0.25, 0.8, 0.5, 0.5]
    assert s["tokens"] == 5
    assert s["w_mean"] == pytest.approx(sum(w) / 5)
    assert s["w_max"] == pytest.approx(0.8)
    assert s["w_var"] == pytest.approx(sum(x * x for x in w) / 5 - (sum(w) / 5) ** 2)
    assert s["ess_tokens"] == pytest.approx(sum(w) ** 2 / sum(x * x for x in w))
    assert s["ess_frac"] == pytest.approx(s["ess_tokens"] / 5)
    assert s["ce"] == pytest.approx(-sum(math.log(x) for x in [0.5, 0.25, 0.8, 0.5, 0.5]) / 5)
    assert s["self/tokens"] == 2 and s["expert/tokens"] == 3
    assert "guided/tokens" not in s
    assert s["self/w_max"] == pytest.approx(0.5)
    assert s["loss"] == pytest.approx(float(loss))
