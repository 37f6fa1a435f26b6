"""The loop every trainer shares: a stage script builds a `Stage` (its model, optimizer,
loader and three callbacks) and `run_stage` resumes, trains, validates, checkpoints and plots.
`Stage.validate` runs at every epoch end and once more at the end of a run that stops
mid-epoch (--max_steps); it gets a `Progress`: where the run stands and the checkpoint state
`fit` writes right after it (what train_instruction.py keeps as best.pt).

Stages differ only in their `Stage`: train_vq.py, train_pretrain.py and train_instruction.py.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from model.checkpoints import load_checkpoint

from .args import schedule_steps
from .checkpoint import Checkpointer, resolve_resume, restore_training_state, training_state
from .data import ResumableLoader, resume_position
from .logger import Logger, format_line
from .optim import cosine_lr, set_lr
from .plotting import plot_metrics, read_metrics
from .runtime import Runtime, cleanup_runtime

CURVES_NAME = "curves.png"


def draw_text_batch(corpus, batch_size: int, device, step: int):
    """(x, y) text windows for micro-step `step`. The corpus generator is reseeded from (seed,
    rank, step), so a resumed run draws the same text on every rank without per-rank state."""
    mixed = np.random.SeedSequence([corpus.seed, corpus.rank, step]).generate_state(1, np.uint64)
    corpus.generator.manual_seed(int(mixed[0]))
    return corpus.get_batch(batch_size, device)


def to_device(batch: dict, device) -> dict:
    """The batch's tensors on `device`; other entries (task names) as they are."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
            for k, v in batch.items()}


@dataclass(frozen=True)
class Progress:
    """Where `fit` stands when it calls `Stage.validate`."""

    epoch: int                   # the epoch the last optimizer step belongs to
    iter_num: int                # optimizer steps done
    total_steps: int             # of the whole schedule
    resumed_from: int | None     # the step this process resumed from; None on a fresh start
    state: Callable[[], dict]    # the checkpoint state fit writes right after validate returns

    @property
    def is_last(self) -> bool:
        return self.iter_num >= self.total_steps


@dataclass
class Stage:
    """What a trainer plugs into `fit`."""

    name: str
    runtime: Runtime
    model: torch.nn.Module                 # as trained (maybe DDP / compiled)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loader: ResumableLoader
    train_step: Callable[[list, int, int], dict]     # (micro-batches, iter_num, total) -> log
    validate: Callable[[Progress], dict]   # metrics logged with the epoch ({} = none)
    layout: Callable[[], dict]             # the public checkpoint keys besides the model
    plotted: tuple[str, ...] = ()


def checkpoint_state(args, stage: Stage, iter_num: int, epoch: int, step_in_epoch: int) -> dict:
    """Our resume keys (training_state) plus the public layout's config keys."""
    state = training_state(stage.model, stage.optimizer, stage.scaler, iter_num, epoch,
                           step_in_epoch, config=args)
    state.update({k: v for k, v in stage.layout().items() if k not in state})
    return state


