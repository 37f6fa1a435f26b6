"""Every way to get a model object: from a checkpoint file (`load_vq`, `load_neurolm`: a torch
checkpoint of the public code or of this project, or an exported folder) or new (`build_gpt`,
`neurolm_from_vq`, `neurolm_on_hf`, `new_neurolm`, with the stage presets `LM_PRESETS`).

Checkpoint layouts and their size checks live in model/checkpoints.py, file reading in
model/export.py.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model.checkpoints import build_neurolm_from_checkpoint, build_vq_from_checkpoint
from model.export import load_checkpoint
from model.gpt2_bpe import GPT2_VOCAB_SIZE
from model.gpt2_hf import gpt_from_hf
from model.hf_backbone import load_causal_lm, read_config
from model.hf_checkpoint import grow_embeddings, note_base
from model.model import GPT, GPT_PRESETS, GPTConfig
from model.model_neurolm import NeuroLM
from model.model_vq import VQ, VQ_Align
from model.text_tokenizer import HFTextTokenizer


def _moved(model: nn.Module, map_location) -> nn.Module:
    return model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")


# ----------------------------------------------------------------------------------------------
# From a checkpoint file


def load_vq(path, map_location="cpu") -> VQ_Align:
    """An eval-mode VQ_Align from a checkpoint of the public code or of this project.

    `.get_codebook_indices(x, input_chans, input_time, input_mask)` gives the codes; `.VQ` is
    the tokenizer itself, `.encoder` its encoder, `.wte` the text embeddings it was aligned to.
    """
    model = build_vq_from_checkpoint(load_checkpoint(path, map_location), str(path))
    return _moved(model, map_location).eval()


def load_neurolm(path, tokenizer_path=None, map_location="cpu", base_folder=None) -> NeuroLM:
    """An eval-mode NeuroLM from a checkpoint of the public code or of this project (a torch
    checkpoint or an exported folder, model/export.py).

    tokenizer_path (a VQ checkpoint) supplies the encoder's shape when the LM checkpoint has no
    encoder_args (public checkpoints), and its weights when the LM checkpoint has no tokenizer.*
    (see build_neurolm_from_checkpoint). base_folder: where the base model folder of a LoRA
    checkpoint or adapter export is now, when it moved (its identity is still checked).
    """
    return read_neurolm(path, tokenizer_path, map_location, base_folder)[0]


def read_neurolm(path, tokenizer_path=None, map_location="cpu",
                 base_folder=None) -> tuple[NeuroLM, dict]:
    """load_neurolm, and the checkpoint dict it was built from (its other keys: tasks,
    calibration, ...), read once."""
    vq_ckpt = (load_checkpoint(tokenizer_path, map_location) if tokenizer_path is not None
               else None)
    ckpt = load_checkpoint(path, map_location)
    model = build_neurolm_from_checkpoint(ckpt, str(path), vq_ckpt, str(tokenizer_path),
                                          base_folder)
    return _moved(model, map_location).eval(), ckpt


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
                model: str = "gpt2", backbone: str = "auto",
                attn_implementation: str = "sdpa") -> tuple[NeuroLM, VQ]:
    """(a new NeuroLM around the encoder of the VQ checkpoint, that VQ in eval mode), both on
    the CPU. See build_gpt for init_from / preset / model, is_hf_backbone for backbone: a
    Hugging Face backbone is built by neurolm_on_hf."""
    vq = load_vq(tokenizer_path)
    if is_hf_backbone(init_from, backbone):
        return neurolm_on_hf(vq.VQ, init_from, attn_implementation), vq.VQ
    gpt = build_gpt(init_from, preset, model, text_embeddings=vq.wte.weight)
    return neurolm_from_vq(vq.VQ, gpt), vq.VQ


def neurolm_on_hf(vq: VQ, folder, attn_implementation: str = "sdpa") -> NeuroLM:
    """A new NeuroLM on the causal LM of a local Hugging Face folder (any architecture of
    model.hf_backbone.SUPPORTED_ARCHITECTURES), reading EEG through a frozen copy of the VQ's
    encoder. Its text side is the folder's tokenizer (`model.text`), with a "[SEP]" token added
    when absent: the LM's embedding grows to the tokenizer's length, new rows at the mean of
    the old ones (model.hf_checkpoint.grow_embeddings: the same bits when a LoRA checkpoint is
    rebuilt on the folder)."""
    lm = load_causal_lm(folder, attn_implementation)     # first: is it a model folder at all
    note_base(lm, folder)
    text = HFTextTokenizer.from_folder(folder)
    grow_embeddings(lm, text.n_words)
    model = NeuroLM(None, vq.encoder_config, n_eeg_codes=vq.quantize.num_tokens, hf_lm=lm,
                    text=text)
    model.tokenizer.load_state_dict(vq.encoder.state_dict())
    return model


def is_hf_backbone(init_from, backbone: str = "auto") -> bool:
    """Whether init_from is built as a Hugging Face backbone: backbone "hf" for any supported
    folder, "native" never, "auto" for folders of another architecture or vocabulary than
    GPT-2's (OpenAI GPT-2 folders keep the native GPT, the public checkpoints' layout, which
    reads text in GPT-2's BPE only)."""
    if backbone not in ("auto", "hf", "native"):
        raise ValueError(f"backbone {backbone!r}: expected auto, hf or native")
    if backbone == "native" or init_from == "scratch" or Path(init_from).is_file():
        return False    # a weights file: GPT-2's (model.gpt2_hf), into the native GPT
    config = None if backbone == "hf" else read_config(init_from)
    return config is None or config.model_type != "gpt2" or config.vocab_size != GPT2_VOCAB_SIZE
