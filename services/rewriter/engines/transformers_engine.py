"""The transformers engine: batched, left-padded sampling on CPU or GPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mindgap.rewriter.engines.base import Engine, Sample, ScoreRow
from mindgap.rewriter.model_store import DEFAULT_MODEL, resolve_model


def token_logprobs(model: Any, rows: Sequence[ScoreRow], device: Any,
                   pad_id: int = 0) -> list[list[float]]:
    """``log_softmax(z / T)`` of each row's tokens from one right-padded forward pass."""
    import torch

    sequences = [row.prompt_ids + row.token_ids for row in rows]
    width = max(len(s) for s in sequences)
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in sequences], device=device)
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences],
                        device=device)
    out = []
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits
        for index, row in enumerate(rows):
            start = len(row.prompt_ids) - 1
            z = logits[index, start : start + len(row.token_ids)].float() / row.temperature
            target = torch.tensor(row.token_ids, device=device).unsqueeze(-1)
            scored = torch.log_softmax(z, dim=-1).gather(-1, target).squeeze(-1)
            out.append([float(x) for x in scored.tolist()])
    return out


class TransformersEngine(Engine):
    """Sample with ``model.generate``; log-probs come from the processed (warped) scores."""

    def __init__(self, model: str | None = None, device: str | None = None,
                 dtype: str = "float32", batch_size: int = 16, policy_version: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = resolve_model(model)
        self.model_name = model or DEFAULT_MODEL
        self.policy_version = policy_version
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
        self.model.to(self.device).eval()
        eos = self.model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self._eos = {i for i in [*eos_ids, self.tokenizer.eos_token_id] if i is not None}
        self.eos_token_id = self.tokenizer.eos_token_id

    def load_policy(self, path: str, version: int) -> None:
        """Swap in the model of the folder ``path`` (same tokenizer), as ``version``."""
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=self.model.dtype)
        self.model = model.to(self.device).eval()
        self.policy_version = version

    def _generation_config(self, temperature: float, top_p: float, max_tokens: int) -> Any:
        from transformers import GenerationConfig

        sample = temperature > 0
        return GenerationConfig(
            do_sample=sample, temperature=temperature if sample else None,
            top_p=top_p if sample else None, top_k=0, max_new_tokens=max_tokens,
            eos_token_id=sorted(self._eos), pad_token_id=self.tokenizer.pad_token_id,
            output_scores=True, return_dict_in_generate=True,
        )

    def _trim(self, ids: list[int], logprobs: list[float]) -> tuple[list[int], list[float], str]:
        for i, token in enumerate(ids):
            if token in self._eos:
                return ids[: i + 1], logprobs[: i + 1], "stop"
        return ids, logprobs, "length"

    def generate(self, prompts: list[str], n: int, temperature: float, top_p: float,
                 max_tokens: int, seed: int | None = None) -> list[list[Sample]]:
        import torch

        expanded = [prompt for prompt in prompts for _ in range(n)]
        config = self._generation_config(temperature, top_p, max_tokens)
        samples: list[Sample] = []
        for start in range(0, len(expanded), self.batch_size):
            if seed is not None:
                torch.manual_seed(seed + start)
            batch = self.tokenizer(expanded[start : start + self.batch_size], return_tensors="pt",
                                   padding=True, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                out = self.model.generate(**batch, generation_config=config)
            new = out.sequences[:, batch["input_ids"].shape[1]:]
            steps = torch.stack(out.scores, dim=1).float()  # (batch, steps, vocab), warped
            logprobs = torch.log_softmax(steps, dim=-1).gather(-1, new.unsqueeze(-1)).squeeze(-1)
            for ids, lps in zip(new.tolist(), logprobs.tolist(), strict=True):
                token_ids, token_lps, reason = self._trim(ids, lps)
                text = self.tokenizer.decode(token_ids, skip_special_tokens=True)
                samples.append(Sample(text, token_ids, token_lps, reason))
        return [samples[i * n : (i + 1) * n] for i in range(len(prompts))]

    def _score_tokens(self, prompt_ids: list[int], token_ids: list[int],
                      temperature: float) -> list[float]:
        return self._score_tokens_batch([ScoreRow(prompt_ids, token_ids, temperature)])[0]

    def _score_tokens_batch(self, rows: list[ScoreRow]) -> list[list[float]]:
        """All rows in one right-padded forward pass (``score_batch``'s caller sizes it)."""
        return token_logprobs(self.model, rows, self.device, self.tokenizer.pad_token_id or 0)
