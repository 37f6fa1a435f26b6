"""A local Hugging Face causal-LM folder as NeuroLM's backbone (never downloaded).

`load_causal_lm(folder)` reads a folder written by `save_pretrained` (config.json, weights,
tokenizer files) through transformers' AutoModelForCausalLM with `local_files_only=True`;
`HFBackbone(lm, eeg_head)` is the model/backbone.py interface over it: input embeddings from
the model's own embedding, positions as `position_ids`, the NeuroLM mask as a ready 4-D mask
(transformers passes a 4-D mask through unchanged to every layer), the library's own
DynamicCache, the model's own text head, and a separate EEG-code head beside it.

Only attention implementations that apply an arbitrary mask are accepted: "sdpa" and "eager".
FlashAttention kernels take only padding + causal, so NeuroLM's rule (all channels of one second
see each other) would silently become plain causal attention there.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch
from torch import nn

from model.backbone import Backbone, BackboneError
from model.lora import embed_tokens, head_logits, token_rows
from model.model import attention_bias

# model_type in config.json -> what it covers. Every entry is checked by
# tests/test_backbone.py with a tiny random model of that architecture.
SUPPORTED_ARCHITECTURES = {
    "gpt2": "GPT-2",
    "llama": "Llama (SmolLM, TinyLlama, Llama 2/3)",
    "qwen2": "Qwen2 / Qwen2.5",
    "qwen3": "Qwen3",
    "mistral": "Mistral",
    "phi3": "Phi-3",
}
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def read_config(folder):
    """The transformers config of a local model folder; BackboneError when it is not one or its
    architecture is not supported."""
    from transformers import AutoConfig

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise BackboneError(f"{folder}: not a Hugging Face model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise BackboneError(f"{folder}/config.json: unreadable ({' '.join(str(err).split())})")
    if config.model_type not in SUPPORTED_ARCHITECTURES:
        raise BackboneError(
            f"{folder}: architecture {config.model_type!r} is not supported as a backbone "
            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    return config


def progress_bars_on_a_terminal_only() -> None:
    """transformers' own progress bars (reading, writing weights) as the project's: on a
    terminal only, none in a redirected log."""
    from transformers.utils import logging

    if sys.stderr.isatty():
        logging.enable_progress_bar()
    else:
        logging.disable_progress_bar()


def load_causal_lm(folder, attn_implementation: str = "sdpa",
                   dtype: torch.dtype = torch.float32) -> nn.Module:
    """The causal LM of a local folder, in `dtype`, with the given attention implementation."""
    if attn_implementation not in ATTENTION_IMPLEMENTATIONS:
        raise BackboneError(
            f"attention implementation {attn_implementation!r} cannot apply NeuroLM's mask "
            f"(use one of {', '.join(ATTENTION_IMPLEMENTATIONS)})")
    from transformers import AutoModelForCausalLM

    read_config(folder)
    progress_bars_on_a_terminal_only()
    lm = AutoModelForCausalLM.from_pretrained(
        Path(folder), local_files_only=True, attn_implementation=attn_implementation,
        dtype=dtype)
    # a model class may overrule the request (one without that kernel): refuse, never fall back
    used = lm.config._attn_implementation
    if used != attn_implementation:
        raise BackboneError(f"{folder}: asked for {attn_implementation!r} attention, the model "
                            f"uses {used!r}")
    return lm


class HFBackbone(Backbone):
    """A transformers causal LM (of SUPPORTED_ARCHITECTURES) as a backbone.

    lm: the PreTrainedModel (its base model runs the sequence, its output embedding is the text
    head); eeg_head: Linear(width, n_codes, bias=False) over the same final hidden states, or
    None for a text-only view; text_vocab: rows of the text head that are the tokenizer's words
    (default: all of them; Qwen pads its head beyond its tokenizer).
    """

    def __init__(self, lm: nn.Module, eeg_head: nn.Linear | None = None,
                 text_vocab: int | None = None):
        model_type = lm.config.model_type
        if model_type not in SUPPORTED_ARCHITECTURES:
            raise BackboneError(f"architecture {model_type!r} is not supported as a backbone")
        if lm.config._attn_implementation not in ATTENTION_IMPLEMENTATIONS:
            raise BackboneError(f"attention implementation {lm.config._attn_implementation!r} "
                                f"cannot apply NeuroLM's mask")
        head = lm.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise BackboneError(f"{model_type}: a text head with a bias is not supported")
        # under a peft wrapper (model/lora.py) the adapters sit inside the transformers model
        self.lm = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        self.eeg_head, self.base = eeg_head, self.lm.base_model
        self.width = lm.config.hidden_size
        self.n_layer = lm.config.num_hidden_layers
        self.text_vocab = head.weight.shape[0] if text_vocab is None else text_vocab
        self.n_eeg_codes = 0 if eeg_head is None else eeg_head.weight.shape[0]
        # transformers 5 renamed past_key_values to cache
        params = inspect.signature(self.base.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # learned position tables (GPT-2) have a last row; rotary positions do not
        self.max_position = (lm.config.max_position_embeddings if model_type == "gpt2"
                             else None)
        self.sliding_window = (getattr(lm.config, "sliding_window", None)
                               if getattr(lm.config, "use_sliding_window", True) else None)

    def embed_text(self, ids, positions):
        return embed_tokens(self.lm.get_input_embeddings(), ids)   # positions: run's ids

    def run(self, embeds, positions, mask, cache=None, last_n=None):
        if self.max_position is not None and int(positions.max()) >= self.max_position:
            raise ValueError(f"position {int(positions.max())} >= max_position_embeddings "
                             f"{self.max_position}")
        n_keys = embeds.shape[1] + (0 if cache is None else cache.get_seq_length())
        if self.sliding_window is not None and n_keys > self.sliding_window:
            # the mask below replaces the model's own, window included
            raise ValueError(f"sequence of {n_keys} tokens is longer than the model's sliding "
                             f"window ({self.sliding_window})")
        if mask is None and cache is not None:
            raise ValueError("cached attention needs an explicit mask")
        # additive (0 / -inf): eager attention adds the mask to the scores, so a bool mask
        # would be added as 0/1 and mask nothing
        bias = attention_bias(mask, embeds)
        out = self.base(inputs_embeds=embeds, position_ids=positions.long(), attention_mask=bias,
                        use_cache=cache is not None, **{self._cache_arg: cache})
        hidden = out.last_hidden_state                                       # (B, L, C)
        return hidden[:, -last_n:] if last_n else hidden

    def head_weight(self):
        text = self.lm.get_output_embeddings().weight
        if self.eeg_head is None:
            return text
        return torch.cat((text, self.eeg_head.weight.to(text.dtype)), dim=0)

    def text_logits(self, hidden):
        # without building the (text + codes) matrix
        return head_logits(self.lm.get_output_embeddings(), hidden, self.text_vocab)

    def eeg_logits(self, hidden):
        if self.eeg_head is None:
            raise ValueError("this backbone has no EEG-code head")
        return self.eeg_head(hidden)

    @property
    def eeg_offset(self):
        return token_rows(self.lm.get_output_embeddings())[0].shape[0]

    def blocks(self):
        layers = getattr(self.base, "layers", None) or getattr(self.base, "h", None)
        if not isinstance(layers, nn.ModuleList):
            raise BackboneError(f"{self.lm.config.model_type}: no list of layers found")
        return layers

    def set_recompute(self, on):
        # the library's own (renamed in transformers 5); without the reentrant variant, the
        # input embeddings need no requires_grad
        name = ("activation" if hasattr(self.lm, "activation_checkpointing_enable")
                else "gradient")
        if on:
            getattr(self.lm, f"{name}_checkpointing_enable")({"use_reentrant": False})
        else:
            getattr(self.lm, f"{name}_checkpointing_disable")()

    def new_cache(self, capacity=None):
        from transformers import DynamicCache

        # without the config: full layers only (a sliding-window layer would drop keys that
        # the NeuroLM mask still addresses)
        return DynamicCache()

    def cache_rows(self, cache, index):
        from transformers import DynamicCache

        return DynamicCache([(keys.index_select(0, index), values.index_select(0, index))
                             for keys, values, *_ in cache])
