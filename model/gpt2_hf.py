"""OpenAI's GPT-2 weights as a GPT, from a local Hugging Face directory or weights file (never
downloaded): `load_hf_gpt2` (config + state dict), `gpt_from_hf` (the model)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from model.gpt2_bpe import GPT2_VOCAB_SIZE
from model.model import GPT, GPTConfig

_CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight",
                   "mlp.c_proj.weight")


def _read_hf_weights(file: Path) -> dict:
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(file))
    return torch.load(file, map_location="cpu", weights_only=True)


def _find_hf_files(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        config = path / "config.json"
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).exists():
                weights = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin")
    else:
        weights, config = path, path.parent / "config.json"
    if not weights.exists():
        raise FileNotFoundError(f"{weights}: GPT-2 weights not found")
    if not config.exists():
        raise FileNotFoundError(f"{config}: config.json of the GPT-2 weights not found")
    return config, weights


def load_hf_gpt2(path) -> tuple[GPTConfig, dict]:
    """(GPTConfig, state dict of GPT) from a local HF GPT-2 directory or weights file.

    Never downloads. Conv1D weights are transposed into Linear weights; the causal-mask buffers
    are dropped; a missing lm_head (tied) takes the token embedding.
    """
    config_file, weights_file = _find_hf_files(Path(path))
    hf = json.loads(config_file.read_text(encoding="utf-8"))
    activation = hf.get("activation_function", "gelu_new")
    config = GPTConfig(
        block_size=hf.get("n_positions", 1024), vocab_size=hf.get("vocab_size", GPT2_VOCAB_SIZE),
        n_layer=hf["n_layer"], n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=0.0, bias=True,
        gelu_approximate="tanh" if activation in ("gelu_new", "gelu_pytorch_tanh") else "none")
    raw = _read_hf_weights(weights_file)
    sd = {}
    for key, value in raw.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        name = key if key.startswith(("transformer.", "lm_head.")) else "transformer." + key
        if name.endswith(_CONV1D_WEIGHTS):
            value = value.t()
        sd[name] = value.contiguous()
    sd.setdefault("lm_head.weight", sd["transformer.wte.weight"])
    expected = ["transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"]
    expected += [f"transformer.h.{i}.{name}" for i in range(config.n_layer)
                 for name in ("ln_1.weight", "ln_2.weight") + _CONV1D_WEIGHTS]
    missing = [k for k in expected if k not in sd]
    if missing:
        raise KeyError(f"{weights_file}: not a GPT-2 checkpoint, missing {sorted(missing)}")
    return config, sd


def gpt_from_hf(path) -> GPT:
    config, sd = load_hf_gpt2(path)
    model = GPT(config)
    model.load_state_dict(sd, strict=True)
    return model
