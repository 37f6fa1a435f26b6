"""Every checkpoint read and every checkpoint layout, in one place.

Reading: `load_checkpoint` is the one weights-only reader (training resume, the tokenizer, the
LM); `unwrap` gives the module under DDP / torch.compile wrappers whose state-dict keys are the
layout's; `load_state_dict_checked` is a strict load whose one error lists every misfit. Every
problem with a checkpoint file is a `CheckpointError` naming the file.

Layouts (those of the public train_vq.py / train_pretrain.py / train_instruction.py, plus keys
that let a reload need nothing else; keys below are the only spellings used anywhere):

    VQ:      {"model": VQ_Align state (VQ.*, domain_classifier.*, wte.weight), "optimizer",
              "encoder_args", "decoder_args", "vq_args", "iter_num", "epoch"}
    NeuroLM: {"model": NeuroLM state (GPT2.*, tokenizer.*, pos_embed.*, encode_transform_layer.*),
              "optimizer", "model_args", "encoder_args", "n_eeg_codes",
              "per_sample_text_positions", "iter_num", "epoch"}

Public checkpoints lack encoder_args / n_eeg_codes: shapes are then read off the weights.
Building: `build_gpt` makes the LM of a new NeuroLM (from scratch or a local GPT-2 folder) and
`neurolm_from_vq` puts it around a VQ's frozen encoder.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model.gpt2_bpe import GPT2_VOCAB_SIZE, PADDED_VOCAB_SIZE
from model.model import GPT, GPT_PRESETS, GPTConfig, gpt_from_hf
from model.model_neural_transformer import CONV_STRIDE, NTConfig
from model.model_neurolm import NeuroLM
from model.model_vq import CODEBOOK_SIZE, VQ, VQ_Align

# keys of both layouts (and of the training checkpoints built on them)
MODEL_KEY = "model"
OPTIMIZER_KEY = "optimizer"
ITER_NUM_KEY = "iter_num"
EPOCH_KEY = "epoch"
# VQ layout
ENCODER_ARGS_KEY = "encoder_args"
DECODER_ARGS_KEY = "decoder_args"
VQ_ARGS_KEY = "vq_args"
# NeuroLM layout (ENCODER_ARGS_KEY too)
MODEL_ARGS_KEY = "model_args"
N_EEG_CODES_KEY = "n_eeg_codes"
PER_SAMPLE_POSITIONS_KEY = "per_sample_text_positions"

# state-dict prefixes and names
VQ_ENCODER_PREFIX = "VQ.encoder."          # the tokenizer's encoder inside a VQ checkpoint
VQ_DECODER_PREFIX = "VQ.decoder_freq."     # its decoders share one config
CODEBOOK_WEIGHT = "VQ.quantize.embedding.weight"
RAW_DECODER_HEAD_WEIGHT = "VQ.decode_task_layer_raw.2.weight"
TEXT_EMBEDDING_WEIGHT = "wte.weight"       # the VQ's frozen text embeddings
LM_ENCODER_PREFIX = "tokenizer."           # the same encoder inside a NeuroLM checkpoint
LM_EMBEDDING_WEIGHT = "GPT2.transformer.wte.weight"
LM_HEAD_WEIGHT = "GPT2.lm_head.weight"

_GPT_ARG_NAMES = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout",
                  "gelu_approximate")
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DDP wrappers


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit: the message names the file."""


# ----------------------------------------------------------------------------------------------
# Reading


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


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under any DDP / DataParallel / torch.compile wrappers (for state dicts)."""
    while True:
        if isinstance(model, (DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def model_state(ckpt: dict, source: str) -> dict:
    """The checkpoint's state dict with wrapper prefixes (`_orig_mod.`, `module.`) removed."""
    if not isinstance(ckpt.get(MODEL_KEY), dict):
        raise CheckpointError(f"{source}: expected a dict with a '{MODEL_KEY}' state dict")
    clean = {}
    for key, value in ckpt[MODEL_KEY].items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        clean[key] = value
    return clean


def _listing(title: str, items: list[str], limit: int = 20) -> str:
    if not items:
        return ""
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {title} ({len(items)}): " + ", ".join(items[:limit]) + more


def _misfits(expected: dict, given: dict, names=("checkpoint", "model")):
    """(missing keys, unexpected keys, shape mismatches) of the state dict `given` against the
    state dict `expected`; `names` call them in the shape listing."""
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    shapes = sorted(f"{k}: {names[0]} {tuple(given[k].shape)} vs {names[1]} {tuple(v.shape)}"
                    for k, v in expected.items()
                    if k in given and tuple(given[k].shape) != tuple(v.shape))
    return missing, unexpected, shapes


