"""The training loop: ``train(config) -> summary``.

One optimizer step:

1. every rank takes its share of the next ``global_batch`` examples from the source and
   encodes them (``mindgap.trainer.collate``); the global count of response tokens ``N`` is
   all-reduced;
2. the share is packed into micro-batches of at most ``batch_tokens`` padded tokens; every
   rank runs as many micro-batches as the busiest rank (empty ones where it has fewer), each
   contributing ``sum(w * -log p) / N`` to the gradient (``mindgap.trainer.losses``), so the summed
   gradient is that of the global token mean whatever the split;
3. gradients are summed over ranks (FSDP2 reduce-scatter with divide factor 1, or an
   all-reduce in ``allreduce`` mode), clipped, AdamW steps, the cosine schedule steps, and
   the source commits the step's examples;
4. metrics go to ``OUT/metrics.jsonl`` (rank 0), TensorBoard when installed, and a tqdm bar.

Multi-process: launched by ``torchrun`` (the ``RANK``/``WORLD_SIZE`` variables are set), the
loop initialises the process group (NCCL on GPU, gloo on CPU). The model is loaded in fp32 on
every rank; compute runs under bf16 autocast on GPU. SIGTERM or SIGINT ends the run after the
current step, with a checkpoint (resume with ``resume="latest"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mindgap.schemas import AlignedExample
from mindgap.trainer import checkpoint as ckpt
from mindgap.trainer.collate import (
    Dropped,
    Encoded,
    collate,
    dummy_batch,
    encode_example,
    micro_batches,
)
from mindgap.trainer.config import TrainConfig
from mindgap.trainer.losses import SOURCES, LossStats, response_logprobs, token_loss
from mindgap.trainer.sources import FileSource, Source

log = logging.getLogger(__name__)


# --- distribution -------------------------------------------------------------------------

@dataclass
class DistContext:
    """This process's place in the job (a single process: rank 0 of 1, not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    enabled: bool = False
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.enabled:
            reduce_op = dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX
            if tensor.device != self.device:  # NCCL reduces device tensors only
                moved = tensor.to(self.device)
                dist.all_reduce(moved, op=reduce_op)
                tensor.copy_(moved)
            else:
                dist.all_reduce(tensor, op=reduce_op)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled)."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0,
                                   device=self.device if self.device.type == "cuda" else None)
        return box[0]


def setup_distributed(config: TrainConfig) -> DistContext:
    """Initialise the process group under torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    want = config.device
    use_cuda = (want == "auto" and torch.cuda.is_available()) or want.startswith("cuda")
    if use_cuda:
        device = torch.device(want if ":" in want else f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world <= 1 and not dist.is_initialized():
        return DistContext(device=device)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        owns = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device, True, owns)


def _shard_fsdp(model: torch.nn.Module) -> None:
    from torch.distributed.fsdp import FSDPModule, fully_shard

    block_names = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():
        if type(module).__name__ in block_names:
            fully_shard(module)
    fully_shard(model)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # The loss is already divided by the global token count: sum, do not average.
            # Plain SUM collectives (gloo has no PREMUL_SUM; NCCL prefers SUM too).
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)


def _broadcast_params(model: torch.nn.Module) -> None:
    for tensor in [*model.parameters(), *model.buffers()]:
        dist.broadcast(tensor.data, src=0)


def _all_reduce_grads(model: torch.nn.Module, bucket_numel: int = 1 << 24) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    bucket: list[torch.Tensor] = []
    size = 0

    def flush() -> None:
        if not bucket:
            return
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat)
        offset = 0
        for g in bucket:
            g.copy_(flat[offset: offset + g.numel()].view_as(g))
            offset += g.numel()
        bucket.clear()

    for g in grads:
        bucket.append(g)
        size += g.numel()
        if size >= bucket_numel:
            flush()
            size = 0
    flush()


def build_source(config: TrainConfig, ctx: DistContext) -> Source:
    """The files of ``config.data``, or the Redis stream of ``config.redis``."""
    if config.redis:
        from mindgap.queue import Queue
        from mindgap.trainer.redis_source import RedisSource

        consumer = config.redis_consumer or "trainer-" + hashlib.sha1(
            str(Path(config.out).resolve()).encode()).hexdigest()[:12]
        queue = Queue.from_url(config.redis, config.redis_prefix)
        return RedisSource(queue, consumer=consumer, job=config.job, rank=ctx.rank,
                           world_size=ctx.world_size, broadcast=ctx.broadcast,
                           block_ms=config.redis_block_ms,
                           idle_timeout_s=config.redis_idle_timeout_s)
    if not config.data:
        raise ValueError("no data: set data (aligned JSONL/Parquet files) or redis (a URL)")
    return FileSource(config.data, seed=config.seed, shuffle=config.shuffle,
                      epochs=config.epochs, rank=ctx.rank, world_size=ctx.world_size)


# --- model, optimizer, schedule -----------------------------------------------------------

def load_model(path: str, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A causal LM in fp32 (master weights; compute precision is the autocast's)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.to(device)


def load_tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def pad_id_of(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if isinstance(value, int):
            return value
    return 0


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; the fused kernel when ``config.fused_adamw`` and torch supports it here."""
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = dict(lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                  eps=config.adam_eps, weight_decay=config.weight_decay)
    if config.fused_adamw:
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, ValueError) as exc:
            log.info("fused AdamW unavailable (%s): using the default implementation", exc)
    return torch.optim.AdamW(params, **kwargs)


