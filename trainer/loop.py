"""The training loop: ``train(config) -> summary``.

One optimizer step:

1. every rank takes its share of the next ``global_batch`` examples from the example
   stream (``mindgap.trainer.sources``) and encodes them (``mindgap.trainer.collate``); the
   global count of response tokens ``N`` is all-reduced;
2. the share is packed into micro-batches of at most ``batch_tokens`` padded tokens; every
   rank runs as many micro-batches as the busiest rank (empty ones where it has fewer), each
   contributing ``sum(w * -log p) / N`` to the gradient (``mindgap.trainer.losses``), so the summed
   gradient is that of the global token mean whatever the split;
3. gradients are summed over ranks (FSDP2 reduce-scatter with divide factor 1, or an
   all-reduce in ``allreduce`` mode), clipped, AdamW steps, the cosine schedule steps, and
   the stream commits the step's examples;
4. metrics go to the reporters of ``report_to`` (``mindgap.trainer.reporting``; rank 0) and a
   tqdm bar.

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
import signal
import time
from collections.abc import Sequence
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mindgap.schemas import SOURCES, AlignedExample
from mindgap.trainer import checkpoint as ckpt
from mindgap.trainer.collate import (
    Dropped,
    Encoded,
    collate,
    dummy_batch,
    encode_example,
    micro_batches,
)
from mindgap.trainer.config import TrainConfig, write_config
from mindgap.trainer.losses import LossStats, response_logprobs, token_loss
from mindgap.trainer.reporting import Metrics, bar_postfix, check_reporters
from mindgap.trainer.schedule import build_scheduler, restore_scheduler
from mindgap.trainer.sources import ExampleStream, FileStream, read_examples

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


def build_stream(config: TrainConfig, ctx: DistContext) -> ExampleStream:
    """The files of ``config.data``, or the Redis stream of ``config.redis``."""
    if config.redis:
        from mindgap.queue import Queue
        from mindgap.trainer.redis_source import RedisStream

        consumer = config.redis_consumer or "trainer-" + hashlib.sha1(
            str(Path(config.out).resolve()).encode()).hexdigest()[:12]
        queue = Queue.from_url(config.redis, config.redis_prefix)
        return RedisStream(queue, consumer=consumer, job=config.job, rank=ctx.rank,
                           world_size=ctx.world_size, broadcast=ctx.broadcast,
                           block_ms=config.redis_block_ms,
                           idle_timeout_s=config.redis_idle_timeout_s,
                           max_staleness=config.max_staleness)
    if not config.data:
        raise ValueError("no data: set data (aligned JSONL/Parquet files) or redis (a URL)")
    return FileStream(config.data, seed=config.seed, shuffle=config.shuffle,
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


def training_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """``config.dtype`` resolved: 'auto' is bfloat16 on GPU, float32 elsewhere."""
    if config.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[config.dtype]


def _autocast(config: TrainConfig, device: torch.device) -> Any:
    if training_dtype(config, device) == torch.float32:
        return nullcontext()
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
def evaluate(model: torch.nn.Module, tokenizer: Any, examples: Sequence[AlignedExample],
             config: TrainConfig) -> dict[str, float]:
    """Loss statistics (token means: ``loss``, ``ce``, weights, per source) of ``model`` on
    ``examples`` under ``config``'s loss, encoded and batched exactly as in training; no
    gradient."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    encoded = [e for i, x in enumerate(examples)
               if isinstance(e := encode_example(str(i), x, tokenizer, config.max_length),
                             Encoded)]
    total = sum(e.response_len for e in encoded)
    stats = LossStats.zeros()
    for mb in micro_batches(encoded, config.batch_tokens):
        _, s = _forward_loss(model, collate(mb, pad_id_of(tokenizer)), config.loss,
                             max(total, 1), config.clip_ratio, None, device)
        stats = stats + LossStats(s.sums.cpu(), s.maxes.cpu())
    model.train(was_training)
    return stats.summary()


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
    np.random.seed(seed % 2**32)


