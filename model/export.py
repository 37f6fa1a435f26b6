"""Checkpoint files: the one reader (`load_checkpoint`: a torch checkpoint, or an exported folder)
and exported weights both ways (`export` writes them, `read_exported` reads them back).

An exported model is what people share: a folder with the weights alone as `model.safetensors`
(no pickle, tensors shared by two names stored once) and `config.json` (the checkpoint's layout
keys, so load_neurolm / load_vq need nothing else), plus an optional README.md model card. The
files are readable by others (0644 under the usual umask).

A NeuroLM on a Hugging Face backbone keeps its language model in the library's own format: `lm/`
(save_pretrained + its tokenizer, [SEP] included: transformers loads it as it is), with LoRA
merged into it; or, for a LoRA run exported with adapter=True, `adapter/` (peft's adapter
folder, [SEP]'s trained rows included, + the tokenizer: peft loads it onto the base folder's model).
model.safetensors then holds the EEG side (encoder, channel embedding, projection, EEG head).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from model.backbone import BackboneError
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
from model.hf_checkpoint import ADAPTER_KEY, BACKBONE_KEY, is_hf_neurolm, is_lora

EXPORT_WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.json"
EXPORT_CARD = "README.md"
EXPORT_FORMAT = "neurolm-export-1"
TASKS_KEY = "tasks"    # a train_instruction.py checkpoint's [Task.to_dict(), ...] (tasks/)
LM_FOLDER = "lm"                # a Hugging Face backbone's LM (LoRA merged), save_pretrained
ADAPTER_FOLDER = "adapter"      # a LoRA run's adapters as peft writes them
LM_PREFIX = "LM."               # the backbone's names in a NeuroLM state dict


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


def exported_state(path, tokenizer_path=None, adapter: bool = False,
                   base_folder=None) -> tuple[dict, dict, nn.Module | None]:
    """(tensors, config, hf) of a NeuroLM or VQ checkpoint's weights alone, for
    model.safetensors and config.json. The model is rebuilt first, so public checkpoints without
    encoder_args export complete; tensors shared by two names (the LM head tied to the token
    embedding) are stored once and named in config["tied"].

    On a Hugging Face backbone the LM is left out of tensors and hf is the rebuilt NeuroLM, for
    its LM's own folder: `.LM` is the transformers model with any LoRA merged into it, or with
    adapter=True a LoRA run's peft model (its adapters are what gets written); config["backbone"]
    says what it is (backbone_summary). hf is None otherwise. base_folder: where a LoRA run's
    base folder is now, when it moved."""
    source = str(path)
    ckpt = load_checkpoint(path)
    names = model_state(ckpt, source)
    hf, summary = None, None
    if any(k.startswith(("GPT2.", LM_PREFIX)) for k in names):
        vq_ckpt = load_checkpoint(tokenizer_path) if tokenizer_path is not None else None
        try:
            model = build_neurolm_from_checkpoint(ckpt, source, vq_ckpt, str(tokenizer_path),
                                                  base_folder)
        except BackboneError as err:
            raise CheckpointError(str(err)) from err
        if adapter and not is_lora(model):
            raise CheckpointError(f"{path}: not a LoRA checkpoint, so it has no adapters to "
                                  f"write (export it without --adapter)")
        if is_hf_neurolm(model):
            summary = backbone_summary(ckpt[BACKBONE_KEY], adapter)
            if is_lora(model) and not adapter:
                from model.lora import merge_lora
                merge_lora(model)
            hf = model
        kind, layout = "neurolm", neurolm_checkpoint(model)
    elif any(k.startswith("VQ.") for k in names):
        if adapter:
            raise CheckpointError(f"{path}: a VQ checkpoint has no adapters (export it "
                                  f"without --adapter)")
        kind, layout = "vq", vq_checkpoint(build_vq_from_checkpoint(ckpt, source))
    else:
        raise CheckpointError(f"{path}: neither a NeuroLM (GPT2.*, LM.*) nor a VQ (VQ.*) "
                              f"checkpoint")
    state = layout.pop(MODEL_KEY)
    layout.pop(OPTIMIZER_KEY)
    layout.update({k: ckpt.get(k) for k in (ITER_NUM_KEY, EPOCH_KEY)})
    for key in (TASKS_KEY, "calibration", "training_profile"):   # what the run knows of its
        if ckpt.get(key) is not None:                             # tasks travels with them
            layout[key] = ckpt[key]
    if hf is not None:      # the LM's folder holds its weights, config and tokenizer
        state = {k: v for k, v in state.items() if not k.startswith(LM_PREFIX)}
        for key in ("config", "text"):
            layout[BACKBONE_KEY].pop(key)
        layout[BACKBONE_KEY]["folder"] = ADAPTER_FOLDER if adapter else LM_FOLDER
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
    if summary is not None:
        config["backbone"] = summary
    return tensors, config, hf


def backbone_summary(layout: dict, adapter: bool) -> dict:
    """What a model card says of a Hugging Face backbone, from a checkpoint's "backbone"
    entry: architecture, base folder (a LoRA run's, with its identity; a full fine-tune's
    starting folder, as its tokenizer recorded it), LoRA settings and how it was exported."""
    lora = layout.get("lora")
    text = layout.get("text") if isinstance(layout.get("text"), dict) else {}
    return {"architecture": layout.get("model_type"),
            "base_folder": layout.get("base_folder") or text.get("source"),
            "base_identity": layout.get("base_identity"), "lora": lora,
            "export": "adapter" if adapter else "merged LoRA" if lora else "full"}


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


def _write_folder(path: Path, write: Callable[[Path], object]) -> None:
    """write(tmp) into a new folder beside path, its files made readable by others and
    fsynced, then put in place of path (an old path is moved aside first and removed after): a
    failed write is one CheckpointError and leaves the previous folder."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        write(tmp)
        for file in tmp.rglob("*"):
            if file.is_file():
                os.chmod(file, _shared_file_mode())
                with open(file, "rb+") as f:
                    os.fsync(f.fileno())
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists():
                os.replace(old, path)
            raise
    except (OSError, SafetensorError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise CheckpointError(f"{path}: cannot be written ({reason})") from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _save_lm(model: nn.Module, folder: Path, adapter: bool) -> None:
    """The LM and its tokenizer as transformers saves them, or a LoRA run's adapter folder."""
    from model.hf_backbone import progress_bars_on_a_terminal_only

    progress_bars_on_a_terminal_only()
    if adapter:
        from model.lora import save_adapter
        save_adapter(model, folder)
    else:
        model.LM.save_pretrained(folder)
        model.text.tokenizer.save_pretrained(folder)


def export(checkpoint, out_dir, tokenizer_path=None,
           card: Callable[[dict], str] | None = None, adapter: bool = False,
           base_folder=None) -> Path:
    """model.safetensors + config.json in out_dir (+ README.md, the text card(config) gives, and
    lm/ or adapter/ for a Hugging Face backbone: see exported_state): what load_neurolm / load_vq
    read directly. Returns out_dir."""
    tensors, config, hf = exported_state(checkpoint, tokenizer_path, adapter, base_folder)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CheckpointError(f"{out_dir}: cannot be made a folder ({err.strerror})") from err
    written = None
    if hf is not None:
        written = config["checkpoint"][BACKBONE_KEY]["folder"]
        _write_folder(out_dir / written, lambda tmp: _save_lm(hf, tmp, adapter))
    was_export = (out_dir / EXPORT_CONFIG).is_file()
    _write_shared(out_dir / EXPORT_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    text = json.dumps(config, indent=1, allow_nan=False) + "\n"
    _write_shared(out_dir / EXPORT_CONFIG, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    for stale in {LM_FOLDER, ADAPTER_FOLDER} - {written}:   # of an earlier export there
        if was_export and (out_dir / stale).is_dir():
            shutil.rmtree(out_dir / stale, ignore_errors=True)
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
    backbone = layout.get(BACKBONE_KEY)
    extra = (_read_lm_folder(config_path, backbone, state)
             if isinstance(backbone, dict) and "folder" in backbone else {})
    if map_location not in (None, "cpu"):
        state = {k: v.to(map_location) for k, v in state.items()}
    return {**layout, MODEL_KEY: state, OPTIMIZER_KEY: None, **extra}


def _read_lm_folder(config_path: Path, backbone: dict, state: dict) -> dict:
    """An exported Hugging Face backbone's lm/ or adapter/ folder into the checkpoint dict:
    config and text tokenizer into the "backbone" entry, the LM's weights into `state` (LM.*);
    -> {ADAPTER_KEY: the adapter weights} for an adapter folder (peft's names: they are loaded
    by peft, model/hf_checkpoint.lora_neurolm), else {}."""
    from model.hf_backbone import ATTENTION_IMPLEMENTATIONS, load_causal_lm
    from model.text_tokenizer import HFTextTokenizer

    name = backbone["folder"]
    if name not in (LM_FOLDER, ADAPTER_FOLDER):
        raise CheckpointError(f"{config_path}: backbone folder {name!r} is neither "
                              f"{LM_FOLDER!r} nor {ADAPTER_FOLDER!r}")
    folder = config_path.parent / name
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: missing (the exported model's language model)")
    try:
        backbone["text"] = HFTextTokenizer.from_folder(folder).state()
        if name == ADAPTER_FOLDER:
            from peft.utils import load_peft_weights
            return {ADAPTER_KEY: load_peft_weights(str(folder), device="cpu")}
        attn = backbone.get("attn_implementation")
        lm = load_causal_lm(folder, attn if attn in ATTENTION_IMPLEMENTATIONS else "sdpa")
    except (BackboneError, OSError, SafetensorError) as err:
        raise CheckpointError(f"{folder}: not a readable model folder ({err})") from err
    backbone["config"] = lm.config.to_dict()
    state.update({LM_PREFIX + k: v for k, v in lm.state_dict().items()})
    return {}
