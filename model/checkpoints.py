"""Every checkpoint layout, and a model from a checkpoint dict, in one place.

`unwrap` gives the module under DDP / torch.compile wrappers whose state-dict keys are the
layout's; `load_state_dict_checked` is a strict load whose one error lists every misfit. Every
problem with a checkpoint is a `CheckpointError` naming the file. Files are read by
model/export.py (`load_checkpoint`: a torch .pt or an exported folder); models from files and new
models are made by model/build.py.

Layouts (those of the public train_vq.py / train_pretrain.py / train_instruction.py, plus keys
that let a reload need nothing else; keys below are the only spellings used anywhere):

    VQ:      {"model": VQ_Align state (VQ.*, domain_classifier.*, wte.weight), "optimizer",
              "encoder_args", "decoder_args", "vq_args", "iter_num", "epoch"}
    NeuroLM: {"model": NeuroLM state (GPT2.*, tokenizer.*, pos_embed.*, encode_transform_layer.*),
              "optimizer", "model_args", "encoder_args", "n_eeg_codes",
              "per_sample_text_positions", "iter_num", "epoch"}

Public checkpoints lack encoder_args / n_eeg_codes: shapes are then read off the weights. Sizes
stored in a checkpoint are checked (type, range, divisibility, against the stored tensors) before
any module is built (model/checkpoint_sizes.py), so a corrupt or hostile file fails in one line
instead of allocating. Hugging Face backbones and LoRA: model/hf_checkpoint.py.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.overrides import TorchFunctionMode

from model.checkpoint_sizes import (  # noqa: F401  (re-exported: model.CheckpointError, ...)
    CheckpointError,
    check_layer_count,
    checked_args,
    infer_nt_config,
    nt_config,
)
from model.gpt2_bpe import GPT2_VOCAB_SIZE, PADDED_VOCAB_SIZE
from model.hf_checkpoint import (
    ADAPTER_KEY,
    BACKBONE_KEY,
    hf_parts,
    lora_neurolm,
    neurolm_from_layout,
)
from model.model import GPTConfig
from model.model_neurolm import NeuroLM
from model.model_vq import CODEBOOK_SIZE, VQ_Align

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
LM_BLOCKS_PREFIX = "GPT2.transformer.h."

_GPT_ARG_NAMES = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout",
                  "gelu_approximate")
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile and DDP wrappers
_VQ_ARG_NAMES = ("n_embed", "embed_dim", "decay", "decoder_out_dim")


# ----------------------------------------------------------------------------------------------
# State dicts


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
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: state dict entry {key!r} is not a tensor "
                                  f"({type(value).__name__})")
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        clean[key] = value
    return clean


def _listing(title: str, items: list[str], limit: int = 8) -> list[str]:
    if not items:
        return []
    more = f" ... and {len(items) - limit} more" if len(items) > limit else ""
    return [f"{len(items)} {title}: " + ", ".join(items[:limit]) + more]


def _misfits(expected: dict, given: dict, names=("checkpoint", "model")):
    """(missing keys, unexpected keys, shape mismatches) of the state dict `given` against the
    state dict `expected`; `names` call them in the shape listing."""
    missing = sorted(k for k in expected if k not in given)
    unexpected = sorted(k for k in given if k not in expected)
    shapes = sorted(f"{k}: {names[0]} {tuple(given[k].shape)} vs {names[1]} {tuple(v.shape)}"
                    for k, v in expected.items()
                    if k in given and tuple(given[k].shape) != tuple(v.shape))
    return missing, unexpected, shapes


def _raise_misfits(expected: dict, given: dict, source: str) -> None:
    missing, unexpected, shapes = _misfits(expected, given)
    if missing or unexpected or shapes:
        found = (_listing("missing keys", missing) + _listing("unexpected keys", unexpected)
                 + _listing("shape mismatches", shapes))
        raise CheckpointError(f"{source}: checkpoint does not fit the model: " + "; ".join(found))


def load_state_dict_checked(module: nn.Module, state_dict: dict, source: str) -> None:
    """load_state_dict(strict=True) with one error naming the file, every missing and unexpected
    key and every shape mismatch."""
    _raise_misfits(module.state_dict(), state_dict, source)
    module.load_state_dict(state_dict, strict=True)


class _SkipValueOps(TorchFunctionMode):
    """The shape-preserving value ops of model initialisation (normal_, normalize) as no-ops:
    on the meta device they run Python decompositions whose first use imports torch._dynamo
    (seconds), and the values of a shapes-only model mean nothing. Any other op runs as is."""

    _SKIPPED = (torch.Tensor.normal_, nn.init.normal_, F.normalize)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self._SKIPPED:
            return args[0] if args else next(iter(kwargs.values()))
        return func(*args, **(kwargs or {}))


def _on_meta(make) -> nn.Module:
    """make() on the meta device: every shape, no memory, no initialisation."""
    with torch.device("meta"), _SkipValueOps():
        return make()


def _to_be_loaded(skeleton: nn.Module, make) -> nn.Module:
    """The module a strict load is about to fill: the meta skeleton given uninitialised CPU
    storage when the state dict covers every tensor of it and no two names share one, else
    make() (a non-persistent buffer keeps its built value only that way, and to_empty unties
    shared parameters). Building it again would draw every random initialisation only for the
    load to overwrite it: seconds at NeuroLM-B."""
    saved = skeleton.state_dict().keys()
    shared = (len(list(skeleton.named_parameters(remove_duplicate=False)))
              != len(list(skeleton.named_parameters())))
    if shared or any(name not in saved for name, _ in skeleton.named_buffers()):
        return make()
    return skeleton.to_empty(device="cpu")


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
    weights of a VQ checkpoint dict; sizes and shapes are checked before it is built."""
    sd = model_state(ckpt, source)
    configs = []
    for key, prefix in ((ENCODER_ARGS_KEY, VQ_ENCODER_PREFIX),
                        (DECODER_ARGS_KEY, VQ_DECODER_PREFIX)):
        config = nt_config(ckpt.get(key), sd, prefix, source, key)
        check_layer_count(sd, prefix + "blocks.", config.n_layer, source, key)
        configs.append(config)
    stored = checked_args(ckpt.get(VQ_ARGS_KEY) or {}, source, VQ_ARGS_KEY)
    vq_args = {k: stored[k] for k in _VQ_ARG_NAMES if stored.get(k) is not None}
    if CODEBOOK_WEIGHT in sd:
        n_embed, embed_dim = sd[CODEBOOK_WEIGHT].shape
        vq_args.update(n_embed=int(n_embed), embed_dim=int(embed_dim))
    if RAW_DECODER_HEAD_WEIGHT in sd:
        vq_args["decoder_out_dim"] = int(sd[RAW_DECODER_HEAD_WEIGHT].shape[0])
    checked_args(vq_args, source, VQ_ARGS_KEY)
    text_vocab = (int(sd[TEXT_EMBEDDING_WEIGHT].shape[0]) if TEXT_EMBEDDING_WEIGHT in sd
                  else GPT2_VOCAB_SIZE)

    def make():
        return VQ_Align(*configs, text_vocab_size=text_vocab, quantize_kmeans_init=False,
                        **vq_args)

    skeleton = _on_meta(make)
    _raise_misfits(skeleton.state_dict(), sd, source)
    model = _to_be_loaded(skeleton, make)
    load_state_dict_checked(model, sd, source)
    return model


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
    hf = hf_parts(model)    # (state, backbone layout) of a Hugging Face backbone: hf_checkpoint
    lm_args = ({BACKBONE_KEY: hf[1]} if hf else
               {MODEL_ARGS_KEY: {k: model.GPT2.config.to_dict()[k] for k in _GPT_ARG_NAMES}})
    return {MODEL_KEY: hf[0] if hf else model.state_dict(),
            OPTIMIZER_KEY: optimizer.state_dict() if optimizer is not None else None, **lm_args,
            ENCODER_ARGS_KEY: model.encoder_config.to_dict(),
            N_EEG_CODES_KEY: model.n_eeg_codes,
            PER_SAMPLE_POSITIONS_KEY: model.per_sample_text_positions,
            ITER_NUM_KEY: iter_num, EPOCH_KEY: epoch, **extra}