def load_state_dict_checked(module: nn.Module, state_dict: dict, source: str) -> None:
    """load_state_dict(strict=True) with one error naming the file, every missing and unexpected
    key and every shape mismatch."""
    missing, unexpected, shapes = _misfits(module.state_dict(), state_dict)
    if missing or unexpected or shapes:
        raise CheckpointError(f"{source}: checkpoint does not fit the model"
                              + _listing("missing keys", missing)
                              + _listing("unexpected keys", unexpected)
                              + _listing("shape mismatches", shapes))
    module.load_state_dict(state_dict, strict=True)


def _moved(model: nn.Module, map_location) -> nn.Module:
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")


# ----------------------------------------------------------------------------------------------
# Encoder shapes of checkpoints without encoder_args / decoder_args

# Head counts of the public encoders, by width: the state dict cannot tell the number of heads.
_PUBLIC_HEADS_BY_WIDTH = {768: 12, 400: 10}
# The public patch: 200 samples give (200 - 1) // 8 + 1 = 25 conv steps. Steps alone cannot
# tell a 200-sample patch from a 193..199 one; any other step count is taken as the largest
# patch that gives it.
_PUBLIC_PATCH_SIZE, _PUBLIC_CONV_STEPS = 200, 25


def infer_nt_config(state_dict: dict, prefix: str, n_head: int | None = None,
                    source: str = "checkpoint") -> NTConfig:
    """An NTConfig whose shapes fit the `prefix`-ed NeuralTransformer weights of a state dict.

    The number of heads is taken from n_head, else from the public models' width -> heads
    table; anything else is an error.
    """
    def has(name):
        return prefix + name in state_dict

    if not has("pos_embed.weight"):
        raise CheckpointError(f"{source}: no '{prefix}pos_embed.weight', so no NeuralTransformer "
                              f"weights under '{prefix}'")
    n_chan, width = state_dict[prefix + "pos_embed.weight"].shape
    n_layer = 0
    while has(f"blocks.{n_layer}.ln_1.weight"):
        n_layer += 1
    if n_head is None:
        if width not in _PUBLIC_HEADS_BY_WIDTH:
            raise CheckpointError(f"{source}: cannot tell the number of attention heads of a "
                                  f"{width}-wide encoder; pass a checkpoint with encoder_args")
        n_head = _PUBLIC_HEADS_BY_WIDTH[width]
    args = dict(n_layer=n_layer, n_head=n_head, n_embd=int(width),
                n_channel_embeddings=int(n_chan), bias=has("blocks.0.ln_1.bias"),
                n_time_embeddings=int(state_dict[prefix + "time_embed.weight"].shape[0]),
                use_mean_pooling=has("fc_norm.weight"))
    if has("patch_embed.conv1.weight"):
        out_chans = int(state_dict[prefix + "patch_embed.conv1.weight"].shape[0])
        steps = int(state_dict[prefix + "patch_embed.l.0.weight"].shape[1]) // out_chans
        patch = _PUBLIC_PATCH_SIZE if steps == _PUBLIC_CONV_STEPS else steps * CONV_STRIDE
        args.update(in_chans=1, out_chans=out_chans, patch_size=patch)
    else:
        args.update(in_chans=int(state_dict[prefix + "patch_embed.weight"].shape[1]))
    if has("head.weight"):
        args.update(num_classes=int(state_dict[prefix + "head.weight"].shape[0]))
    return NTConfig(**args)


def _nt_config(args: dict | None, sd: dict, prefix: str, source: str) -> NTConfig:
    return NTConfig.from_dict(args) if args else infer_nt_config(sd, prefix, source=source)


# ----------------------------------------------------------------------------------------------
# The VQ layout


def vq_checkpoint(model: nn.Module, optimizer=None, iter_num: int = 0, epoch: int = 0,
                  **extra) -> dict:
    """The public VQ checkpoint dict for a VQ_Align (DDP / compile wrappers are unwrapped)."""
    model = unwrap(model)
    return {MODEL_KEY: model.state_dict(),
            OPTIMIZER_KEY: optimizer.state_dict() if optimizer is not None else None,
            ENCODER_ARGS_KEY: model.VQ.encoder_config.to_dict(),
            DECODER_ARGS_KEY: model.VQ.decoder_config.to_dict(),
            VQ_ARGS_KEY: dict(model.VQ.vq_args),
            ITER_NUM_KEY: iter_num, EPOCH_KEY: epoch, **extra}


