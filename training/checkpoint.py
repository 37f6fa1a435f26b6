"""Atomic, rotating checkpoints that load with `torch.load(weights_only=True)`.

Layout of a training checkpoint (the model-specific keys of the VQ / NeuroLM layouts are added by
each trainer from model/checkpoints.py, which also holds the one reader, `load_checkpoint`):

    {"model": state_dict, "optimizer": ..., "scaler": ..., "iter_num": optimizer steps done,
     "epoch": current epoch, "step_in_epoch": loader batches consumed in that epoch,
     "rng": capture_rng_state(), "config": run arguments as plain values}

Everything stored is a tensor, dict, list, tuple, number, string, bool or None, so loading
never unpickles arbitrary objects.
"""
from __future__ import annotations

import os
import random
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import torch

from model.checkpoints import EPOCH_KEY, ITER_NUM_KEY, MODEL_KEY, OPTIMIZER_KEY, unwrap
from model.hf_checkpoint import hf_parts, is_lora

from . import fsdp
from .errors import UserError
from .io import atomic_torch_save, atomic_write, to_plain

# our resume keys, beside the layouts' MODEL_KEY, OPTIMIZER_KEY, ITER_NUM_KEY and EPOCH_KEY
SCALER_KEY = "scaler"
STEP_IN_EPOCH_KEY = "step_in_epoch"
RNG_KEY = "rng"
CONFIG_KEY = "config"
STAGE_KEY = "stage"              # which trainer wrote it (Stage.name); public files lack it
BUFFERS_KEY = "buffers"          # non-persistent buffers (e.g. the quantizer's unused-code
                                 # counters): they steer the next steps but are not model weights

LAST_NAME = "last.pt"
_CKPT_RE = re.compile(r"^ckpt-(\d+)\.pt$")
_TMP_RE = re.compile(r"^\.(?:ckpt-\d+\.pt|last\.pt)\.tmp-(\d+)$")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


# ----------------------------------------------------------------------------- RNG states

def capture_rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors and plain numbers."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss_next": py_gauss},
        "numpy": {"kind": str(np_kind), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss),
                  "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of `capture_rng_state` (CUDA states are ignored on a machine without CUDA)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()),
                     py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), int(npst["pos"]),
                         int(npst["has_gauss"]), float(npst["cached_gaussian"])))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:  # a different GPU count: at least this process's device repeats
            torch.cuda.set_rng_state(cuda[min(torch.cuda.current_device(), len(cuda) - 1)])


def training_state(model, optimizer=None, scaler=None, iter_num: int = 0, epoch: int = 0,
                   step_in_epoch: int = 0, config=None, **extra) -> dict:
    """The checkpoint dict of the layout above; `extra` adds trainer-specific keys."""
    sharded = fsdp.is_sharded(model)
    weights = fsdp.full_model_state(model) if sharded else unwrap(model).state_dict()
    kept = saved_keys(model)
    state = {
        MODEL_KEY: weights if kept is None else {k: v for k, v in weights.items() if k in kept},
        BUFFERS_KEY: nonpersistent_buffers(model),
        ITER_NUM_KEY: int(iter_num),
        EPOCH_KEY: int(epoch),
        STEP_IN_EPOCH_KEY: int(step_in_epoch),
        RNG_KEY: capture_rng_state(),
        CONFIG_KEY: to_plain(config) if config is not None else {},
    }
    if optimizer is not None:
        state[OPTIMIZER_KEY] = (fsdp.full_optimizer_state(model, optimizer) if sharded
                                else optimizer.state_dict())
    if scaler is not None:
        state[SCALER_KEY] = scaler.state_dict()
    state.update({k: to_plain(v) for k, v in extra.items()})
    return state


def nonpersistent_buffers(model) -> dict:
    """The buffers `state_dict` leaves out (registered with persistent=False), by full name."""
    found = {}
    for prefix, module in unwrap(model).named_modules():
        for name in getattr(module, "_non_persistent_buffers_set", ()):
            value = module._buffers.get(name)
            if value is not None:
                found[f"{prefix}.{name}" if prefix else name] = value.detach()
    return found


def saved_keys(model) -> set[str] | None:
    """The state-dict keys a checkpoint of `model` holds: None = all; a NeuroLM with LoRA
    (model/hf_checkpoint.py) holds what it trains, not the frozen base its folder keeps."""
    inner = unwrap(model)
    return set(hf_parts(inner)[0]) if is_lora(inner) else None


