"""The loop every trainer shares: a stage script builds a `Stage` (its model, optimizer,
loader and three callbacks) and `run_stage` resumes, trains, validates, checkpoints and plots.
`Stage.validate` runs at every epoch end and once more at the end of a run that stops
mid-epoch (--max_steps); it gets a `Progress`: where the run stands and the checkpoint state
`fit` writes right after it (what train_instruction.py keeps as best.pt).

Stages differ only in their `Stage`: train_vq.py, train_pretrain.py and train_instruction.py.
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from model.checkpoints import CheckpointError
from model.export import load_checkpoint

from .args import RUN_CONFIG_NAME
from .checkpoint import (
    STAGE_KEY,
    Checkpointer,
    resolve_resume,
    restore_training_state,
    training_state,
)
from .config import RunArgs, TrainArgs
from .data import ResumableLoader, resume_position
from .errors import USER_ERROR_EXIT, UserError, one_line
from .io import run_lock, write_json
from .logger import Logger, format_line
from .optim import cosine_lr, optimizer_step, set_lr
from .plotting import plot_metrics, read_metrics
from .runtime import Runtime, cleanup_runtime, distributed_env, release_freed_memory

T = TypeVar("T")
CURVES_NAME = "curves.png"
# optimizer steps in a row with non-finite gradients before a run is stopped: fp16 loss
# scaling skips a few steps while it finds its scale, a poisoned model or batch skips them all
NONFINITE_STEP_LIMIT = 20


def draw_text_batch(corpus, batch_size: int, device, step: int):
    """(x, y) text windows for micro-step `step`. The corpus generator is reseeded from (seed,
    rank, step), so a resumed run draws the same text on every rank without per-rank state."""
    mixed = np.random.SeedSequence([corpus.seed, corpus.rank, step]).generate_state(1, np.uint64)
    corpus.generator.manual_seed(int(mixed[0]))
    return corpus.get_batch(batch_size, device)


def step_with_mean_log(optimizer, scaler, grad_clip: float, logs: list[dict], step: int,
                       **extra) -> dict:
    """The optimizer step that ends a train_step; returns the mean of its micro-batches' logs,
    then `extra` and the step's grad_norm."""
    result = optimizer_step(optimizer, scaler, grad_clip, step=step)
    merged = {k: sum(entry[k] for entry in logs) / len(logs) for k in logs[0]}
    merged.update(extra, grad_norm=result.grad_norm)
    return merged


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


def checkpoint_state(stage: Stage, config: dict | None, iter_num: int, epoch: int,
                     step_in_epoch: int) -> dict:
    """Our resume keys (training_state, with the run's `config`) plus the stage's layout keys."""
    state = training_state(stage.model, stage.optimizer, stage.scaler, iter_num, epoch,
                           step_in_epoch, config=config)
    state[STAGE_KEY] = stage.name
    state.update({k: v for k, v in stage.layout().items() if k not in state})
    return state


def progress_bar(iterable=None, *, runtime: Runtime, **kwargs) -> tqdm:
    """A tqdm bar on the main rank when stderr is a terminal; nothing in a redirected log (the
    plain log lines say the same without carriage returns)."""
    show = runtime.is_main and sys.stderr.isatty()
    return tqdm(iterable, disable=not show, leave=False, dynamic_ncols=True, **kwargs)


def validation_batches(loader: ResumableLoader, max_batches: int | None, runtime: Runtime):
    """The loader's batches in their fixed order, at most `max_batches` (None: all), behind a
    progress bar on a terminal."""
    loader.set_epoch(0)
    total = loader.batches_per_epoch if max_batches is None else min(loader.batches_per_epoch,
                                                                      max_batches)
    with progress_bar(total=total, desc="validate", runtime=runtime) as bar:
        for i, batch in enumerate(loader):
            if i >= total:
                break
            yield batch
            bar.update(1)