@dataclass
class _Run:
    """One run's parts and progress, shared by the steps of ``_train``."""

    config: TrainConfig
    ctx: DistContext
    model: torch.nn.Module
    tokenizer: Any
    pad_id: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    stream: ExampleStream
    mode: str  # "single", "fsdp" or "allreduce"
    step: int = 0
    start_step: int = 0
    stopped: str = "max_steps"  # or "exhausted", "signal", "stop_after"
    totals: dict[str, int] = field(
        default_factory=lambda: {"examples": 0, "tokens": 0, "response_tokens": 0})
    last: dict[str, Any] = field(default_factory=dict)  # the last step's metrics
    last_ckpt: Path | None = None
    sizes: dict[str, float] = field(default_factory=dict)  # of the last checkpoint
    saved_at: int = -1  # the step of the last checkpoint


@dataclass
class _Batch:
    """One global batch: this rank's share, encoded and packed, and counts summed over ranks."""

    keys: list[str]
    encoded: list[Encoded]
    dropped: list[Dropped]
    micro: list[list[Encoded]]
    n_micro: int  # micro-batches of the busiest rank
    n_examples: float
    n_dropped: float
    n_truncated: float
    n_response: float  # response tokens: the loss's normaliser
    n_input: float  # prompt and response tokens
    per_source: list[float]  # examples of each of mindgap.schemas.SOURCES


def train(config: TrainConfig, *, model: torch.nn.Module | None = None,
          tokenizer: Any | None = None, stream: ExampleStream | None = None) -> dict[str, Any]:
    """Train per ``config``; returns a summary (steps, examples, tokens, last metrics, paths).

    ``model`` / ``tokenizer`` / ``stream`` replace what ``config.model`` / ``config.data``
    would load (notebooks, tests; a given model is trained in place).
    """
    ctx = setup_distributed(config)
    try:
        return _train(config, ctx, model, tokenizer, stream)
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, ctx: DistContext, model: torch.nn.Module | None,
           tokenizer: Any | None, stream: ExampleStream | None) -> dict[str, Any]:
    t_start = time.perf_counter()
    out = Path(config.out)
    check_reporters(config.report_to)  # before anything slow: a missing one is an error
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_config(config, out / "config.yaml")
    _seed_everything(config.seed + ctx.rank)
    run = _setup(config, ctx, model, tokenizer, stream)
    _run_steps(run)
    final_path = _finish(run)
    summary = {
        "steps": run.step, "start_step": run.start_step, "stopped": run.stopped, **run.totals,
        "elapsed_s": time.perf_counter() - t_start, "last": run.last,
        "checkpoint": str(run.last_ckpt) if run.last_ckpt else None,
        "final_model": str(final_path) if final_path else None,
        "checkpoint_sizes": run.sizes,
        "world_size": ctx.world_size, "dist_mode": run.mode,
        "source_state": run.stream.state(),
    }
    bound = getattr(run.stream, "staleness", None)  # a RedisStream's (online rewriting)
    if bound is not None:
        summary["staleness"] = {"histogram": dict(sorted(bound.histogram.items())),
                                "stale_dropped": bound.dropped,
                                "stale_requeued": bound.requeued,
                                "stale_trained": bound.stale_trained}
    if ctx.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if stream is None:  # built here, closed here
        run.stream.close()
    return summary


# --- setup --------------------------------------------------------------------------------

def _setup(config: TrainConfig, ctx: DistContext, model: torch.nn.Module | None,
           tokenizer: Any | None, stream: ExampleStream | None) -> _Run:
    """Model, tokenizer, optimizer, schedule and example stream; restored from a checkpoint
    when resuming."""
    resume_from = _resume_path(config)
    model, tokenizer = _prepare_model(config, ctx, model, tokenizer, resume_from)
    mode = _distribute(model, config, ctx)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)  # before the optimizer's state: its keys
    state = None if resume_from is None else ckpt.restore_checkpoint(
        resume_from, model=model, optimizer=optimizer, rank=ctx.rank)
    step = 0 if state is None else int(state["step"])
    if state is not None:
        restore_scheduler(scheduler, config, state, step)
    run = _Run(config=config, ctx=ctx, model=model, tokenizer=tokenizer,
               pad_id=pad_id_of(tokenizer), optimizer=optimizer, scheduler=scheduler,
               stream=stream if stream is not None else build_stream(config, ctx), mode=mode,
               step=step, start_step=step)
    if state is not None:
        run.stream.load_state(state["source"])
        log.info("resumed from %s at step %d", resume_from, run.step)
    return run