def warmup_steps_of(config: TrainConfig) -> int:
    return config.warmup_steps or math.ceil(config.warmup_ratio * config.max_steps)


def build_scheduler(optimizer: torch.optim.Optimizer,
                    config: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up from 0, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    warmup, total, floor = warmup_steps_of(config), config.max_steps, config.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _autocast(config: TrainConfig, device: torch.device) -> Any:
    dtype = config.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "float32":
        return nullcontext()
    if dtype != "bfloat16":
        raise ValueError(f"dtype must be auto, float32 or bfloat16, not {config.dtype!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16)


def _forward_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], kind: str,
                  num_tokens: float, clip: float, config: TrainConfig | None,
                  device: torch.device) -> tuple[torch.Tensor, LossStats]:
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    ctx = _autocast(config, device) if config is not None else nullcontext()
    with ctx:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       use_cache=False).logits
    logp = response_logprobs(logits, batch["targets"], batch["loss_mask"])
    return token_loss(logp, batch["loss_mask"], kind, num_tokens,  # type: ignore[arg-type]
                      behavior_logprobs=batch["behavior_logprobs"],
                      has_behavior=batch["has_behavior"], clip=clip,
                      source_ids=batch["source_ids"])


@torch.no_grad()
def evaluate(model: torch.nn.Module, tokenizer: Any, examples: Sequence[AlignedExample], *,
             loss: str = "sft", clip_ratio: float = 5.0, max_length: int = 2048,
             batch_tokens: int = 8192) -> dict[str, float]:
    """Loss statistics (token means: ``loss``, ``ce``, weights, per source) of ``model`` on
    ``examples``, encoded and batched exactly as in training; no gradient."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    encoded = [e for i, x in enumerate(examples)
               if isinstance(e := encode_example(str(i), x, tokenizer, max_length), Encoded)]
    total = sum(e.response_len for e in encoded)
    stats = LossStats.zeros()
    for mb in micro_batches(encoded, batch_tokens):
        _, s = _forward_loss(model, collate(mb, pad_id_of(tokenizer)), loss, max(total, 1),
                             clip_ratio, None, device)
        stats = stats + LossStats(s.sums.cpu(), s.maxes.cpu())
    model.train(was_training)
    return stats.summary()


# --- metrics ------------------------------------------------------------------------------

class _Metrics:
    def __init__(self, config: TrainConfig, is_main: bool, start_step: int) -> None:
        self.enabled = is_main
        self.path = Path(config.out) / "metrics.jsonl"
        self.tb = None
        if not is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():  # a resumed run rewrites the steps after its checkpoint
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(config.out) / "tb"))
            except ImportError:
                self.tb = None

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --- the loop -----------------------------------------------------------------------------

class _StopFlag:
    def __init__(self) -> None:
        self.set = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            log.warning("signal %d: stopping after this step (with a checkpoint)", signum)
            self.set = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            with suppress(ValueError):  # not the main thread: no handler
                self._previous[sig] = signal.signal(sig, handler)

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def train(config: TrainConfig, *, model: torch.nn.Module | None = None,
          tokenizer: Any | None = None, source: Source | None = None) -> dict[str, Any]:
    """Train per ``config``; returns a summary (steps, examples, tokens, last metrics, paths).

    ``model`` / ``tokenizer`` / ``source`` replace what ``config.model`` / ``config.data``
    would load (notebooks, tests; a given model is trained in place).
    """
    ctx = setup_distributed(config)
    try:
        return _train(config, ctx, model, tokenizer, source)
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, ctx: DistContext, model: torch.nn.Module | None,
           tokenizer: Any | None, source: Source | None) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(config.out)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(config.to_json())
    _seed_everything(config.seed + ctx.rank)

    resume_from: Path | None = None
    if config.resume:
        resume_from = (ckpt.latest_checkpoint(out) if config.resume in ("latest", "auto")
                       else Path(config.resume))
        if resume_from is None:
            log.warning("no checkpoint in %s: starting afresh", out)
    weights = str(resume_from / "model") if resume_from is not None else config.model
    if model is None:
        if not weights:
            raise ValueError("no model: set config.model to a folder or hub name")
        model = load_model(weights, ctx.device)
    else:
        model = model.to(ctx.device)
        if resume_from is not None:
            model.load_state_dict(load_model(weights).state_dict())
    if tokenizer is None:
        tokenizer = load_tokenizer(config.tokenizer or config.model or weights)
    pad_id = pad_id_of(tokenizer)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.train()

    mode = "single"
    if ctx.enabled:
        mode = "fsdp" if config.dist_mode in ("auto", "fsdp") else "allreduce"
        if mode == "fsdp":
            _shard_fsdp(model)
        else:
            _broadcast_params(model)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)

    owns_source = source is None
    if source is None:
        source = build_source(config, ctx)
    step = 0
    if resume_from is not None:
        state = ckpt.restore_checkpoint(resume_from, model=model, optimizer=optimizer,
                                        scheduler=scheduler, rank=ctx.rank)
        step = int(state["step"])
        source.load_state(state["source"])
        log.info("resumed from %s at step %d", resume_from, step)
    start_step = step
    metrics = _Metrics(config, ctx.is_main, start_step)
    stop = _StopFlag()
    stop.install()
    bar = None
    if ctx.is_main and config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.max_steps, initial=step, desc=f"train {config.loss}",
                   dynamic_ncols=True)

    totals = {"examples": 0, "tokens": 0, "response_tokens": 0}
    last: dict[str, Any] = {}
    stopped = "max_steps"
    last_ckpt: Path | None = None
    saved_at = -1
    empty_streak = 0
    try:
        while step < config.max_steps:
            t0 = time.perf_counter()
            batch = source.next_batch(config.global_batch)
            encoded: list[Encoded] = []
            dropped: list[Dropped] = []
            for key, example in batch:
                item = encode_example(key, example, tokenizer, config.max_length)
                (encoded if isinstance(item, Encoded) else dropped).append(item)
            mbs = micro_batches(encoded, config.batch_tokens)
            per_source = [sum(1 for e in encoded if e.source == s) for s in SOURCES]
            counts = torch.tensor(
                [len(batch), len(dropped), sum(e.truncated for e in encoded),
                 sum(e.response_len for e in encoded), sum(len(e.ids) for e in encoded),
                 *per_source], dtype=torch.float64)
            ctx.all_reduce(counts, "sum")
            n_micro = ctx.all_reduce(torch.tensor([float(len(mbs))], dtype=torch.float64),
                                     "max")
            n_examples, n_dropped, n_trunc, n_resp, n_tokens = counts[:5].tolist()
            if n_examples == 0:
                stopped = "exhausted"
                break
            keys = [k for k, _ in batch]
            if n_resp == 0:  # nothing trainable in this global batch: skip it
                source.commit(keys)
                empty_streak += 1
                if empty_streak >= 100:
                    raise RuntimeError("100 global batches in a row had no trainable example "
                                       "(all dropped: is max_length too small?)")
                continue
            empty_streak = 0
            stats = LossStats.zeros()
            for i in range(int(n_micro.item())):
                mb = collate(mbs[i], pad_id) if i < len(mbs) else dummy_batch(pad_id)
                loss, s = _forward_loss(model, mb, config.loss, n_resp, config.clip_ratio,
                                        config, ctx.device)
                loss.backward()
                stats = stats + LossStats(s.sums.cpu(), s.maxes.cpu())
            if mode == "allreduce":
                _all_reduce_grads(model)
            grad_norm = torch.nn.utils.clip_grad_norm_(
                model.parameters(), config.grad_clip if config.grad_clip > 0 else math.inf)
            if hasattr(grad_norm, "full_tensor"):
                grad_norm = grad_norm.full_tensor()
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            source.commit(keys)
            step += 1

            ctx.all_reduce(stats.sums, "sum")
            flags = torch.cat([stats.maxes, torch.tensor([1.0 if stop.set else 0.0],
                                                         dtype=torch.float64)])
            ctx.all_reduce(flags, "max")
            stats.maxes = flags[:-1]
            stop.set = bool(flags[-1].item())
            elapsed = time.perf_counter() - t0
            record: dict[str, Any] = {
                "step": step, "lr": lr, **stats.summary(),
                "grad_norm": float(grad_norm), "examples": int(n_examples),
                **{f"examples_{s}": int(v) for s, v in zip(SOURCES, counts[5:].tolist(),
                                                           strict=True)},
                "dropped": int(n_dropped), "truncated": int(n_trunc),
                "input_tokens": int(n_tokens), "response_tokens": int(n_resp),
                "micro_batches": int(n_micro.item()), "step_s": elapsed,
                "tokens_per_s": n_tokens / elapsed if elapsed > 0 else 0.0,
                "epoch": source.state().get("epoch"),
            }
            if config.log_example_ids:
                record["example_ids"] = [e.example_id for e in encoded] + \
                    [d.example_id for d in dropped]
            totals["examples"] += int(n_examples)
            totals["tokens"] += int(n_tokens)
            totals["response_tokens"] += int(n_resp)
            last = record
            if step % config.log_every == 0 or step == config.max_steps:
                metrics.write(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix({
                    "loss": f"{record['loss']:.4f}", "ce": f"{record['ce']:.4f}",
                    "w": f"{record['w_mean']:.3f}/{record['w_max']:.2f}",
                    "ess": f"{record['ess_frac']:.2f}", "gn": f"{record['grad_norm']:.3f}",
                    "lr": f"{lr:.2e}", "tok/s": f"{record['tokens_per_s']:.0f}",
                    "s/g/e": "/".join(str(record[f"examples_{s}"]) for s in SOURCES)})

            interrupted = stop.set or (config.stop_after is not None
                                       and step >= config.stop_after)
            periodic = config.save_every > 0 and step % config.save_every == 0
            if periodic or interrupted:
                last_ckpt = _save(config, step, model, optimizer, scheduler, tokenizer,
                                  source, last, ctx)
                saved_at = step
            if interrupted:
                stopped = "signal" if stop.set else "stop_after"
                break
    finally:
        stop.uninstall()
        if bar is not None:
            bar.close()
        metrics.close()

    final_path: Path | None = None
    if stopped in ("max_steps", "exhausted") and config.save_final and step > start_step:
        if saved_at != step:
            last_ckpt = _save(config, step, model, optimizer, scheduler, tokenizer, source,
                              last, ctx)
        final_path = out / "final"
        if ctx.is_main and last_ckpt is not None:  # the checkpoint's weights, as a plain folder
            if final_path.exists():
                shutil.rmtree(final_path)
            shutil.copytree(last_ckpt / "model", final_path)
        ctx.barrier()
    elif stopped in ("max_steps", "exhausted"):
        source.settle()  # the run ended without a final save: its examples are consumed
    summary = {
        "steps": step, "start_step": start_step, "stopped": stopped, **totals,
        "elapsed_s": time.perf_counter() - t_start, "last": last,
        "checkpoint": str(last_ckpt) if last_ckpt else None,
        "final_model": str(final_path) if final_path else None,
        "world_size": ctx.world_size, "dist_mode": mode, "source_state": source.state(),
    }
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if owns_source:
        source.close()
    return summary


def _save(config: TrainConfig, step: int, model: torch.nn.Module,
          optimizer: torch.optim.Optimizer, scheduler: Any, tokenizer: Any, source: Source,
          last: dict[str, Any], ctx: DistContext) -> Path:
    """Write a checkpoint, then let the source settle the position it holds."""
    path = ckpt.save_checkpoint(
        config.out, step, model=model, optimizer=optimizer, scheduler=scheduler,
        tokenizer=tokenizer, rank=ctx.rank, keep_last=config.keep_last, barrier=ctx.barrier,
        trainer_state={"source": source.state(), "config": config.to_dict(), "metrics": last,
                       "world_size": ctx.world_size})
    source.settle()
    return path
