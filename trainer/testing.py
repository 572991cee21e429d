"""Small fixtures for the trainer's tests and examples: a tiny random Llama with a
character-level tokenizer (vocabulary 128), and synthetic aligned examples.

Nothing here is downloaded: the model is randomly initialised from a seed, the tokenizer is
built from the ``tokenizers`` library.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from mindgap.schemas import (
    SOURCES,
    AlignedExample,
    AttemptCounts,
    Behavior,
    RewriteOptions,
    SamplingParams,
    Source,
    Timings,
)

VOCAB = 128
PAD, EOS = 0, 1


def char_tokenizer() -> Any:
    """A fast tokenizer mapping each printable ASCII character to its code (ids < 128);
    id 0 is ``<pad>``, 1 is ``</s>``, 2 is ``<unk>``."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "</s>": EOS, "<unk>": 2}
    vocab.update({chr(i): i for i in range(32, 127)})
    vocab["\n"] = 10
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_llama(seed: int = 0, *, hidden: int = 32, layers: int = 2, heads: int = 2,
               vocab: int = VOCAB) -> torch.nn.Module:
    """A randomly initialised Llama small enough for unit tests (fp32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, max_position_embeddings=512,
                         pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).float()


def save_tiny_model(path: str | Path, seed: int = 0, **kwargs: Any) -> Path:
    """Write a tiny Llama and the character tokenizer as a ``from_pretrained`` folder."""
    path = Path(path)
    tiny_llama(seed, **kwargs).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


def synthetic_examples(n: int, *, seed: int = 0, prompt_chars: tuple[int, int] = (6, 12),
                       response_tokens: tuple[int, int] = (4, 10), vocab: int = VOCAB,
                       sources: tuple[Source, ...] = SOURCES,
                       ) -> list[AlignedExample]:
    """``n`` aligned examples with random ASCII prompts, random response ids and random
    behavior log-probs (none for ``expert``), cycling through ``sources``."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        source = sources[i % len(sources)]
        prompt = "".join(chr(rng.randint(97, 122)) for _ in range(rng.randint(*prompt_chars)))
        ids = [rng.randint(3, vocab - 1) for _ in range(rng.randint(*response_tokens))]
        behavior = None
        if source != "expert":
            behavior = Behavior(logprobs=[-rng.uniform(0.5, 6.0) for _ in ids],
                                prompt_kind="plain" if source == "self" else "guided",
                                model="tiny", sampling=SamplingParams.of(RewriteOptions()))
        out.append(AlignedExample(
            id=f"ex-{i}", problem_id=f"p-{i}", prompt=prompt, response="",
            response_token_ids=ids, source=source, reference_answer="0",
            expert_solution="", behavior=behavior, attempts=AttemptCounts(),
            timings=Timings()))
    return out


def write_jsonl(path: str | Path, examples: list[AlignedExample]) -> Path:
    path = Path(path)
    path.write_text("".join(e.model_dump_json() + "\n" for e in examples))
    return path