def _resume_path(config: TrainConfig) -> Path | None:
    """The checkpoint ``config.resume`` names ('latest' or 'auto': the newest in OUT)."""
    if not config.resume:
        return None
    if config.resume not in ("latest", "auto"):
        return Path(config.resume)
    found = ckpt.latest_checkpoint(config.out)
    if found is None:
        log.warning("no checkpoint in %s: starting afresh", Path(config.out))
    return found


def _prepare_model(config: TrainConfig, ctx: DistContext, model: torch.nn.Module | None,
                   tokenizer: Any | None, resume_from: Path | None) -> tuple[torch.nn.Module, Any]:
    """The model on the device (with the checkpoint's weights, or adapters with LoRA, when
    resuming), in training mode, and its tokenizer."""
    full_resume = resume_from if config.lora_r == 0 else None  # LoRA: the base is config.model
    weights = str(full_resume / "model") if full_resume is not None else config.model
    if model is None:
        if not weights:
            raise ValueError("no model: set config.model to a folder or hub name")
        model = load_model(weights, ctx.device)
    else:
        model = model.to(ctx.device)
        if full_resume is not None:
            model.load_state_dict(load_model(weights).state_dict())
    if full_resume is not None:
        ckpt.load_master_weights(full_resume, model)
    if tokenizer is None:
        tokenizer = load_tokenizer(config.tokenizer or config.model or weights)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    if config.lora_r > 0:
        from mindgap.trainer.lora import add_adapters

        model = add_adapters(model, config, resume_from)
    model.train()
    return model, tokenizer


def _distribute(model: torch.nn.Module, config: TrainConfig, ctx: DistContext) -> str:
    """Shard (fsdp) or replicate (allreduce) the model over the ranks; the mode ("single":
    one process)."""
    if not ctx.enabled:
        return "single"
    if config.dist_mode in ("auto", "fsdp"):
        _shard_fsdp(model)
        return "fsdp"
    _broadcast_params(model)
    return "allreduce"


# --- steps --------------------------------------------------------------------------------

def _run_steps(run: _Run) -> None:
    """Optimizer steps until ``max_steps``, the end of the data, a signal or ``stop_after``
    (``run.stopped`` says which)."""
    metrics = Metrics(run.config, run.ctx.is_main, run.start_step)
    stop = _StopFlag()
    stop.install()
    bar = _progress_bar(run)
    held_out = read_examples(run.config.eval_data) if run.config.eval_every else []
    empty_streak = 0
    try:
        while run.step < run.config.max_steps:
            t0 = time.perf_counter()
            batch = _next_batch(run)
            if batch.n_examples == 0:
                run.stopped = "exhausted"
                break
            if batch.n_response == 0:  # nothing trainable in this global batch: skip it
                run.stream.commit(batch.keys)
                empty_streak += 1
                if empty_streak >= 100:
                    raise RuntimeError("100 global batches in a row had no trainable example "
                                       "(all dropped: is max_length too small?)")
                continue
            empty_streak = 0
            record = _step(run, batch, stop, t0)
            record.update(_publish_if_due(run))
            _log_step(run, record, metrics, bar)
            _evaluate_if_due(run, held_out, metrics)
            if _checkpoint_if_due(run, stop):
                break
    finally:
        stop.uninstall()
        if bar is not None:
            bar.close()
        metrics.close()


def _publish_if_due(run: _Run) -> dict[str, Any]:
    """Every ``publish_every`` steps: a new policy version for the workers (its metrics)."""
    queue = getattr(run.stream, "queue", None)  # a RedisStream's (config: publish needs redis)
    if not run.config.publish_every or queue is None:
        return {}
    from mindgap.trainer.publish import publish

    return publish(queue.policy, run.config, run.step, model=run.model,
                   tokenizer=run.tokenizer, rank=run.ctx.rank, barrier=run.ctx.barrier)


