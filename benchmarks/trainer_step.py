"""Trainer step time and peak memory for the sft, dft and is losses on the same batches.

Each run is ``mindgap.trainer.loop.train`` itself (collation, forward, loss, backward,
clipping, fused AdamW, metrics), in a fresh process, on a randomly initialised Llama and the
same synthetic aligned examples (``mindgap.trainer.testing``: a third each self, guided and
expert; behavior log-probs on the model responses), in file order, one micro-batch per step.
Step times are the loop's own ``step_s`` after ``--warmup`` steps; the runs go round-robin
(``--rounds``, order rotated each round) so drift hits every loss alike; the table shows
medians.

- ``--size small`` (the CPU default): hidden 256, 4 layers, vocabulary 8192, 8 examples x 256
  tokens per step, fp32.
- ``--size 0.5b`` (the GPU default): Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads,
  2 KV heads, vocabulary 151936, tied embeddings; 494M parameters), 16 examples x 1024
  tokens, bf16 autocast; also tokens/s and MFU (model FLOPs: 6 x matmul parameters + the
  attention term, per token, against the GPU's dense bf16 peak).

Two more variants in the same run: ``is+lora`` (the is loss with LoRA adapters, rank 16 on
every linear layer, through peft) and ``trl-sft``, the peer: the same model, examples and
settings (batch, AdamW fused, lr, grad clip) through TRL's ``SFTTrainer`` (its own loss,
plain cross-entropy; step times from a callback around each optimizer step). The ratio
mindgap ``sft`` / ``trl-sft`` of median step time and of peak memory is reported.

Targets: the weighting of dft and is costs at most 5% over sft (median step time); mindgap's
sft step takes at most 0.9x TRL's.

Run: ``.venv/bin/python benchmarks/trainer_step.py [--device cuda] [--rounds 3]``.
Results: ``benchmarks/results/trainer_step_<cpu|cuda>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

from _machine import RESULTS, format_table, machine_info, verdict

from mindgap.trainer.config import LossKind

PROJECT_ROOT = Path(__file__).resolve().parents[1]

LOSSES: tuple[str, ...] = get_args(LossKind)
LORA, PEER = "is+lora", "trl-sft"
VARIANTS: tuple[str, ...] = (*LOSSES, LORA, PEER)
TARGET_OVERHEAD = 0.05
TARGET_PEER_RATIO = 0.9
LORA_R = 16
SIZES: dict[str, dict[str, Any]] = {
    "small": {"model": dict(vocab_size=8192, hidden_size=256, intermediate_size=688,
                            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                            tie_word_embeddings=False),
              "examples": 8, "tokens": 256},
    "0.5b": {"model": dict(vocab_size=151936, hidden_size=896, intermediate_size=4864,
                           num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                           tie_word_embeddings=True),
             "examples": 16, "tokens": 1024},
}
# Dense bf16 peak FLOP/s by GPU name (substring of torch.cuda.get_device_name()).
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
             "A10": 125e12}
PROMPT_CHARS = 32


def log(message: str) -> None:
    """Progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_model(size: str) -> Any:
    """A randomly initialised Llama of the given size (fp32 master weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**SIZES[size]["model"], max_position_embeddings=4096, pad_token_id=0,
                         eos_token_id=1, bos_token_id=1)
    return LlamaForCausalLM(config).float()


def flops_per_token(model: Any, seq_len: int) -> float:
    """Training FLOPs per token: 6 x matmul parameters (lm_head included, the embedding
    lookup not) + 12 x layers x hidden x sequence length (attention scores and values)."""
    config = model.config
    embed = config.vocab_size * config.hidden_size
    params = sum(p.numel() for p in model.parameters())
    matmul = params - embed + (embed if config.tie_word_embeddings else 0)
    return 6 * matmul + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def workload(args: argparse.Namespace) -> tuple[Any, list[Any], int, int]:
    """The model, the examples, examples per step and tokens per example of a run."""
    from mindgap.trainer.testing import synthetic_examples

    size = SIZES[args.size]
    per_step = args.examples or size["examples"]
    tokens = args.tokens or size["tokens"]
    model = build_model(args.size)
    examples = synthetic_examples(
        per_step * (args.warmup + args.steps), seed=0,
        prompt_chars=(PROMPT_CHARS, PROMPT_CHARS),
        response_tokens=(tokens - PROMPT_CHARS, tokens - PROMPT_CHARS),
        vocab=model.config.vocab_size)
    return model, examples, per_step, tokens


def mindgap_steps(variant: str, args: argparse.Namespace, model: Any, examples: list[Any],
                  per_step: int, tokens: int) -> tuple[list[float], list[int], float]:
    """``mindgap.trainer.loop.train`` on the workload: step times, input tokens, last loss."""
    from mindgap.trainer.config import TrainConfig
    from mindgap.trainer.loop import train
    from mindgap.trainer.sources import FileStream
    from mindgap.trainer.testing import char_tokenizer

    lora = {"loss": "is", "lora_r": LORA_R, "lora_alpha": 2.0 * LORA_R} if variant == LORA \
        else {"loss": variant}
    with tempfile.TemporaryDirectory(prefix="mindgap-trainer-bench-") as out:
        config = TrainConfig(
            out=out, max_steps=args.warmup + args.steps, global_batch=per_step,
            batch_tokens=per_step * tokens, max_length=tokens, lr=1e-5, device=args.device,
            progress=False, save_final=False,
            gradient_checkpointing=args.gradient_checkpointing, **lora)
        summary = train(config, model=model, tokenizer=char_tokenizer(),
                        stream=FileStream.from_examples(examples, shuffle=False))
        steps = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
    return ([s["step_s"] for s in steps], [s["input_tokens"] for s in steps],
            summary["last"]["loss"])


def trl_steps(args: argparse.Namespace, model: Any, examples: list[Any], per_step: int,
              tokens: int) -> tuple[list[float], list[int], float]:
    """The same workload through TRL's ``SFTTrainer`` (the peer)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from mindgap.trainer.testing import PAD, char_tokenizer
    from mindgap.trainer.trl_loss import TrlCollator, trl_rows

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *_: Any, **__: Any) -> None:
            self.t0 = time.perf_counter()

        def on_step_end(self, *_: Any, **__: Any) -> None:
            times.append(time.perf_counter() - self.t0)

    rows = [{k: v for k, v in r.items() if k in ("input_ids", "labels")}
            for r in trl_rows(examples, char_tokenizer(), tokens)]
    cuda = args.device == "cuda"
    with tempfile.TemporaryDirectory(prefix="mindgap-trl-bench-") as out:
        config = SFTConfig(
            output_dir=out, max_steps=args.warmup + args.steps,
            per_device_train_batch_size=per_step, learning_rate=1e-5, max_grad_norm=1.0,
            lr_scheduler_type="cosine", optim="adamw_torch_fused", save_strategy="no",
            logging_strategy="no", report_to=[], disable_tqdm=True, use_cpu=not cuda,
            bf16=cuda, gradient_checkpointing=args.gradient_checkpointing, seed=0,
            remove_unused_columns=False, dataset_kwargs={"skip_prepare_dataset": True})
        trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                             data_collator=TrlCollator(PAD), processing_class=char_tokenizer(),
                             callbacks=[Timer()])
        result = trainer.train()
    return times, [len(r["input_ids"]) * per_step for r in rows[::per_step]], \
        float(result.training_loss)


