"""Tiny checkpoints and sample files for the simple_inference.py tests.

The LM is "planted": its blocks write nothing to the residual stream and its embedding and head
form a bigram table that answers " Yes" after "Answer:", so the script's whole path (generation,
parser, option scoring) has a known outcome without any training.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from model import NeuroLM, VQ_Align, neurolm_checkpoint, vq_checkpoint
from model.gpt2_bpe import encode
from model.model import GPTConfig
from model.model_neural_transformer import NTConfig

WORKLOAD_CHANNELS = ["FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4",
                     "T5", "T6", "P3", "P4", "O1", "O2", "FZ", "CZ", "PZ"]
# EEGMAT's own labels (the raw EDF names), which the preprocessing core normalises.
WORKLOAD_EDF_NAMES = [f"EEG {c}" for c in "Fp1 Fp2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 "
                      "Fz Cz Pz".split()] + ["EEG A2-A1", "ECG ECG"]
SFREQ = 200
WIDTH = 32


def encoder_config(width: int = WIDTH) -> NTConfig:
    return NTConfig(n_layer=1, n_head=2, n_embd=width, out_chans=4)


def tiny_vq(width: int = WIDTH, seed: int = 0) -> VQ_Align:
    torch.manual_seed(seed)
    decoder = NTConfig(n_layer=1, n_head=2, n_embd=width, in_chans=16)
    return VQ_Align(encoder_config(width), decoder, n_embed=64, embed_dim=16,
                    quantize_kmeans_init=False, text_vocab_size=16)


def _zero_mean_directions(n: int, width: int) -> torch.Tensor:
    """n orthogonal +-1 vectors with zero mean (rows of a Sylvester-Hadamard matrix but the
    first), so a bias-free LayerNorm leaves them unchanged."""
    h = torch.ones(1, 1)
    while h.shape[0] < width:
        h = torch.cat((torch.cat((h, h), 1), torch.cat((h, -h), 1)), 0)
    return h[1:n + 1, :width]


def plant_answer(model: NeuroLM, chain: list[int], scale: float = 10.0) -> None:
    """Make the LM a bigram table: after chain[i] comes chain[i + 1]."""
    gpt = model.GPT2
    with torch.no_grad():
        for block in gpt.transformer.h:
            block.attn.c_proj.weight.zero_()
            block.mlp.c_proj.weight.zero_()
        gpt.transformer.wpe.weight.zero_()
        directions = _zero_mean_directions(len(chain) - 1, gpt.config.n_embd)
        for d, (token, nxt) in zip(directions, zip(chain, chain[1:])):
            gpt.transformer.wte.weight[token] = d
            gpt.lm_head.weight[nxt] += scale * d


def workload_yes_chain() -> list[int]:
    """The ids of "Answer: Yes <|endoftext|>" from the prompt's last token on."""
    prompt = encode("Question: Is this EEG segment of high workload? Answer:")
    whole = encode("Question: Is this EEG segment of high workload? Answer: Yes <|endoftext|>")
    return whole[len(prompt) - 1:]


def tiny_neurolm(vq: VQ_Align, seed: int = 0) -> NeuroLM:
    torch.manual_seed(seed)
    model = NeuroLM(GPTConfig(block_size=256, n_layer=1, n_head=2, n_embd=WIDTH),
                    vq.VQ.encoder_config, n_eeg_codes=64)
    model.tokenizer.load_state_dict(vq.VQ.encoder.state_dict())
    plant_answer(model, workload_yes_chain())
    return model.eval()


def write_checkpoints(folder: Path) -> dict[str, Path]:
    """lm (with its encoder), vq, lm_public (the public code's keys only: its encoder's shape
    must come from the VQ file), lm_bare (no tokenizer.* weights: the encoder must come from
    --tokenizer_path) and vq_wide (an encoder of another width)."""
    folder.mkdir(parents=True, exist_ok=True)
    vq = tiny_vq()
    lm = tiny_neurolm(vq)
    paths = {name: folder / f"{name}.pt" for name in ("lm", "vq", "lm_public", "lm_bare",
                                                       "vq_wide")}
    torch.save(vq_checkpoint(vq), paths["vq"])
    torch.save(neurolm_checkpoint(lm), paths["lm"])
    ckpt = torch.load(paths["lm"], weights_only=True)
    public_args = ("n_layer", "n_head", "n_embd", "block_size", "bias", "vocab_size", "dropout")
    torch.save({"model": ckpt["model"], "optimizer": None, "iter_num": 0, "epoch": 0,
                "model_args": {k: ckpt["model_args"][k] for k in public_args}},
               paths["lm_public"])
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("tokenizer.")}
    torch.save(ckpt, paths["lm_bare"])
    torch.save(vq_checkpoint(tiny_vq(width=48)), paths["vq_wide"])
    return paths


def eeg_window(n_channels: int, seconds: float, seed: int) -> np.ndarray:
    """(C, T) microvolts: a 10 Hz rhythm plus noise, tens of microvolts."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SFREQ)) / SFREQ
    phase = rng.uniform(0, 2 * np.pi, (n_channels, 1))
    x = 30 * np.sin(2 * np.pi * 10 * t + phase) + 10 * rng.standard_normal((n_channels, t.size))
    return x.astype(np.float32)


def write_samples(folder: Path, labels, channels=WORKLOAD_CHANNELS, seconds: int = 4) -> Path:
    """One {"X", "ch_names", "y"} pickle per label, named in label order."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, y in enumerate(labels):
        sample = {"X": eeg_window(len(channels), seconds, seed=i), "ch_names": list(channels),
                  "y": int(y)}
        (folder / f"rec_{i:04d}.pkl").write_bytes(pickle.dumps(sample))
    return folder