def vq_layout(model: nn.Module) -> dict:
    """The VQ layout's keys besides the weights and the counters (what a trainer adds)."""
    ckpt = vq_checkpoint(model)
    return {k: ckpt[k] for k in (ENCODER_ARGS_KEY, DECODER_ARGS_KEY, VQ_ARGS_KEY)}


def build_vq_from_checkpoint(ckpt: dict, source: str) -> VQ_Align:
    """A VQ_Align (train mode, on the CPU unless the weights were mapped elsewhere) holding the
    weights of a VQ checkpoint dict."""
    sd = model_state(ckpt, source)
    encoder_config = _nt_config(ckpt.get(ENCODER_ARGS_KEY), sd, VQ_ENCODER_PREFIX, source)
    decoder_config = _nt_config(ckpt.get(DECODER_ARGS_KEY), sd, VQ_DECODER_PREFIX, source)
    vq_args = dict(ckpt.get(VQ_ARGS_KEY) or {})
    if CODEBOOK_WEIGHT in sd:
        n_embed, embed_dim = sd[CODEBOOK_WEIGHT].shape
        vq_args.update(n_embed=int(n_embed), embed_dim=int(embed_dim))
    if RAW_DECODER_HEAD_WEIGHT in sd:
        vq_args["decoder_out_dim"] = int(sd[RAW_DECODER_HEAD_WEIGHT].shape[0])
    text_vocab = (int(sd[TEXT_EMBEDDING_WEIGHT].shape[0]) if TEXT_EMBEDDING_WEIGHT in sd
                  else GPT2_VOCAB_SIZE)
    model = VQ_Align(encoder_config, decoder_config, text_vocab_size=text_vocab,
                     quantize_kmeans_init=False, **vq_args)
    load_state_dict_checked(model, sd, source)
    return model


def load_vq(path, map_location="cpu") -> VQ_Align:
    """An eval-mode VQ_Align from a checkpoint of the public code or of this project.

    `.get_codebook_indices(x, input_chans, input_time, input_mask)` gives the codes; `.VQ` is
    the tokenizer itself, `.encoder` its encoder, `.wte` the text embeddings it was aligned to.
    """
    model = build_vq_from_checkpoint(load_checkpoint(path, map_location), str(path))
    return _moved(model, map_location).eval()


def _vq_encoder_state(vq_ckpt: dict, source: str) -> dict:
    """The encoder weights of a VQ checkpoint, with the names they have inside the encoder."""
    sd = model_state(vq_ckpt, source)
    encoder = {k[len(VQ_ENCODER_PREFIX):]: v for k, v in sd.items()
               if k.startswith(VQ_ENCODER_PREFIX)}
    if not encoder:
        raise CheckpointError(f"{source}: holds no VQ encoder weights ({VQ_ENCODER_PREFIX}*): "
                              f"not a checkpoint written by train_vq.py")
    return encoder


# ----------------------------------------------------------------------------------------------
# The NeuroLM layout


def neurolm_checkpoint(model: nn.Module, optimizer=None, iter_num: int = 0, epoch: int = 0,
                       **extra) -> dict:
    """The public NeuroLM checkpoint dict plus the keys that make reload need nothing else."""
    model = unwrap(model)
    gpt_args = model.GPT2.config.to_dict()
    return {MODEL_KEY: model.state_dict(),
            OPTIMIZER_KEY: optimizer.state_dict() if optimizer is not None else None,
            MODEL_ARGS_KEY: {k: gpt_args[k] for k in _GPT_ARG_NAMES},
            ENCODER_ARGS_KEY: model.encoder_config.to_dict(),
            N_EEG_CODES_KEY: model.n_eeg_codes,
            PER_SAMPLE_POSITIONS_KEY: model.per_sample_text_positions,
            ITER_NUM_KEY: iter_num, EPOCH_KEY: epoch, **extra}


def neurolm_layout(model: nn.Module) -> dict:
    """The NeuroLM layout's keys besides the weights and the counters (what a trainer adds)."""
    ckpt = neurolm_checkpoint(model)
    return {k: v for k, v in ckpt.items()
            if k not in (MODEL_KEY, OPTIMIZER_KEY, ITER_NUM_KEY, EPOCH_KEY)}


