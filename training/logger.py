"""Run logging: one console line per log call (rank 0), a JSONL metrics file, optional W&B."""
from __future__ import annotations

import json
import math
import os
import secrets
import time
from pathlib import Path

import torch

from .runtime import Runtime

METRICS_NAME = "metrics.jsonl"
WANDB_ID_NAME = "wandb_run_id.txt"


def _plain_number(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().float().item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "item") and not isinstance(value, (int, float)):  # numpy scalars
        value = value.item()
    return value


def format_value(value) -> str:
    if isinstance(value, bool) or isinstance(value, int) or not isinstance(value, float):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4f}"


def format_line(step: int, metrics: dict) -> str:
    """`step 120 | epoch 1 | loss 2.3412 | lr 3.000e-04`: one greppable line per call."""
    return " | ".join([f"step {step}"] + [f"{k} {format_value(v)}" for k, v in metrics.items()])


def _import_wandb():
    try:
        import wandb
    except ImportError as e:
        raise RuntimeError("--wandb needs the wandb package, which is not installed: "
                           "`pip install wandb`, or run without --wandb") from e
    return wandb


class Logger:
    """Metrics sink for a trainer. Non-main ranks accept calls and write nothing.

    W&B reads its API key and mode (WANDB_MODE=offline) from the environment only. The run id
    is kept in out_dir so that a resumed training continues the same W&B run.
    """

    def __init__(self, runtime: Runtime, out_dir: str | os.PathLike, wandb: bool = False,
                 project: str = "neurolm", run_name: str | None = None, config=None,
                 metrics_name: str = METRICS_NAME):
        self.runtime = runtime
        self.out_dir = Path(out_dir)
        self.metrics_path = self.out_dir / metrics_name
        self.start = time.time()
        self._wandb_run = None
        if not runtime.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if wandb:
            self._wandb_run = self._start_wandb(project, run_name, config)

    def _start_wandb(self, project, run_name, config):
        wandb = _import_wandb()
        from .io import to_plain

        id_file = self.out_dir / WANDB_ID_NAME
        # our own id (wandb's id helpers are not public API and moved between releases)
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(8)
        run = wandb.init(project=project, name=run_name, id=run_id, resume="allow",
                         dir=str(self.out_dir),
                         config=to_plain(config) if config is not None else None)
        if not id_file.is_file():
            tmp = id_file.with_suffix(".tmp")
            tmp.write_text(run_id + "\n")
            os.replace(tmp, id_file)
        return run

    def info(self, message: str) -> None:
        """A free-text console line (rank 0)."""
        self.runtime.print(message)

    def log(self, metrics: dict, step: int, console: bool = True) -> None:
        """Record `metrics` at `step`: console line, JSONL row, W&B point."""
        if not self.runtime.is_main:
            return
        plain = {k: _plain_number(v) for k, v in metrics.items()}
        if console:
            print(format_line(step, plain), flush=True)
        row = {"step": int(step), "time": round(time.time() - self.start, 3), **plain}
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, allow_nan=True) + "\n")
        if self._wandb_run is not None:
            self._wandb_run.log(plain, step=int(step))

    def close(self) -> None:
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None
