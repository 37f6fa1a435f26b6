"""Files a run writes: atomically (temp file, fsync, rename) and as strict JSON.

Kept apart from checkpoint.py so that plotting and logging can use it without import cycles.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

try:
    import fcntl
except ImportError:     # Windows
    fcntl = None

from .errors import UserError

_TMP_MARK = ".tmp-"
LOCK_NAME = ".lock"


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """write(tmp) to a temporary file beside `path`, fsync it, then rename it over `path`.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """torch.save through atomic_write."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, write)



@contextlib.contextmanager
def run_lock(out_dir: str | os.PathLike, hold: bool = True):
    """An exclusive advisory lock on out_dir/.lock while a run writes there (`hold`: this rank
    writes). A second trainer on the folder would interleave its checkpoints and metrics with
    the first one's: it is refused with one line naming the holder's pid. The OS drops the lock
    when its holder dies; the file stays (removing it would race with the next taker)."""
    if not hold or fcntl is None:      # other ranks, or Windows (no advisory locks)
        yield
        return
    path = Path(out_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise UserError(f"--out_dir {path.parent} is in use by another run (pid "
                            f"{handle.read().strip() or 'unknown'}); wait for it to finish or "
                            f"give another --out_dir") from None
        handle.truncate(0)
        print(os.getpid(), file=handle, flush=True)
        yield


def json_safe(obj):
    """NaN/Inf (an undefined metric) -> None, recursively, so the JSON is strict."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike, data, indent: int = 1) -> Path:
    """Strict JSON (non-finite numbers as null), written atomically."""
    text = json.dumps(json_safe(data), indent=indent, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def to_plain(obj):
    """Run configs (dataclasses, argparse Namespaces, Paths, NumPy values) as weights_only-safe
    dicts, lists, numbers and strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_plain(dataclasses.asdict(obj))
    if isinstance(obj, argparse.Namespace):
        return to_plain(vars(obj))
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, (str, bool, int, float, type(None), torch.Tensor)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, (Path, torch.dtype, torch.device)):
        return str(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint: convert it to "
                    "tensors, numbers, strings, lists or dicts")
