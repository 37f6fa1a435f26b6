"""The values the training library runs on, as typed dataclasses (litgpt's TrainArgs shape).

A stage script parses its command line (training.args) and hands `fit` / `run_stage` these
objects, never the argparse namespace: `TrainArgs.from_mapping(vars(args))` picks the fields
by name. Every field is checked for finiteness and range when the object is made.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import UserError

COUNT_MAX = 1 << 30     # the largest size, step or batch count a flag may give (args.py too)


def _check(name: str, value, low=None, high=None, integer=False, low_open=False,
           none_ok=False) -> None:
    """One line naming the flag when `value` is not a finite number in range."""
    if value is None and none_ok:
        return
    flag = f"--{name}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{flag} must be a number, got {value!r}")
    if integer and not float(value).is_integer():
        raise UserError(f"{flag} must be a whole number, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise UserError(f"{flag} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
    if high is not None and value > high:
        raise UserError(f"{flag} must be <= {high:g}, got {value!r}")


class _FromMapping:
    @classmethod
    def from_mapping(cls, values: dict, **overrides):
        """The fields of `cls` taken by name from `values` (e.g. vars(args)), then `overrides`."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in values.items() if k in names}, **overrides})


@dataclass(frozen=True)
class TrainArgs(_FromMapping):
    """How long and how fast to train (the optimisation flags of every stage)."""

    batch_size: int = 8            # samples per rank per micro-step
    grad_accum: int = 1            # micro-steps accumulated per optimizer step
    lr: float = 6e-4               # peak learning rate after warm-up
    min_lr: float = 6e-5           # learning rate at the end of the cosine decay (<= lr)
    weight_decay: float = 0.1      # AdamW decay on >= 2-D weights
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0         # gradient-norm clip; 0 disables
    max_epochs: int = 1
    max_steps: int | None = None   # optimizer steps; overrides max_epochs and sets the schedule
    warmup_epochs: float | None = 0.0  # linear warm-up in epochs ...
    warmup_steps: int | None = None    # ... or in optimizer steps (wins when given) ...
    warmup_fraction: float | None = None  # ... or a fraction of all steps (when neither is)

    def __post_init__(self):
        _check("batch_size", self.batch_size, 1, COUNT_MAX, integer=True)
        _check("grad_accum", self.grad_accum, 1, COUNT_MAX, integer=True)
        _check("lr", self.lr, 0.0, 10.0, low_open=True)
        _check("min_lr", self.min_lr, 0.0, 10.0)
        _check("weight_decay", self.weight_decay, 0.0, 10.0)
        _check("beta1", self.beta1, 0.0, 1.0)
        _check("beta2", self.beta2, 0.0, 1.0)
        _check("grad_clip", self.grad_clip, 0.0, 1e6)
        _check("max_epochs", self.max_epochs, 1, COUNT_MAX, integer=True)
        _check("max_steps", self.max_steps, 1, COUNT_MAX, integer=True, none_ok=True)
        _check("warmup_epochs", self.warmup_epochs, 0.0, 1e6, none_ok=True)
        _check("warmup_fraction", self.warmup_fraction, 0.0, 1.0, none_ok=True)
        _check("warmup_steps", self.warmup_steps, 0, COUNT_MAX, integer=True, none_ok=True)
        if self.min_lr > self.lr:
            # the cosine would climb from lr to min_lr: the schedule inverted (issue 22)
            raise UserError(f"--min_lr {self.min_lr:g} is above --lr {self.lr:g}: the schedule "
                            f"would climb instead of decay; give --min_lr at most --lr (the "
                            f"presets use lr / 10)")

    def schedule(self, steps_per_epoch: int) -> tuple[int, int]:
        """(warmup_steps, total_steps) in optimizer steps; `steps_per_epoch` counts optimizer
        steps (loader batches // grad_accum)."""
        if steps_per_epoch <= 0:
            raise UserError("an epoch has no optimizer step: fewer batches than --grad_accum")
        total = self.max_steps if self.max_steps is not None else self.max_epochs * steps_per_epoch
        if self.warmup_steps is not None:
            warmup = self.warmup_steps
        elif self.warmup_epochs is not None:
            warmup = math.ceil(self.warmup_epochs * steps_per_epoch)
        else:
            warmup = math.ceil((self.warmup_fraction or 0.0) * total)
        return min(warmup, total), total


@dataclass(frozen=True)
class RunArgs(_FromMapping):
    """Where a run writes, how it resumes and logs (the run / checkpoint flags of every stage)."""

    out_dir: str = "out"           # checkpoints, metrics.jsonl, curves.png, run_config.json
    preset: str = ""               # named in the first console line only
    save_every: int = 1000         # checkpoint every N optimizer steps besides epoch ends; 0 = off
    keep_checkpoints: int = 3      # step checkpoints kept; 0 keeps all
    resume: str = "auto"           # auto | none | a checkpoint file or folder
    log_every: int = 10            # console / metrics line every N optimizer steps
    wandb: bool = False
    wandb_project: str = "neurolm"
    wandb_run_name: str | None = None

    def __post_init__(self):
        _check("save_every", self.save_every, 0, COUNT_MAX, integer=True)
        _check("keep_checkpoints", self.keep_checkpoints, 0, COUNT_MAX, integer=True)
        _check("log_every", self.log_every, 1, COUNT_MAX, integer=True)