def batch_tokens(batch) -> int:
    """Tokens a batch feeds the model: its real EEG tokens plus its text tokens."""
    if not isinstance(batch, dict):
        return 0
    n = int(batch["input_mask"].sum()) if torch.is_tensor(batch.get("input_mask")) else 0
    return n + (batch["x_text"].numel() if torch.is_tensor(batch.get("x_text")) else 0)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def fit(stage: Stage, train: TrainArgs, run: RunArgs, ckpt: Checkpointer, logger: Logger,
        start: tuple[int, int, int] | None = None, config: dict | None = None) -> int:
    """Train until the schedule's last step; validate and checkpoint at every epoch end, and
    at the end of training; checkpoint every `run.save_every` steps. `start` = (iter_num, epoch,
    step_in_epoch) of a resumed run; `config` is stored in every checkpoint."""
    runtime, loader, accum = stage.runtime, stage.loader, train.grad_accum
    batches_per_epoch = (loader.batches_per_epoch // accum) * accum
    warmup, total_steps = train.schedule(batches_per_epoch // accum)
    iter_num, epoch, step_in_epoch = start or (0, 0, 0)
    epoch, step_in_epoch = resume_position(epoch, step_in_epoch, batches_per_epoch)
    resumed_from = None if start is None else iter_num
    saved_at = -1 if start is None else iter_num
    validated_at = -1
    logged, tokens = (iter_num, time.time()), 0      # speed since the last log line

    nonfinite_steps = 0
    release_freed_memory()   # what building the model and reading checkpoints freed

    def state():
        return checkpoint_state(stage, config, iter_num, epoch, step_in_epoch)

    def save():
        nonlocal saved_at
        check_finite(stage.model, iter_num)
        ckpt.save(state(), iter_num)
        saved_at = iter_num

    def validate(last_epoch: int):
        nonlocal validated_at
        # fit saves right after validating, with the epoch and step_in_epoch of this moment
        progress = Progress(last_epoch, iter_num, total_steps, resumed_from, state)
        logger.log({"epoch": last_epoch, **stage.validate(progress)}, iter_num)
        validated_at = iter_num
        if runtime.is_main:      # watchable while the run goes on, not only at its end
            plot_curves(logger.metrics_path, Path(run.out_dir) / CURVES_NAME, stage.plotted,
                        stage.name)

    while iter_num < total_steps:
        loader.set_epoch(epoch, skip_batches=step_in_epoch)
        bar = progress_bar(total=batches_per_epoch // accum, initial=step_in_epoch // accum,
                           desc=f"{stage.name} epoch {epoch}", runtime=runtime)
        pending = []
        for batch in loader:
            pending.append(batch)
            tokens += batch_tokens(batch)
            if len(pending) < accum:
                continue
            lr = cosine_lr(iter_num, warmup, total_steps, train.lr, train.min_lr)
            set_lr(stage.optimizer, lr)
            log = stage.train_step(pending, iter_num, total_steps)
            pending = []
            grad_norm = log.get("grad_norm")
            finite = grad_norm is None or math.isfinite(grad_norm)
            nonfinite_steps = 0 if finite else nonfinite_steps + 1
            if nonfinite_steps >= NONFINITE_STEP_LIMIT:
                raise UserError(
                    f"training stopped at step {iter_num + 1}: the last {nonfinite_steps} "
                    f"optimizer steps all had non-finite gradients (NaN/Inf), so nothing was "
                    f"learned; no checkpoint was written for them. Check the samples of "
                    f"--dataset_dir for NaN or huge values, or lower --lr")
            iter_num += 1
            step_in_epoch += accum
            bar.update(1)
            if iter_num % run.log_every == 0 or iter_num == total_steps:
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
            if run.save_every and iter_num % run.save_every == 0:
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


def check_finite(model: torch.nn.Module, iter_num: int) -> None:
    """Refuse to write a checkpoint holding NaN/Inf (weights or buffers such as a codebook)."""
    bad = [name for name, value in model.state_dict().items()
           if torch.is_floating_point(value) and not torch.isfinite(value).all()]
    if bad:
        raise UserError(f"training stopped at step {iter_num}: the model holds NaN/Inf values "
                        f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); the broken "
                        f"checkpoint was not written. Check the samples of --dataset_dir for "
                        f"NaN or huge values, or lower --lr")


def check_out_dir(out_dir) -> None:
    path = Path(out_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out_dir {path} is a file; give a folder (it is created if missing)")


def check_batches(train: TrainArgs, stage: Stage) -> None:
    """At least one optimizer step per epoch on every rank, or a clear error saying why not."""
    loader, runtime = stage.loader, stage.runtime
    if loader.batches_per_epoch // train.grad_accum > 0:
        return
    n = len(loader.loader.dataset)
    raise UserError(f"--dataset_dir: the training split holds {n} samples, fewer than one "
                    f"optimizer step needs ({runtime.world_size} rank(s) x --batch_size "
                    f"{train.batch_size} x --grad_accum {train.grad_accum} = "
                    f"{runtime.world_size * train.batch_size * train.grad_accum}); lower "
                    f"--batch_size or --grad_accum, or add samples")


def resume_state(resume: Path, stage: Stage) -> tuple[int, int, int]:
    """Restore `resume` into the stage; another stage's checkpoint is refused, naming both."""
    state = load_checkpoint(resume)
    written_by = state.get(STAGE_KEY)
    if written_by is not None and written_by != stage.name:
        raise UserError(f"--resume {resume}: that checkpoint was written by the {written_by} "
                        f"stage, this is the {stage.name} stage; give this stage's own "
                        f"--out_dir, or --resume none to start fresh")
    try:
        return restore_training_state(state, stage.model, stage.optimizer, stage.scaler)
    except (RuntimeError, KeyError, ValueError) as error:
        raise UserError(f"--resume {resume}: the checkpoint does not fit this {stage.name} "
                        f"model ({one_line(error)[:200]}); is it another stage's or another "
                        f"--preset's? Use --resume none to start fresh") from error


def run_stage(stage: Stage, run: RunArgs, train: TrainArgs, config: dict | None = None,
              lock: bool = True) -> Path | None:
    """Lock --out_dir (unless the caller holds it), write its run config, resume if asked, fit,
    plot the curves; returns the last checkpoint (main rank). `config` (the run's resolved
    flags, plain values) goes to run_config.json and into every checkpoint."""
    runtime = stage.runtime
    check_out_dir(run.out_dir)
    check_batches(train, stage)
    with run_lock(run.out_dir, hold=lock and runtime.is_main):
        ckpt = Checkpointer(run.out_dir, run.keep_checkpoints, is_main=runtime.is_main)
        ckpt.remove_stale_temp_files()
        if runtime.is_main and config is not None:
            write_json(Path(run.out_dir) / RUN_CONFIG_NAME, config)
        logger = Logger(runtime, run.out_dir, wandb=run.wandb, project=run.wandb_project,
                        run_name=run.wandb_run_name, config=config)
        start = None
        resume = resolve_resume(run.resume, run.out_dir)
        if resume is not None:
            logger.info(f"resuming from {resume}")
            start = resume_state(resume, stage)
        trained, total = parameter_counts(stage.model)
        logger.info(f"{stage.name} ({run.preset}): {trainable_share(trained, total)}, "
                    f"{len(stage.loader.loader.dataset)} training samples, "
                    f"{runtime.device}, {runtime.world_size} rank(s), {runtime.dtype_name}, "
                    f"{runtime.kernels}")
        # in metrics.jsonl too (LoRA runs are compared by it), at the step this run starts
        logger.log({"trainable_parameters": trained, "parameters": total},
                   start[0] if start else 0, console=False)
        fit(stage, train, run, ckpt, logger, start, config)
        logger.close()
        runtime.barrier()
        if not runtime.is_main:
            return None
        plot_curves(logger.metrics_path, Path(run.out_dir) / CURVES_NAME, stage.plotted,
                    stage.name)
        return ckpt.latest()


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trained, all) parameters of `model`, tensors shared by two modules counted once."""
    unique = {id(p): p for p in model.parameters()}.values()
    return (sum(p.numel() for p in unique if p.requires_grad),
            sum(p.numel() for p in unique))


def trainable_share(trained: int, total: int) -> str:
    """`trainable: 1.2 M of 135 M parameters (0.9 %)`."""
    def millions(n: int) -> str:
        m = n / 1e6
        return f"{m:.0f}" if m >= 100 else f"{m:.1f}" if m >= 1 else f"{m:.2g}"

    percent = 100 * trained / max(total, 1)
    shown = f"{percent:.1f}" if percent >= 0.1 or not trained else f"{percent:.2g}"
    return f"trainable: {millions(trained)} M of {millions(total)} M parameters ({shown} %)"


def plot_curves(metrics: Path, png: Path, plotted, title: str) -> None:
    if metrics.is_file():
        available = read_metrics(metrics)
        keys = [k for k in plotted if k in available] or None
        plot_metrics(metrics, png, keys=keys, title=title)


def user_error_exit(error: BaseException) -> None:
    """One line on stderr, exit 2: how every trainer answers a user mistake."""
    print(f"error: {one_line(error)}", file=sys.stderr, flush=True)
    raise SystemExit(USER_ERROR_EXIT) from None


def run_main(work: Callable[[], T], user_errors: tuple = ()) -> T:
    """`work()` as a command's whole run, always leaving the process group afterwards. A
    UserError, a CheckpointError or one of the application's `user_errors` (a sample file that
    cannot be read) ends the process with one line on stderr and exit status 2; anything else
    is a bug and keeps its traceback."""
    try:
        try:
            return work()
        except (UserError, CheckpointError, *user_errors) as error:
            user_error_exit(error)
    finally:
        cleanup_runtime()


def train_main(build: Callable[[], Stage], config: dict,
               user_errors: tuple = ()) -> Path | None:
    """A stage script's whole run (under run_main): check the run's resolved flags `config`
    (plain values, made into RunArgs and TrainArgs), build its Stage and run it. Returns the
    newest checkpoint on the main rank (None elsewhere)."""
    def work():
        run, train = RunArgs.from_mapping(config), TrainArgs.from_mapping(config)
        check_out_dir(run.out_dir)
        resolve_resume(run.resume, run.out_dir)    # a wrong --resume before the build
        # a second run on the folder is refused before it spends minutes building its model
        with run_lock(run.out_dir, hold=distributed_env()["rank"] == 0):
            return run_stage(build(), run, train, config, lock=False)

    return run_main(work, user_errors)