def _evaluate_if_due(run: _Run, held_out: list[AlignedExample], metrics: Metrics) -> None:
    """Every ``eval_every`` steps and at ``max_steps``: the held-out loss statistics, written
    as ``eval/<name>`` (every rank evaluates the whole set: the same collectives under FSDP)."""
    every = run.config.eval_every
    if not every or not (run.step % every == 0 or run.step == run.config.max_steps):
        return
    stats = evaluate(run.model, run.tokenizer, held_out, run.config)
    metrics.write({"step": run.step, **{f"eval/{k}": v for k, v in stats.items()}})


def _progress_bar(run: _Run) -> Any:
    """A tqdm bar on rank 0 with ``config.progress``; else None."""
    if not (run.ctx.is_main and run.config.progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.config.max_steps, initial=run.step, desc=f"train {run.config.loss}",
                dynamic_ncols=True)


def _next_batch(run: _Run) -> _Batch:
    """This rank's share of the next global batch, encoded and packed into micro-batches."""
    config = run.config
    batch = run.stream.next_batch(config.global_batch)
    encoded: list[Encoded] = []
    dropped: list[Dropped] = []
    for key, example in batch:
        item = encode_example(key, example, run.tokenizer, config.max_length)
        (encoded if isinstance(item, Encoded) else dropped).append(item)
    micro = micro_batches(encoded, config.batch_tokens)
    per_source = [sum(1 for e in encoded if e.source == s) for s in SOURCES]
    counts = torch.tensor(
        [len(batch), len(dropped), sum(e.truncated for e in encoded),
         sum(e.response_len for e in encoded), sum(len(e.ids) for e in encoded),
         *per_source], dtype=torch.float64)
    run.ctx.all_reduce(counts, "sum")
    n_micro = run.ctx.all_reduce(torch.tensor([float(len(micro))], dtype=torch.float64), "max")
    n_examples, n_dropped, n_truncated, n_response, n_input, *sources = counts.tolist()
    return _Batch(keys=[k for k, _ in batch], encoded=encoded, dropped=dropped, micro=micro,
                  n_micro=int(n_micro.item()), n_examples=n_examples, n_dropped=n_dropped,
                  n_truncated=n_truncated, n_response=n_response, n_input=n_input,
                  per_source=sources)


def _step(run: _Run, batch: _Batch, stop: _StopFlag, t0: float) -> dict[str, Any]:
    """One optimizer step on ``batch`` (started at ``t0``); its metrics record."""
    stats = _accumulate_gradients(run, batch)
    grad_norm, lr = _optimizer_step(run)
    run.stream.commit(batch.keys)
    run.step += 1
    _reduce_stats(run.ctx, stats, stop)
    return _record(run, batch, stats, grad_norm, lr, time.perf_counter() - t0)


def _accumulate_gradients(run: _Run, batch: _Batch) -> LossStats:
    """Forward and backward of every micro-batch (empty ones where this rank has fewer than
    the busiest); the loss statistics of this rank."""
    config = run.config
    stats = LossStats.zeros()
    for i in range(batch.n_micro):
        mb = collate(batch.micro[i], run.pad_id) if i < len(batch.micro) \
            else dummy_batch(run.pad_id)
        loss, s = _forward_loss(run.model, mb, config.loss, batch.n_response,
                                config.clip_ratio, config, run.ctx.device)
        loss.backward()
        stats = stats + LossStats(s.sums.cpu(), s.maxes.cpu())
    return stats


def _optimizer_step(run: _Run) -> tuple[torch.Tensor, float]:
    """Sum gradients over ranks (allreduce mode), clip, step AdamW and the schedule; the
    gradient norm before clipping and the learning rate of the step."""
    if run.mode == "allreduce":
        _all_reduce_grads(run.model)
    clip = run.config.grad_clip if run.config.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
        grad_norm = grad_norm.full_tensor()
    lr = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return grad_norm, lr


def _reduce_stats(ctx: DistContext, stats: LossStats, stop: _StopFlag) -> None:
    """Sum ``stats`` over ranks and take their maxima; a stop on one rank stops every rank."""
    ctx.all_reduce(stats.sums, "sum")
    flags = torch.cat([stats.maxes, torch.tensor([1.0 if stop.set else 0.0],
                                                 dtype=torch.float64)])
    ctx.all_reduce(flags, "max")
    stats.maxes = flags[:-1]
    stop.set = bool(flags[-1].item())