def batch_tokens(batch) -> int:
    """Tokens a batch feeds the model: its real EEG tokens plus its text tokens."""
    if not isinstance(batch, dict):
        return 0
    n = int(batch["input_mask"].sum()) if torch.is_tensor(batch.get("input_mask")) else 0
    return n + (batch["x_text"].numel() if torch.is_tensor(batch.get("x_text")) else 0)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def fit(args, stage: Stage, ckpt: Checkpointer, logger: Logger,
        start: tuple[int, int, int] | None = None) -> int:
    """Train until the schedule's last step; validate and checkpoint at every epoch end, and
    at the end of training; checkpoint every --save_every steps. `start` = (iter_num, epoch,
    step_in_epoch) of a resumed run."""
    runtime, loader = stage.runtime, stage.loader
    batches_per_epoch = (loader.batches_per_epoch // args.grad_accum) * args.grad_accum
    warmup, total_steps = schedule_steps(args, batches_per_epoch // args.grad_accum)
    iter_num, epoch, step_in_epoch = start or (0, 0, 0)
    epoch, step_in_epoch = resume_position(epoch, step_in_epoch, batches_per_epoch)
    resumed_from = None if start is None else iter_num
    saved_at = -1 if start is None else iter_num
    validated_at = -1
    logged, tokens = (iter_num, time.time()), 0      # speed since the last log line

    def save():
        nonlocal saved_at
        ckpt.save(checkpoint_state(args, stage, iter_num, epoch, step_in_epoch), iter_num)
        saved_at = iter_num

    def validate(last_epoch: int):
        nonlocal validated_at
        # fit saves right after validating, with the epoch and step_in_epoch of this moment
        progress = Progress(last_epoch, iter_num, total_steps, resumed_from, lambda: (
            checkpoint_state(args, stage, iter_num, epoch, step_in_epoch)))
        logger.log({"epoch": last_epoch, **stage.validate(progress)}, iter_num)
        validated_at = iter_num
        if runtime.is_main:      # watchable while the run goes on, not only at its end
            plot_curves(logger.metrics_path, Path(args.out_dir) / CURVES_NAME, stage.plotted,
                        stage.name)

    while iter_num < total_steps:
        loader.set_epoch(epoch, skip_batches=step_in_epoch)
        bar = tqdm(total=batches_per_epoch // args.grad_accum,
                   initial=step_in_epoch // args.grad_accum, desc=f"{stage.name} epoch {epoch}",
                   disable=not runtime.is_main, leave=False, dynamic_ncols=True)
        pending = []
        for batch in loader:
            pending.append(batch)
            tokens += batch_tokens(batch)
            if len(pending) < args.grad_accum:
                continue
            lr = cosine_lr(iter_num, warmup, total_steps, args.lr, args.min_lr)
            set_lr(stage.optimizer, lr)
            log = stage.train_step(pending, iter_num, total_steps)
            pending = []
            iter_num += 1
            step_in_epoch += args.grad_accum
            bar.update(1)
            if iter_num % args.log_every == 0 or iter_num == total_steps:
                logger.log({"epoch": epoch, "lr": lr, **log}, iter_num, console=False)
                bar.set_postfix(loss=f"{log['loss']:.4f}")
                now = time.time()
                speed = (iter_num - logged[0]) / max(now - logged[1], 1e-9)
                losses = {k: v for k, v in log.items() if "loss" in k}
                if runtime.is_main:    # a plain line too, for logs redirected to a file
                    tqdm.write(format_line(iter_num, {
                        "epoch": epoch, **losses, "lr": lr,
                        "tok/s": round(tokens / max(now - logged[1], 1e-9)),
                        "eta": _duration((total_steps - iter_num) / max(speed, 1e-9))}))
                logged, tokens = (iter_num, now), 0
            if iter_num >= total_steps or step_in_epoch >= batches_per_epoch:
                break       # saved below, after validating
            if args.save_every and iter_num % args.save_every == 0:
                save()
        bar.close()
        if step_in_epoch >= batches_per_epoch:
            validate(epoch)
            save()
            epoch, step_in_epoch = epoch + 1, 0
    if validated_at != iter_num:     # stopped mid-epoch (--max_steps), or resumed at the end
        validate(epoch if step_in_epoch else max(epoch - 1, 0))
    if saved_at != iter_num:
        save()
    return iter_num


def run_stage(args, stage: Stage) -> Path | None:
    """Resume if asked, fit, plot the curves; returns the last checkpoint (main rank)."""
    runtime = stage.runtime
    ckpt = Checkpointer(args.out_dir, args.keep_checkpoints, is_main=runtime.is_main)
    logger = Logger(runtime, args.out_dir, wandb=args.wandb, project=args.wandb_project,
                    run_name=args.wandb_run_name, config=args)
    start = None
    resume = resolve_resume(args.resume, args.out_dir)
    if resume is not None:
        logger.info(f"resuming from {resume}")
        start = restore_training_state(load_checkpoint(resume), stage.model,
                                       stage.optimizer, stage.scaler)
    trainable = sum(p.numel() for p in stage.model.parameters() if p.requires_grad)
    logger.info(f"{stage.name} ({args.preset}): {trainable / 1e6:.2f} M trainable parameters, "
                f"{len(stage.loader.loader.dataset)} training samples, {runtime.device}, "
                f"{runtime.world_size} rank(s), {runtime.dtype_name}")
    fit(args, stage, ckpt, logger, start)
    logger.close()
    runtime.barrier()
    if not runtime.is_main:
        return None
    plot_curves(logger.metrics_path, Path(args.out_dir) / CURVES_NAME, stage.plotted, stage.name)
    return ckpt.latest()


def plot_curves(metrics: Path, png: Path, plotted, title: str) -> None:
    if metrics.is_file():
        available = read_metrics(metrics)
        keys = [k for k in plotted if k in available] or None
        plot_metrics(metrics, png, keys=keys, title=title)


def train_main(args, build_stage: Callable) -> Path | None:
    """A stage script's whole run: build its Stage, train it, and always leave the process group.
    Returns the newest checkpoint on the main rank (None elsewhere)."""
    try:
        return run_stage(args, build_stage(args))
    finally:
        cleanup_runtime()
