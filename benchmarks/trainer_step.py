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

Target: the weighting of dft and is costs at most 5% over sft (median step time).

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
TARGET_OVERHEAD = 0.05
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


def run_one(loss: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train ``warmup + steps`` steps with ``loss`` in this process; the measurements."""
    import torch

    from mindgap.trainer.config import TrainConfig
    from mindgap.trainer.loop import train
    from mindgap.trainer.sources import FileStream
    from mindgap.trainer.testing import char_tokenizer, synthetic_examples

    size = SIZES[args.size]
    per_step = args.examples or size["examples"]
    tokens = args.tokens or size["tokens"]
    total_steps = args.warmup + args.steps
    model = build_model(args.size)
    examples = synthetic_examples(
        per_step * total_steps, seed=0, prompt_chars=(PROMPT_CHARS, PROMPT_CHARS),
        response_tokens=(tokens - PROMPT_CHARS, tokens - PROMPT_CHARS),
        vocab=model.config.vocab_size)
    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="mindgap-trainer-bench-") as out:
        config = TrainConfig(
            out=out, loss=loss, max_steps=total_steps, global_batch=per_step,
            batch_tokens=per_step * tokens, max_length=tokens, lr=1e-5, device=args.device,
            progress=False, tensorboard=False, save_final=False,
            gradient_checkpointing=args.gradient_checkpointing)
        summary = train(config, model=model, tokenizer=char_tokenizer(),
                        stream=FileStream.from_examples(examples, shuffle=False))
        steps = [json.loads(line) for line in Path(out, "metrics.jsonl").read_text().splitlines()]
    measured = steps[args.warmup:]
    result = {
        "loss": loss, "step_s": [s["step_s"] for s in measured],
        "input_tokens": [s["input_tokens"] for s in measured],
        "response_tokens": [s["response_tokens"] for s in measured],
        "final_loss": summary["last"]["loss"],
        "params": sum(p.numel() for p in model.parameters()),
        "flops_per_token": flops_per_token(model, tokens),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if cuda:
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
        result["gpu"] = torch.cuda.get_device_name()
    return result


def spawn(loss: str, args: argparse.Namespace) -> dict[str, Any]:
    """``run_one`` in a fresh process (so peak memory is this loss's alone)."""
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
    parser.add_argument("--worker", choices=LOSSES, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.size is None:
        args.size = "0.5b" if args.device == "cuda" else "small"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every loss ``--rounds`` times, print the table, save the JSON."""
    args = parse_args(argv)
    if args.worker:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        print(json.dumps(run_one(args.worker, args)))
        return 0
    info = machine_info()
    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {loss: [] for loss in LOSSES}
    for round_index in range(args.rounds):
        order = LOSSES[round_index % 3:] + LOSSES[:round_index % 3]
        for loss in order:
            log(f"round {round_index + 1}/{args.rounds}: {loss}")
            runs[loss].append(spawn(loss, args))
    cuda = args.device == "cuda"
    gpu = runs["sft"][0].get("gpu")
    peak = args.peak_tflops * 1e12 if args.peak_tflops else next(
        (v for k, v in PEAK_BF16.items() if gpu and k in gpu), None)
    table = [summarise(loss, runs[loss], peak, cuda) for loss in LOSSES]
    base = table[0]["median_step_s"]
    for row in table:
        row["overhead_vs_sft"] = row["median_step_s"] / base - 1
        row["pass"] = row["loss"] == "sft" or row["overhead_vs_sft"] <= TARGET_OVERHEAD
    size = SIZES[args.size]
    print(f"trainer step, {args.size} model ({runs['sft'][0]['params'] / 1e6:.1f}M parameters, "
          f"random init) on {gpu or 'CPU'}: {args.examples or size['examples']} examples x "
          f"{args.tokens or size['tokens']} tokens per step, {args.steps} measured steps x "
          f"{args.rounds} rounds per loss")
    print(format_table(
        ["loss", "steps", "median s", "min s", "max s", "tokens/s", "MFU", "peak memory MiB",
         "overhead vs sft", "target <= 5%"],
        [[r["loss"], str(r["steps"]), f"{r['median_step_s']:.3f}", f"{r['min_step_s']:.3f}",
          f"{r['max_step_s']:.3f}", f"{r['tokens_per_s']:.0f}",
          f"{r['mfu']:.1%}" if r["mfu"] is not None else "-",
          f"{r['peak_memory_bytes'] / 2**20:.0f}", f"{r['overhead_vs_sft']:+.1%}",
          "-" if r["loss"] == "sft" else verdict(r["pass"])] for r in table]))
    print(f"peak memory: {table[0]['peak_memory_kind']}; load average (1 min) at start "
          f"{info['load_average_at_start'][0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    info["load_average_at_end"] = list(os.getloadavg())
    out = args.out or RESULTS / f"trainer_step_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "trainer_step", "machine": info, "gpu": gpu, "peak_flops": peak,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k != "worker"} | {"model": size["model"]},
        "total_seconds": time.perf_counter() - started, "results": table,
        "runs": runs, "target_overhead": TARGET_OVERHEAD,
        "pass": all(r["pass"] for r in table)}, indent=2) + "\n", encoding="utf-8")
    print(f"json: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