def _check_encoder_fits(model: NeuroLM, encoder: dict, vq_source: str, lm_source: str) -> None:
    """Raise unless the VQ's encoder weights fit (names and shapes) the LM's encoder."""
    expected = model.tokenizer.state_dict()
    missing, unexpected, shapes = _misfits(expected, encoder, names=("VQ", "LM"))
    problems = missing + unexpected + shapes
    if problems:
        listed = ", ".join(problems[:5]) + (f" ... ({len(problems)} in all)"
                                           if len(problems) > 5 else "")
        raise CheckpointError(f"the encoder of the VQ checkpoint {vq_source} does not fit the LM "
                              f"checkpoint {lm_source}: {listed}")


def load_neurolm(path, tokenizer_path=None, map_location="cpu") -> NeuroLM:
    """An eval-mode NeuroLM from a checkpoint of the public code or of this project.

    tokenizer_path (a VQ checkpoint) supplies the encoder's shape when the LM checkpoint has no
    encoder_args (public checkpoints), and its weights when the LM checkpoint has no tokenizer.*.
    It must fit the LM's encoder; when the LM carries its own, different copy, that copy (the
    one it was trained with) is used and a warning says so.
    """
    source = str(path)
    ckpt = load_checkpoint(path, map_location)
    sd = model_state(ckpt, source)
    if MODEL_ARGS_KEY not in ckpt:
        raise CheckpointError(f"{source}: no '{MODEL_ARGS_KEY}' (n_layer, n_head, n_embd, ...) "
                              f"in checkpoint: not a NeuroLM checkpoint")
    vq_ckpt = vq_encoder = None
    if tokenizer_path is not None:
        vq_ckpt = load_checkpoint(tokenizer_path, map_location)
        vq_encoder = _vq_encoder_state(vq_ckpt, str(tokenizer_path))
    has_encoder = any(k.startswith(LM_ENCODER_PREFIX) for k in sd)
    if not has_encoder:
        if vq_encoder is None:
            raise CheckpointError(f"{source}: carries no VQ encoder weights "
                                  f"({LM_ENCODER_PREFIX}*); pass the VQ checkpoint it was "
                                  f"trained with as --tokenizer_path")
        sd.update({LM_ENCODER_PREFIX + k: v for k, v in vq_encoder.items()})
    encoder_args = ckpt.get(ENCODER_ARGS_KEY) or (vq_ckpt or {}).get(ENCODER_ARGS_KEY)
    encoder_config = _nt_config(encoder_args, sd, LM_ENCODER_PREFIX, source)
    n_eeg_codes = ckpt.get(N_EEG_CODES_KEY)
    if n_eeg_codes is None and LM_HEAD_WEIGHT in sd and LM_EMBEDDING_WEIGHT in sd:
        n_eeg_codes = sd[LM_HEAD_WEIGHT].shape[0] - sd[LM_EMBEDDING_WEIGHT].shape[0]
    gpt_config = GPTConfig.from_dict(ckpt[MODEL_ARGS_KEY])
    gpt_config.vocab_size = PADDED_VOCAB_SIZE
    model = NeuroLM(gpt_config, encoder_config, n_eeg_codes=int(n_eeg_codes or CODEBOOK_SIZE),
                    per_sample_text_positions=ckpt.get(PER_SAMPLE_POSITIONS_KEY, True))
    if vq_encoder is not None:
        _check_encoder_fits(model, vq_encoder, str(tokenizer_path), source)
    load_state_dict_checked(model, sd, source)
    if vq_encoder is not None and has_encoder and not all(
            torch.equal(vq_encoder[k].to(v.device, v.dtype), v)
            for k, v in model.tokenizer.state_dict().items()):
        warnings.warn(f"{source} carries its own copy of the VQ encoder, which differs from "
                      f"{tokenizer_path}; the LM's copy (the one it was trained with) is used",
                      stacklevel=2)
    return _moved(model, map_location).eval()


# ----------------------------------------------------------------------------------------------
# A new NeuroLM: its GPT, then the GPT around a VQ's encoder

# LM shapes of the stage presets shared by train_pretrain.py and train_instruction.py; "paper"
# takes its layers/heads/width from GPT_PRESETS[--model].
LM_PRESETS = {
    "paper": dict(block_size=1024, dropout=0.0, bias=False),
    "tiny": dict(block_size=128, n_layer=2, n_head=4, n_embd=64, dropout=0.0, bias=False),
}