def restore_training_state(state: dict, model, optimizer=None, scaler=None,
                           restore_rng: bool = True, strict: bool = True) -> tuple[int, int, int]:
    """Load model/optimizer/scaler/RNG from `state`; returns (iter_num, epoch, step_in_epoch)."""
    kept = saved_keys(model)
    if kept is not None:   # the base weights come from the folder the model was built on
        given = set(state[MODEL_KEY])
        if strict and given != kept:
            raise KeyError(f"LoRA state: missing {sorted(kept - given)[:3]}, unexpected "
                           f"{sorted(given - kept)[:3]}")
        strict = False
    if fsdp.is_sharded(model):
        fsdp.load_full_state(model, optimizer, state[MODEL_KEY], state.get(OPTIMIZER_KEY),
                             strict=strict)
    else:
        unwrap(model).load_state_dict(state[MODEL_KEY], strict=strict)
        if optimizer is not None and OPTIMIZER_KEY in state:
            optimizer.load_state_dict(state[OPTIMIZER_KEY])
    buffers = dict(unwrap(model).named_buffers())
    for name, value in (state.get(BUFFERS_KEY) or {}).items():
        if name in buffers and buffers[name].shape == value.shape:
            buffers[name].copy_(value)
    if scaler is not None and state.get(SCALER_KEY):
        scaler.load_state_dict(state[SCALER_KEY])
    if restore_rng and RNG_KEY in state:
        restore_rng_state(state[RNG_KEY])
    return (int(state.get(ITER_NUM_KEY, 0)), int(state.get(EPOCH_KEY, 0)),
            int(state.get(STEP_IN_EPOCH_KEY, 0)))


# ----------------------------------------------------------------------------- files

def is_complete_checkpoint(path: Path) -> bool:
    """torch.save writes a zip archive whose directory is at the end: a torn file fails this."""
    try:
        return path.is_file() and zipfile.is_zipfile(path)
    except OSError:
        return False


class Checkpointer:
    """`ckpt-<step>.pt` files in `out_dir`, the newest also reachable as `last.pt`.

    Only the main process writes (pass `is_main=runtime.is_main`); `keep` newest step files are
    kept (`keep <= 0` keeps all).
    """

    def __init__(self, out_dir: str | os.PathLike, keep: int = 3, is_main: bool = True):
        self.out_dir = Path(out_dir)
        self.keep = keep
        self.is_main = is_main

    def remove_stale_temp_files(self) -> list[Path]:
        """Temporary files a killed checkpoint write left in out_dir (`.ckpt-N.pt.tmp-PID`,
        `.last.pt.tmp-PID`) whose writer is gone; nothing else is touched."""
        removed = []
        if not self.is_main or not self.out_dir.is_dir():
            return removed
        for p in self.out_dir.iterdir():
            m = _TMP_RE.match(p.name)
            if m and not _process_alive(int(m.group(1))):
                p.unlink(missing_ok=True)
                removed.append(p)
        return removed

    def path_for(self, step: int) -> Path:
        return self.out_dir / f"ckpt-{int(step):07d}.pt"

    @property
    def last_path(self) -> Path:
        return self.out_dir / LAST_NAME

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of the step files, oldest first; temporary files never match."""
        if not self.out_dir.is_dir():
            return []
        found = []
        for p in self.out_dir.iterdir():
            m = _CKPT_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
        return sorted(found)

    def save(self, state: dict, step: int) -> Path | None:
        """Write `state` as the checkpoint of `step` (main process only; others return None)."""
        if not self.is_main:
            return None
        try:
            path = atomic_torch_save(state, self.path_for(step))
            self._point_last_to(path)
        except (OSError, RuntimeError) as error:
            cause = _os_error(error)
            if cause is None:
                raise
            raise UserError(f"the checkpoint of step {step} could not be written into "
                            f"{self.out_dir} ({cause.strerror or cause}); the earlier "
                            f"checkpoints are intact: free space there and run again with "
                            f"--resume auto") from error
        self._prune()
        return path

    def _point_last_to(self, path: Path) -> None:
        # a hard link costs no space; where links are unsupported, copy (still atomically)
        def link_or_copy(tmp: Path) -> None:
            if tmp.exists():
                tmp.unlink()
            try:
                os.link(path, tmp)
            except OSError:
                shutil.copyfile(path, tmp)

        atomic_write(self.last_path, link_or_copy)

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        for _, old in self.checkpoints()[: -self.keep]:
            old.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The newest complete checkpoint in `out_dir` (torn or temporary files are passed over)."""
        for _, path in reversed(self.checkpoints()):
            if is_complete_checkpoint(path):
                return path
        return self.last_path if is_complete_checkpoint(self.last_path) else None


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind a failed write (torch.save wraps one, e.g. a full disk, in a
    RuntimeError; its own writer says "file write failed"), or None for anything else."""
    chain = [error]
    while chain[-1].__cause__ or chain[-1].__context__:
        if len(chain) > 10:
            break
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    found = next((e for e in chain if isinstance(e, OSError)), None)
    if found is None and "write failed" in str(error):
        found = OSError(str(error).splitlines()[0][:200])
    return found


def resolve_resume(resume: str | None, out_dir: str | os.PathLike) -> Path | None:
    """What `--resume` means: "auto" = the newest checkpoint in out_dir if any, "none" = start
    fresh, a folder = its newest checkpoint, a file = that file (which must exist)."""
    if resume is None or str(resume).lower() in ("none", "no", "false", ""):
        return None
    if str(resume).lower() == "auto":
        return Checkpointer(out_dir).latest()
    target = Path(resume)
    if target.is_dir():
        found = Checkpointer(target).latest()
        if found is None:
            raise UserError(f"--resume {target}: no complete checkpoint in that folder")
        return found
    if not target.is_file():
        raise UserError(f"--resume {target}: no such checkpoint file (auto = the newest in "
                        f"--out_dir, none = start fresh)")
    return target