def _record(run: _Run, batch: _Batch, stats: LossStats, grad_norm: torch.Tensor, lr: float,
            elapsed: float) -> dict[str, Any]:
    """The metrics of the step just taken."""
    record: dict[str, Any] = {
        "step": run.step, "lr": lr, **stats.summary(),
        "grad_norm": float(grad_norm), "examples": int(batch.n_examples),
        **{f"examples_{s}": int(v) for s, v in zip(SOURCES, batch.per_source, strict=True)},
        "dropped": int(batch.n_dropped), "truncated": int(batch.n_truncated),
        "input_tokens": int(batch.n_input), "response_tokens": int(batch.n_response),
        "micro_batches": batch.n_micro, "step_s": elapsed,
        "tokens_per_s": batch.n_input / elapsed if elapsed > 0 else 0.0,
        "epoch": run.stream.state().get("epoch"), **run.stream.metrics(),
    }
    if run.config.log_example_ids:
        record["example_ids"] = [e.example_id for e in batch.encoded] + \
            [d.example_id for d in batch.dropped]
    return record


def _log_step(run: _Run, record: dict[str, Any], metrics: Metrics, bar: Any) -> None:
    """Count the step in the totals; write it (every ``log_every`` steps and the last one);
    show it on the progress bar."""
    run.totals["examples"] += record["examples"]
    run.totals["tokens"] += record["input_tokens"]
    run.totals["response_tokens"] += record["response_tokens"]
    run.last = record
    if run.step % run.config.log_every == 0 or run.step == run.config.max_steps:
        metrics.write(record)
    if bar is not None:
        bar.update(1)
        bar.set_postfix(bar_postfix(record))


# --- checkpoints --------------------------------------------------------------------------

def _checkpoint_if_due(run: _Run, stop: _StopFlag) -> bool:
    """Checkpoint every ``save_every`` steps and when interrupted (a signal, ``stop_after``);
    True when interrupted: the run stops."""
    config = run.config
    interrupted = stop.set or (config.stop_after is not None and run.step >= config.stop_after)
    if interrupted or (config.save_every > 0 and run.step % config.save_every == 0):
        _save(run)
    if interrupted:
        run.stopped = "signal" if stop.set else "stop_after"
    return interrupted


def _finish(run: _Run) -> Path | None:
    """At a normal end (``max_steps``, data exhausted): with ``save_final`` and steps taken, a
    last checkpoint and its weights as ``OUT/final`` (returned); without, the stream settles."""
    config, ctx = run.config, run.ctx
    if run.stopped not in ("max_steps", "exhausted"):
        return None
    if not (config.save_final and run.step > run.start_step):
        run.stream.settle()  # the run ended without a final save: its examples are consumed
        return None
    if run.saved_at != run.step:
        _save(run)
    final_path = Path(config.out) / "final"
    if ctx.is_main and run.last_ckpt is not None:
        if config.lora_r > 0 and config.lora_save == "merged":
            from mindgap.trainer.lora import save_merged

            save_merged(run.model, final_path, run.tokenizer)
        else:
            ckpt.publish_final(run.last_ckpt / "model", final_path, copy=config.final_copy)
    ctx.barrier()
    return final_path


def _num_params(model: torch.nn.Module) -> int:
    """Parameters of the model (all of them, trainable or not; tied ones once)."""
    return sum(p.numel() for p in model.parameters())


def _save(run: _Run) -> None:
    """Write a checkpoint, then let the stream settle the position it holds."""
    config, ctx = run.config, run.ctx
    run.last_ckpt = ckpt.save_checkpoint(
        config.out, run.step, model=run.model, optimizer=run.optimizer,
        scheduler=run.scheduler, tokenizer=run.tokenizer, rank=ctx.rank,
        save_total_limit=config.save_total_limit, barrier=ctx.barrier,
        weights_dtype=torch.float32 if config.lora_r > 0 else training_dtype(config, ctx.device),
        trainer_state={"source": run.stream.state(), "config": config.model_dump(),
                       "metrics": run.last, "world_size": ctx.world_size})
    run.saved_at = run.step
    if ctx.is_main:
        run.sizes = ckpt.checkpoint_sizes(run.last_ckpt, _num_params(run.model))
        log.info(ckpt.size_line(run.last_ckpt, run.sizes))
    run.stream.settle()