def build_gpt(init_from: str = "scratch", preset: str = "paper", model: str = "gpt2",
              text_embeddings: torch.Tensor | None = None) -> GPT:
    """The LM of a new NeuroLM, before NeuroLM grows its vocabulary.

    init_from "scratch": a fresh GPT of the preset's shape (with "paper", of GPT_PRESETS[model]);
    text_embeddings (the VQ's frozen "wte.weight", (50257, width)) become its first token
    embeddings when as wide as the LM and not all zero, so the LM starts from the embeddings the
    tokenizer was aligned to. Else init_from is a local Hugging Face GPT-2 folder or weights
    file, whose shape wins.
    """
    if init_from != "scratch":
        return gpt_from_hf(init_from)
    shape = dict(LM_PRESETS[preset])
    if preset == "paper":
        shape.update(GPT_PRESETS[model])
    gpt = GPT(GPTConfig(**shape))
    wte = text_embeddings
    if wte is not None and wte.shape[1] == gpt.config.n_embd and bool(wte.any()):
        with torch.no_grad():   # tied to lm_head until NeuroLM grows the vocabulary
            gpt.transformer.wte.weight[:GPT2_VOCAB_SIZE] = wte[:GPT2_VOCAB_SIZE]
    return gpt


def neurolm_from_vq(vq: VQ, gpt: GPT) -> NeuroLM:
    """A new NeuroLM: `gpt` reading EEG through a frozen copy of the tokenizer's encoder, with
    one output per code of its codebook."""
    model = NeuroLM(gpt.config, vq.encoder_config, n_eeg_codes=vq.quantize.num_tokens, gpt=gpt)
    model.tokenizer.load_state_dict(vq.encoder.state_dict())
    return model


def new_neurolm(tokenizer_path, init_from: str = "scratch", preset: str = "paper",
                model: str = "gpt2") -> tuple[NeuroLM, VQ]:
    """(a new NeuroLM around the encoder of the VQ checkpoint, that VQ in eval mode), both on
    the CPU. See build_gpt for init_from / preset / model."""
    vq = load_vq(tokenizer_path)
    gpt = build_gpt(init_from, preset, model, text_embeddings=vq.wte.weight)
    return neurolm_from_vq(vq.VQ, gpt), vq.VQ


# ----------------------------------------------------------------------------------------------
# Exported weights: model.safetensors + config.json, what people share


EXPORT_WEIGHTS = "model.safetensors"
EXPORT_CONFIG = "config.json"
EXPORT_FORMAT = "neurolm-export-1"


def is_exported(path) -> bool:
    """A folder holding model.safetensors, or a .safetensors file."""
    path = Path(path)
    return (path.is_dir() and (path / EXPORT_WEIGHTS).is_file()) or path.suffix == ".safetensors"


def exported_state(path, tokenizer_path=None) -> tuple[dict, dict]:
    """(tensors, config) of a NeuroLM or VQ checkpoint's weights alone, for model.safetensors and
    config.json. The model is rebuilt first (load_neurolm / load_vq), so public checkpoints
    without encoder_args export complete; tensors shared by two names (the LM head tied to the
    token embedding) are stored once and named in config["tied"]."""
    ckpt = load_checkpoint(path)
    names = model_state(ckpt, str(path))
    if any(k.startswith("GPT2.") for k in names):
        kind, layout = "neurolm", neurolm_checkpoint(load_neurolm(path, tokenizer_path))
    elif any(k.startswith("VQ.") for k in names):
        kind, layout = "vq", vq_checkpoint(load_vq(path))
    else:
        raise CheckpointError(f"{path}: neither a NeuroLM (GPT2.*) nor a VQ (VQ.*) checkpoint")
    state = layout.pop(MODEL_KEY)
    layout.pop(OPTIMIZER_KEY)
    layout.update({k: ckpt.get(k) for k in (ITER_NUM_KEY, EPOCH_KEY)})
    tensors, tied, seen = {}, {}, {}
    for name, tensor in state.items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if tensor.numel() and key in seen:
            tied[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().cpu().contiguous()
    config = {"format": EXPORT_FORMAT, "kind": kind, "source": str(path), "tied": tied,
              "checkpoint": layout}
    return tensors, config


def read_exported(path, map_location="cpu") -> dict:
    """An exported model as a checkpoint dict ({"model", "optimizer": None, layout keys}); every
    problem is a CheckpointError naming the file."""
    import json

    from safetensors import SafetensorError
    from safetensors.torch import load_file

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
    try:
        state = load_file(str(weights), device="cpu")
    except (OSError, SafetensorError) as err:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from err
    for name, source in config.get("tied", {}).items():
        state[name] = state[source]
    if map_location not in (None, "cpu"):
        state = {k: v.to(map_location) for k, v in state.items()}
    return {MODEL_KEY: state, OPTIMIZER_KEY: None, **config["checkpoint"]}
