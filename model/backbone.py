"""The language model behind the EEG, behind one interface: the native GPT (`GPTBackbone`) or a
local Hugging Face causal LM (`model.hf_backbone.HFBackbone`).

NeuroLM needs five things of its LM, and nothing else: embed text ids (and take EEG features as
input embeddings); run a sequence of input embeddings with explicit position ids, an explicit
attention mask and a key/value cache; the text head; the EEG-code head beside it; a cache to
grow while decoding. Positions are each
token's second (EEG) and then consecutive after the sample's own last second (text), given as
position ids, so a learned position table (GPT-2) and rotary attention (Llama, Qwen, Mistral,
Phi-3) see the same geometry. The mask is model.model.build_attention_mask's rule; `mask=None`
means plain causal text at positions 0..L-1 (the text corpus), the model's own fast path.

A backbone is a view: it owns no parameters, the modules it reads belong to the caller (NeuroLM
keeps the native GPT under its public name `GPT2`, so public checkpoints keep their keys).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from model.gpt2_bpe import GPT2_VOCAB_SIZE, PADDED_VOCAB_SIZE
from model.model import GPT, KVCache, embed_sequence
from model.precision import text_head


class BackboneError(ValueError):
    """A backbone folder or option that cannot work (one line naming the folder or option)."""


class Backbone:
    """What NeuroLM calls on its language model. Shapes: B batch, L tokens, C width."""

    width: int              # C, the hidden size
    n_layer: int
    text_vocab: int         # text-head rows that are words of the tokenizer (what decoding reads)
    n_eeg_codes: int        # rows of the EEG-code head

    def embed_text(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, M) ids at (B, M) positions -> (B, M, C) input embeddings. A learned position
        table is added here; rotary positions are applied by `run`, from the same ids."""
        raise NotImplementedError

    def embed_eeg(self, features: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, N, C) EEG features at (B, N) positions (their seconds) -> input embeddings."""
        return features

    def run(self, embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
            cache=None, last_n: int | None = None) -> torch.Tensor:
        """(B, L, C) input embeddings (`embed_text`, `embed_eeg`) at (B, L) positions -> final
        hidden states (B, L, C), or of the last ``last_n`` tokens. mask: bool (B, 1, L, L_keys),
        True = visible (keys are the cache's tokens, then these); None = plain causal text, no
        cache. cache: from `new_cache`, grown in place by these tokens."""
        raise NotImplementedError

    def head_weight(self) -> torch.Tensor:
        """(n_text_rows + n_eeg_codes, C): the text head's rows, then one row per EEG code (the
        training loss is one cross-entropy over both, as the public code)."""
        raise NotImplementedError

    @property
    def eeg_offset(self) -> int:
        """Row of head_weight() of EEG code 0."""
        raise NotImplementedError

    def new_cache(self, capacity: int | None = None):
        """An empty key/value cache; capacity: tokens it will hold (a hint)."""
        raise NotImplementedError

    def cache_rows(self, cache, index: torch.Tensor):
        """A new cache of these batch rows of `cache` (rows may repeat); `cache` is unchanged."""
        raise NotImplementedError

    def blocks(self) -> nn.ModuleList:
        """The transformer layers (what FSDP shards one by one)."""
        raise NotImplementedError

    def set_recompute(self, on: bool) -> None:
        """Keep only each layer's input in training and recompute the layer in the backward pass
        (activation checkpointing)."""
        raise NotImplementedError

    # -- shared by every backbone ----------------------------------------------------------------

    def text_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., text_vocab) logits of the tokenizer's words only."""
        return F.linear(hidden, self.head_weight()[:self.text_vocab])

    def eeg_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., n_eeg_codes) logits of the EEG codes."""
        return F.linear(hidden, self.head_weight()[self.eeg_offset:])

    def embed_sequence(self, eeg: torch.Tensor | None, text_ids: torch.Tensor | None,
                       input_time: torch.Tensor | None = None,
                       input_mask: torch.Tensor | None = None, per_sample: bool = True):
        """(embeddings (B, L, C), positions (B, L), validity (B, L)) of EEG embeddings (B, N, C)
        followed by text ids (B, M): EEG at its seconds, text after the sample's own last real
        second (per_sample=False: after the batch's, the public rule). Text only: 0..M-1."""
        return embed_sequence(self.embed_eeg, self.embed_text, eeg, text_ids, input_time,
                              input_mask, per_sample)


class GPTBackbone(Backbone):
    """The native nanoGPT-style GPT (model/model.py) as a backbone.

    Its head is one Linear: the padded text vocabulary (50304 rows, of which the first 50257 are
    GPT-2's words) then one row per EEG code, the layout of the public checkpoints. Positions
    are its learned table, added by GPT.embed_text/embed_eeg themselves, so NeuroLM through this
    view computes bit for bit (gradients included) what it computed before.
    """

    def __init__(self, gpt: GPT, text_vocab: int = GPT2_VOCAB_SIZE,
                 eeg_offset: int = PADDED_VOCAB_SIZE):
        self.gpt = gpt
        self.width, self.n_layer = gpt.config.n_embd, gpt.config.n_layer
        self.text_vocab = text_vocab
        self._eeg_offset = eeg_offset
        self.n_eeg_codes = max(0, gpt.lm_head.out_features - eeg_offset)

    def embed_text(self, ids, positions):
        return self.gpt.embed_text(ids, positions)

    def embed_eeg(self, features, positions):
        return self.gpt.embed_eeg(features, positions)

    def run(self, embeds, positions, mask, cache=None, last_n=None):
        return self.gpt.run(embeds, mask, cache, last_n)   # positions: already in the embeds

    def head_weight(self):
        return self.gpt.lm_head.weight

    def text_logits(self, hidden):
        return text_head(self.gpt.lm_head, hidden, self.text_vocab)   # packed in bf16 too

    @property
    def eeg_offset(self):
        return self._eeg_offset

    def new_cache(self, capacity=None):
        return KVCache(self.n_layer, capacity)

    def cache_rows(self, cache, index):
        return cache.rows(index)

    def blocks(self):
        return self.gpt.transformer.h

    def set_recompute(self, on):
        self.gpt.recompute_blocks = on


def new_eeg_head(width: int, n_codes: int) -> nn.Linear:
    """An EEG-code head for a backbone whose own head holds only text: drawn like GPT-2's."""
    head = nn.Linear(width, n_codes, bias=False)
    nn.init.normal_(head.weight, mean=0.0, std=0.02)
    return head