def neurolm_layout(model: nn.Module) -> dict:
    """The NeuroLM layout's keys besides the weights and the counters (what a trainer adds)."""
    ckpt = neurolm_checkpoint(model)
    return {k: v for k, v in ckpt.items()
            if k not in (MODEL_KEY, OPTIMIZER_KEY, ITER_NUM_KEY, EPOCH_KEY)}


def _check_encoder_fits(expected: dict, encoder: dict, vq_source: str, lm_source: str) -> None:
    """Raise unless the VQ's encoder weights fit (names and shapes) the LM's encoder."""
    missing, unexpected, shapes = _misfits(expected, encoder, names=("VQ", "LM"))
    problems = missing + unexpected + shapes
    if problems:
        listed = ", ".join(problems[:5]) + (f" ... ({len(problems)} in all)"
                                           if len(problems) > 5 else "")
        raise CheckpointError(f"the encoder of the VQ checkpoint {vq_source} does not fit the LM "
                              f"checkpoint {lm_source}: {listed}")


def build_neurolm_from_checkpoint(ckpt: dict, source: str, vq_ckpt: dict | None = None,
                                  vq_source: str | None = None, base_folder=None) -> NeuroLM:
    """A NeuroLM (train mode, on the CPU unless the weights were mapped elsewhere) holding the
    weights of a NeuroLM checkpoint dict; sizes and shapes are checked before it is built.

    vq_ckpt (the VQ checkpoint read from vq_source) supplies the encoder's shape when the LM
    checkpoint has no encoder_args (public checkpoints), and its weights when the LM checkpoint
    has no tokenizer.*. It must fit the LM's encoder; when the LM carries its own, different
    copy, that copy (the one it was trained with) is used and a warning says so. base_folder:
    where a LoRA checkpoint's base model folder is now, when it moved (hf_checkpoint).
    """
    sd = model_state(ckpt, source)
    if MODEL_ARGS_KEY not in ckpt and BACKBONE_KEY not in ckpt:
        raise CheckpointError(f"{source}: no '{MODEL_ARGS_KEY}' (n_layer, n_head, n_embd, ...) "
                              f"in checkpoint: not a NeuroLM checkpoint")
    vq_encoder = _vq_encoder_state(vq_ckpt, vq_source) if vq_ckpt is not None else None
    has_encoder = any(k.startswith(LM_ENCODER_PREFIX) for k in sd)
    if not has_encoder:
        if vq_encoder is None:
            raise CheckpointError(f"{source}: carries no VQ encoder weights "
                                  f"({LM_ENCODER_PREFIX}*); pass the VQ checkpoint it was "
                                  f"trained with as --tokenizer_path")
        sd.update({LM_ENCODER_PREFIX + k: v for k, v in vq_encoder.items()})
    encoder_args = ckpt.get(ENCODER_ARGS_KEY) or (vq_ckpt or {}).get(ENCODER_ARGS_KEY)
    encoder_config = nt_config(encoder_args, sd, LM_ENCODER_PREFIX, source, ENCODER_ARGS_KEY)
    check_layer_count(sd, LM_ENCODER_PREFIX + "blocks.", encoder_config.n_layer, source,
                       ENCODER_ARGS_KEY)
    n_eeg_codes = ckpt.get(N_EEG_CODES_KEY)
    if n_eeg_codes is None and LM_HEAD_WEIGHT in sd and LM_EMBEDDING_WEIGHT in sd:
        n_eeg_codes = int(sd[LM_HEAD_WEIGHT].shape[0] - sd[LM_EMBEDDING_WEIGHT].shape[0])
    n_eeg_codes = CODEBOOK_SIZE if n_eeg_codes is None else n_eeg_codes
    per_sample = ckpt.get(PER_SAMPLE_POSITIONS_KEY, True)
    checked_args({N_EEG_CODES_KEY: n_eeg_codes, PER_SAMPLE_POSITIONS_KEY: per_sample}, source,
                 "checkpoint")
    if "lora" in (ckpt.get(BACKBONE_KEY) or {}):
        return lora_neurolm(ckpt[BACKBONE_KEY], sd, source, encoder_config, n_eeg_codes,
                            per_sample, base_folder, ckpt.get(ADAPTER_KEY))
    if BACKBONE_KEY in ckpt:
        def make():
            return neurolm_from_layout(ckpt[BACKBONE_KEY], source, encoder_config, n_eeg_codes,
                                       per_sample)
    else:
        gpt_config = GPTConfig.from_dict(checked_args(ckpt[MODEL_ARGS_KEY], source,
                                                      MODEL_ARGS_KEY))
        gpt_config.vocab_size = PADDED_VOCAB_SIZE
        check_layer_count(sd, LM_BLOCKS_PREFIX, gpt_config.n_layer, source, MODEL_ARGS_KEY)

        def make():
            return NeuroLM(gpt_config, encoder_config, n_eeg_codes=n_eeg_codes,
                           per_sample_text_positions=per_sample)

    skeleton = _on_meta(make)
    if vq_encoder is not None:
        _check_encoder_fits(skeleton.tokenizer.state_dict(), vq_encoder, vq_source, source)
    _raise_misfits(skeleton.state_dict(), sd, source)
    model = _to_be_loaded(skeleton, make)
    load_state_dict_checked(model, sd, source)
    if vq_encoder is not None and has_encoder and not all(
            torch.equal(vq_encoder[k].to(v.device, v.dtype), v)
            for k, v in model.tokenizer.state_dict().items()):
        warnings.warn(f"{source} carries its own copy of the VQ encoder, which differs from "
                      f"{vq_source}; the LM's copy (the one it was trained with) is used",
                      stacklevel=3)
    return model