def run_one(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``warmup + steps`` steps of ``variant`` in this process; the measurements."""
    import torch

    model, examples, per_step, tokens = workload(args)
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    params = sum(p.numel() for p in model.parameters())
    if variant == PEER:
        step_s, input_tokens, final_loss = trl_steps(args, model, examples, per_step, tokens)
    else:
        step_s, input_tokens, final_loss = mindgap_steps(variant, args, model, examples,
                                                         per_step, tokens)
    result = {
        "loss": variant, "step_s": step_s[args.warmup:],
        "input_tokens": input_tokens[args.warmup:], "final_loss": final_loss,
        "params": params, "flops_per_token": flops_per_token(model, tokens),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if cuda:
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
        result["gpu"] = torch.cuda.get_device_name()
    return result


def spawn(loss: str, args: argparse.Namespace) -> dict[str, Any]:
    """``run_one`` in a fresh process (so peak memory is this variant's alone)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", loss, "--size", args.size,
           "--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if args.examples:
        cmd += ["--examples", str(args.examples)]
    if args.tokens:
        cmd += ["--tokens", str(args.tokens)]
    if args.gradient_checkpointing:
        cmd.append("--gradient-checkpointing")
    proc = subprocess.run(cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"error: the {loss} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(loss: str, runs: list[dict[str, Any]], peak_flops: float | None,
              cuda: bool) -> dict[str, Any]:
    """Medians over every measured step of every round."""
    times = [t for r in runs for t in r["step_s"]]
    tokens = [n for r in runs for n in r["input_tokens"]]
    median_s = statistics.median(times)
    tokens_per_s = statistics.median(tokens) / median_s
    mfu = (tokens_per_s * runs[0]["flops_per_token"] / peak_flops) if peak_flops else None
    memory = max(r["peak_cuda_bytes" if cuda else "peak_rss_bytes"] for r in runs)
    return {"loss": loss, "steps": len(times), "median_step_s": median_s,
            "min_step_s": min(times), "max_step_s": max(times),
            "tokens_per_step": statistics.median(tokens), "tokens_per_s": tokens_per_s,
            "mfu": mfu, "peak_memory_bytes": memory,
            "peak_memory_kind": "torch.cuda.max_memory_allocated" if cuda else "process RSS",
            "final_loss": [r["final_loss"] for r in runs]}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None,
                        help="default: cuda when available")
    parser.add_argument("--size", choices=tuple(SIZES), default=None,
                        help="default: small on CPU, 0.5b on GPU")
    parser.add_argument("--steps", type=int, default=6, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per loss, round-robin")
    parser.add_argument("--examples", type=int, default=0, help="examples per step (0: size's)")
    parser.add_argument("--tokens", type=int, default=0, help="tokens per example (0: size's)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak, for MFU (default: by GPU name)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--note", default="", help="free text stored in the JSON")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated, of {', '.join(VARIANTS)}")
    parser.add_argument("--worker", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.size is None:
        args.size = "0.5b" if args.device == "cuda" else "small"
    return args


def run_rounds(variants: list[str], args: argparse.Namespace) -> dict[str, list[dict]]:
    """Every variant ``--rounds`` times, round-robin, the order rotated each round."""
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for round_index in range(args.rounds):
        shift = round_index % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            log(f"round {round_index + 1}/{args.rounds}: {variant}")
            runs[variant].append(spawn(variant, args))
    return runs


def judge(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Overheads against sft (the losses' target), and mindgap sft against the peer."""
    rows = {r["loss"]: r for r in table}
    base = rows["sft"]["median_step_s"] if "sft" in rows else None
    for row in table:
        row["overhead_vs_sft"] = row["median_step_s"] / base - 1 if base else None
        row["pass"] = row["loss"] not in LOSSES[1:] or row["overhead_vs_sft"] <= TARGET_OVERHEAD
    if "sft" not in rows or PEER not in rows:
        return {}
    step_ratio = rows["sft"]["median_step_s"] / rows[PEER]["median_step_s"]
    memory_ratio = rows["sft"]["peak_memory_bytes"] / rows[PEER]["peak_memory_bytes"]
    return {"step_time_ratio": step_ratio, "peak_memory_ratio": memory_ratio,
            "target": TARGET_PEER_RATIO, "pass": step_ratio <= TARGET_PEER_RATIO}


def report(table: list[dict[str, Any]], peer: dict[str, Any], args: argparse.Namespace,
           runs: dict[str, list[dict]], gpu: str | None) -> None:
    """Print the table and the peer ratio."""
    size = SIZES[args.size]
    first = next(iter(runs.values()))[0]
    print(f"trainer step, {args.size} model ({first['params'] / 1e6:.1f}M parameters, "
          f"random init) on {gpu or 'CPU'}: {args.examples or size['examples']} examples x "
          f"{args.tokens or size['tokens']} tokens per step, {args.steps} measured steps x "
          f"{args.rounds} rounds per variant")
    print(format_table(
        ["variant", "steps", "median s", "min s", "max s", "tokens/s", "MFU",
         "peak memory MiB", "overhead vs sft", "target <= 5%"],
        [[r["loss"], str(r["steps"]), f"{r['median_step_s']:.3f}", f"{r['min_step_s']:.3f}",
          f"{r['max_step_s']:.3f}", f"{r['tokens_per_s']:.0f}",
          f"{r['mfu']:.1%}" if r["mfu"] is not None else "-",
          f"{r['peak_memory_bytes'] / 2**20:.0f}",
          f"{r['overhead_vs_sft']:+.1%}" if r["overhead_vs_sft"] is not None else "-",
          verdict(r["pass"]) if r["loss"] in LOSSES[1:] else "-"] for r in table]))
    if peer:
        print(f"mindgap sft / TRL SFTTrainer: step time {peer['step_time_ratio']:.2f}x "
              f"(target <= {TARGET_PEER_RATIO}x: {verdict(peer['pass'])}), peak memory "
              f"{peer['peak_memory_ratio']:.2f}x")
    print(f"peak memory: {table[0]['peak_memory_kind']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run every variant ``--rounds`` times, print the table, save the JSON."""
    args = parse_args(argv)
    if args.worker:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        print(json.dumps(run_one(args.worker, args)))
        return 0
    variants = [v for v in VARIANTS if v in args.variants.split(",")]
    info = machine_info()
    started = time.perf_counter()
    runs = run_rounds(variants, args)
    cuda = args.device == "cuda"
    gpu = next(iter(runs.values()))[0].get("gpu")
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
        (v for k, v in PEAK_BF16.items() if gpu and k in gpu), None)
    table = [summarise(v, runs[v], peak, cuda) for v in variants]
    peer = judge(table)
    report(table, peer, args, runs, gpu)
    info["load_average_at_end"] = list(os.getloadavg())
    print(f"load average (1 min) at start {info['load_average_at_start'][0]:.2f}, at end "
          f"{info['load_average_at_end'][0]:.2f}")
    out = args.out or RESULTS / f"trainer_step_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "trainer_step", "machine": info, "gpu": gpu, "peak_flops": peak,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k != "worker"} | {"model": SIZES[args.size]["model"]},
        "total_seconds": time.perf_counter() - started, "results": table, "peer": peer,
        "runs": runs, "target_overhead": TARGET_OVERHEAD,
        "pass": all(r["pass"] for r in table) and peer.get("pass", True)}, indent=2) + "\n",
        encoding="utf-8")
    print(f"json: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
