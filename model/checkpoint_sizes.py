"""Sizes a checkpoint states, checked before any module is built (`checked_args`,
`check_layer_count`), and the encoder's shape read off the weights of checkpoints that do not
state it (`infer_nt_config`: the public checkpoints). Every problem is a `CheckpointError` naming
the file."""
from __future__ import annotations

import math

from model.model_neural_transformer import CONV_STRIDE, NTConfig


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, written or does not fit: the message names the
    file."""


# ----------------------------------------------------------------------------------------------
# Sizes, checked before anything is built

# name: (smallest, largest). The upper bounds are far above any NeuroLM (XL: 48 layers, width
# 1600) and far below what would exhaust memory before the shape comparison could say so.
_INT_RANGES = {
    "n_layer": (1, 1024), "n_head": (1, 1024), "n_embd": (1, 65536), "block_size": (1, 1 << 20),
    "vocab_size": (1, 1 << 22), "patch_size": (1, 1 << 16), "num_classes": (0, 1 << 20),
    "in_chans": (1, 1 << 16), "out_chans": (4, 4096), "n_channel_embeddings": (1, 1 << 16),
    "n_time_embeddings": (1, 1 << 16), "n_eeg_codes": (1, 1 << 20), "n_embed": (1, 1 << 20),
    "embed_dim": (1, 1 << 16), "decoder_out_dim": (2, 1 << 16),
}
_FLOAT_RANGES = {"dropout": (0.0, 1.0), "decay": (0.0, 1.0), "init_scale": (0.0, 1e3)}
_BOOLS = ("bias", "use_mean_pooling", "per_sample_text_positions")
_CHOICES = {"gelu_approximate": ("none", "tanh")}


def checked_args(args, source: str, what: str) -> dict:
    """`args` (a checkpoint's model_args / encoder_args / decoder_args / vq_args) when every size
    in it is an int in range, every fraction finite and in range, every flag a bool, and the
    width divides into the heads; else a CheckpointError naming the file and the value."""
    if not isinstance(args, dict):
        raise CheckpointError(f"{source}: '{what}' is a {type(args).__name__}, not a dict")
    for name, value in args.items():
        if value is None:
            continue
        where = f"{source}: {what}.{name} = {value!r}"
        if name in _INT_RANGES:
            lo, hi = _INT_RANGES[name]
            if isinstance(value, bool) or not isinstance(value, int):
                raise CheckpointError(f"{where} is not a whole number")
            if not lo <= value <= hi:
                raise CheckpointError(f"{where} is out of range ({lo}..{hi})")
        elif name in _FLOAT_RANGES:
            lo, hi = _FLOAT_RANGES[name]
            if (isinstance(value, bool) or not isinstance(value, (int, float))
                    or not math.isfinite(value) or not lo <= value <= hi):
                raise CheckpointError(f"{where} is not a number in {lo}..{hi}")
        elif name in _BOOLS and not isinstance(value, bool):
            raise CheckpointError(f"{where} is not true/false")
        elif name in _CHOICES and value not in _CHOICES[name]:
            raise CheckpointError(f"{where} is not one of {', '.join(_CHOICES[name])}")
    if args.get("out_chans") is not None and args["out_chans"] % 4:
        raise CheckpointError(f"{source}: {what}.out_chans = {args['out_chans']} is not a "
                              f"multiple of 4 (GroupNorm with 4 groups)")
    n_embd, n_head = args.get("n_embd"), args.get("n_head")
    if n_embd is not None and n_head is not None and n_embd % n_head:
        raise CheckpointError(f"{source}: {what}.n_embd = {n_embd} is not divisible by "
                              f"n_head = {n_head}")
    return args


def check_layer_count(sd: dict, blocks_prefix: str, n_layer: int, source: str,
                       what: str) -> None:
    """The stored layers under blocks_prefix ("...h." / "...blocks.") are exactly 0..n_layer-1:
    a claimed depth never builds more layers than the file holds."""
    found = {k[len(blocks_prefix):].split(".", 1)[0] for k in sd if k.startswith(blocks_prefix)}
    if found != {str(i) for i in range(n_layer)}:
        raise CheckpointError(f"{source}: {what}.n_layer = {n_layer}, but the weights hold "
                              f"{len(found)} layer(s) under '{blocks_prefix}'")


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

    def size(name, dim):
        tensor = state_dict.get(prefix + name)
        if tensor is None or tensor.dim() <= dim:
            raise CheckpointError(f"{source}: '{prefix}{name}' is missing or has too few "
                                  f"dimensions, so the encoder's shape cannot be read")
        return int(tensor.shape[dim])

    if not has("pos_embed.weight"):
        raise CheckpointError(f"{source}: no '{prefix}pos_embed.weight', so no NeuralTransformer "
                              f"weights under '{prefix}'")
    n_chan, width = size("pos_embed.weight", 0), size("pos_embed.weight", 1)
    n_layer = 0
    while has(f"blocks.{n_layer}.ln_1.weight"):
        n_layer += 1
    if n_head is None:
        if width not in _PUBLIC_HEADS_BY_WIDTH:
            raise CheckpointError(f"{source}: cannot tell the number of attention heads of a "
                                  f"{width}-wide encoder; pass a checkpoint with encoder_args")
        n_head = _PUBLIC_HEADS_BY_WIDTH[width]
    args = dict(n_layer=n_layer, n_head=n_head, n_embd=width, n_channel_embeddings=n_chan,
                bias=has("blocks.0.ln_1.bias"), n_time_embeddings=size("time_embed.weight", 0),
                use_mean_pooling=has("fc_norm.weight"))
    if has("patch_embed.conv1.weight"):
        out_chans = size("patch_embed.conv1.weight", 0)
        steps = size("patch_embed.l.0.weight", 1) // max(out_chans, 1)
        patch = _PUBLIC_PATCH_SIZE if steps == _PUBLIC_CONV_STEPS else steps * CONV_STRIDE
        args.update(in_chans=1, out_chans=out_chans, patch_size=patch)
    else:
        args.update(in_chans=size("patch_embed.weight", 1))
    if has("head.weight"):
        args.update(num_classes=size("head.weight", 0))
    checked_args({k: v for k, v in args.items() if k != "n_layer" or v}, source,
                 f"encoder read off '{prefix}*'")
    return NTConfig(**args)


def nt_config(args: dict | None, sd: dict, prefix: str, source: str, what: str) -> NTConfig:
    if not args:
        return infer_nt_config(sd, prefix, source=source)
    return NTConfig.from_dict(checked_args(args, source, what))
