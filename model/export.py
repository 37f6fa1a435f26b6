"""Checkpoint files: the one reader (`load_checkpoint`: a torch checkpoint, or an exported folder)
and exported weights both ways (`export` writes them, `read_exported` reads them back).

An exported model is what people share: a folder with the weights alone as `model.safetensors`
(no pickle, tensors shared by two names stored once) and `config.json` (the checkpoint's layout
keys, so load_neurolm / load_vq need nothing else), plus an optional README.md model card. The
files are readable by others (0644 under the usual umask).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from model.checkpoints import (
    EPOCH_KEY,
    ITER_NUM_KEY,
    MODEL_KEY,
    OPTIMIZER_KEY,
    CheckpointError,
    build_neurolm_from_checkpoint,
    build_vq_from_checkpoint,
    model_state,
    neurolm_checkpoint,
    vq_checkpoint,
)

EXPORT_WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.json"
EXPORT_CARD = "README.md"
EXPORT_FORMAT = "neurolm-export-1"
TASKS_KEY = "tasks"    # a train_instruction.py checkpoint's [Task.to_dict(), ...] (tasks/)


def is_exported(path) -> bool:
    """A folder holding model.safetensors, or a .safetensors file."""
    path = Path(path)
    return (path.is_dir() and (path / EXPORT_WEIGHTS).is_file()) or path.suffix == ".safetensors"


def load_checkpoint(path, map_location="cpu") -> dict:
    """torch.load(weights_only=True) of a checkpoint dict, with errors naming the file. An
    exported model (a folder with model.safetensors + config.json, or the .safetensors file)
    reads as the same dict without optimizer (`read_exported`)."""
    path = Path(path)
    if is_exported(path):
        return read_exported(path, map_location)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - every reason becomes one error naming the file
        raise CheckpointError(f"{path}: not a readable weights-only torch checkpoint "
                              f"({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found a "
                              f"{type(ckpt).__name__}")
    return ckpt


# ----------------------------------------------------------------------------------------------
# Writing


def exported_state(path, tokenizer_path=None) -> tuple[dict, dict]:
    """(tensors, config) of a NeuroLM or VQ checkpoint's weights alone, for model.safetensors and
    config.json. The model is rebuilt first, so public checkpoints without encoder_args export
    complete; tensors shared by two names (the LM head tied to the token embedding) are stored
    once and named in config["tied"]."""
    source = str(path)
    ckpt = load_checkpoint(path)
    names = model_state(ckpt, source)
    if any(k.startswith("GPT2.") for k in names):
        vq_ckpt = load_checkpoint(tokenizer_path) if tokenizer_path is not None else None
        model = build_neurolm_from_checkpoint(ckpt, source, vq_ckpt, str(tokenizer_path))
        kind, layout = "neurolm", neurolm_checkpoint(model)
    elif any(k.startswith("VQ.") for k in names):
        kind, layout = "vq", vq_checkpoint(build_vq_from_checkpoint(ckpt, source))
    else:
        raise CheckpointError(f"{path}: neither a NeuroLM (GPT2.*) nor a VQ (VQ.*) checkpoint")
    state = layout.pop(MODEL_KEY)
    layout.pop(OPTIMIZER_KEY)
    layout.update({k: ckpt.get(k) for k in (ITER_NUM_KEY, EPOCH_KEY)})
    for key in (TASKS_KEY, "calibration", "training_profile"):   # what the run knows of its
        if ckpt.get(key) is not None:                             # tasks travels with them
            layout[key] = ckpt[key]
    tensors, tied, seen = {}, {}, {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if tensor.numel() and key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().cpu().contiguous()
    config = {"format": EXPORT_FORMAT, "kind": kind, "source": source, "tied": tied,
              "checkpoint": layout}
    return tensors, config


def _shared_file_mode() -> int:
    """rw for the owner, r for others as the umask allows (what a plain open() would give)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _write_shared(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp) beside path, made readable by others, fsynced, then renamed over path: a
    crash leaves the old file or the new one, never a torn one; a failed write (a full disk) is
    one CheckpointError naming the file. (training/io.atomic_write is above model/ in the
    layering, and safetensors writes its files 0600.)"""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.chmod(tmp, _shared_file_mode())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as err:   # safetensors reports I/O errors as its own
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise CheckpointError(f"{path}: cannot be written ({reason}); nothing was "
                              f"replaced") from err
    finally:
        tmp.unlink(missing_ok=True)


def export(checkpoint, out_dir, tokenizer_path=None,
           card: Callable[[dict], str] | None = None) -> Path:
    """model.safetensors + config.json in out_dir (+ README.md, the text card(config) gives): the
    weights alone, which load_neurolm / load_vq read directly. Returns out_dir."""
    tensors, config = exported_state(checkpoint, tokenizer_path)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"{out_dir}: cannot be made a folder ({err.strerror})") from err
    _write_shared(out_dir / EXPORT_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    text = json.dumps(config, indent=1, allow_nan=False) + "\n"
    _write_shared(out_dir / EXPORT_CONFIG, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if card is not None:
        readme = card(config)
        _write_shared(out_dir / EXPORT_CARD, lambda tmp: tmp.write_text(readme, encoding="utf-8"))
    return out_dir


# ----------------------------------------------------------------------------------------------
# Reading


def read_exported(path, map_location="cpu") -> dict:
    """An exported model as a checkpoint dict ({"model", "optimizer": None, layout keys}); every
    problem is a CheckpointError naming the file. The sizes in config.json are checked when a
    model is built from it (model/checkpoints.py), before anything is allocated."""
    path = Path(path)
    weights = path / EXPORT_WEIGHTS if path.is_dir() else path
    config_path = weights.parent / EXPORT_CONFIG
    for needed in (weights, config_path):
        if not needed.is_file():
            raise CheckpointError(f"{needed}: missing (an exported model is a folder with "
                                  f"{EXPORT_WEIGHTS} and {EXPORT_CONFIG})")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{config_path}: not a readable JSON config ({err})") from err
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{config_path}: not a config.json of an exported model "
                              f"(format {EXPORT_FORMAT!r} expected)")
    layout, tied = config.get("checkpoint"), config.get("tied", {})
    if not isinstance(layout, dict) or not isinstance(tied, dict):
        raise CheckpointError(f"{config_path}: 'checkpoint' and 'tied' must be JSON objects")
    try:
        state = load_file(str(weights), device="cpu")
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from err
    for name, source in tied.items():
        if not isinstance(source, str) or source not in state:
            raise CheckpointError(f"{config_path}: tied tensor {name!r} names {source!r}, "
                                  f"which {weights.name} does not hold")
        state[name] = state[source]
    if map_location not in (None, "cpu"):
        state = {k: v.to(map_location) for k, v in state.items()}
    return {**layout, MODEL_KEY: state, OPTIMIZER_KEY: None}
