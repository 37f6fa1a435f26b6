"""A nanoGPT-style GPT-2 that reads EEG features, text, or EEG followed by text.

Reads top to bottom: config and presets, the attention mask rule, the blocks, the model (OpenAI's
GPT-2 weights: model/gpt2_hf.py; the chunked output head + loss: model/head_loss.py). Shapes:
B batch, L sequence, nh heads, hs head size, C width.

Positions decide visibility. One rule, `build_attention_mask`, gives every mask the method needs:
query i sees key j iff key j is real and position(j) <= position(i). EEG tokens take their second
(input_time) as position, so all channels of one second see each other and earlier seconds; text
after EEG takes positions after the sample's own last EEG second, strictly increasing, so text is
causal and sees all of its sample's real EEG.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.utils.checkpoint
from torch.nn import functional as F

from model.gpt2_bpe import PADDED_VOCAB_SIZE


class ArgsDict:
    """A dataclass config as a checkpoint stores it (model_args, encoder_args, ...)."""

    @classmethod
    def from_dict(cls, args: dict):
        """Build from a checkpoint's args, ignoring keys this config does not have."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in args.items() if k in known and v is not None})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GPTConfig(ArgsDict):
    block_size: int = 1024          # rows of the position embedding
    vocab_size: int = PADDED_VOCAB_SIZE  # rows of the token embedding
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False              # biases in Linears and LayerNorms (True for OpenAI weights)
    gelu_approximate: str = "none"  # "tanh" is OpenAI's gelu_new; NeuroLM trained with "none"


# Shapes of OpenAI's GPT-2 sizes (nanoGPT's table); the from-scratch shapes of NeuroLM-B/L/XL.
GPT_PRESETS = {
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768),          # 124M
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280),   # 774M
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600),      # 1558M
}


# ----------------------------------------------------------------------------------------------
# Attention masks


def build_attention_mask(positions: torch.Tensor, key_valid: torch.Tensor,
                         query_positions: torch.Tensor | None = None) -> torch.Tensor:
    """Bool (B, 1, Lq, Lk): query i sees key j iff key_valid[j] and positions[j] <= query pos[i].

    positions, key_valid: (B, Lk) of the keys; query_positions (B, Lq) defaults to positions
    (self-attention over the same tokens). Built on the inputs' device. A query row that would
    see nothing (a padded token before any real one, an all-padding sample) is allowed to see its
    own key so softmax never produces NaN; only rows whose outputs are ignored are affected.
    """
    if query_positions is None:
        query_positions = positions
    mask = (positions[:, None, :] <= query_positions[:, :, None]) & key_valid[:, None, :].bool()
    Lq, Lk = mask.shape[1], mask.shape[2]
    if Lq <= Lk:
        # queries are the last Lq keys (prefill: all of them; cached decoding: the new ones)
        own_key = torch.zeros(Lq, Lk, dtype=torch.bool, device=mask.device)
        own_key[:, Lk - Lq:] = torch.eye(Lq, dtype=torch.bool, device=mask.device)
        mask = mask | (own_key & ~mask.any(dim=-1, keepdim=True))
    return mask.unsqueeze(1)  # (B, 1, Lq, Lk)


def text_positions_after_eeg(input_time: torch.Tensor, input_mask: torch.Tensor | None,
                             n_text: int, per_sample: bool = True) -> torch.Tensor:
    """Long (B, n_text) positions of text that follows EEG.

    per_sample=True starts each sample's text after its own last real EEG second. per_sample=False
    is the public code's rule (after the largest time index of the whole batch): kept for
    reproducing public runs, but it makes a sample's text positions depend on its neighbours.
    """
    time = input_time.long()
    if input_mask is not None:
        time = time.masked_fill(~input_mask.bool(), -1)
    last = time.max(dim=1).values  # (B,)  -1 when a sample has no real EEG
    if not per_sample:
        last = last.max().expand_as(last)
    offsets = torch.arange(n_text, device=input_time.device)
    return last[:, None] + 1 + offsets[None, :]


def as_attention_mask(mask: torch.Tensor) -> torch.Tensor:
    """A caller's dense mask ((B, L, L) or (B, 1, L, L), bool or 0/1) as SDPA's bool (B, 1, L, L).

    The public datasets ship bool masks; a 0/1 float mask is read as visibility, never added to
    the scores (the public generate() did the latter by accident). Empty rows see themselves.
    """
    mask = mask.bool() if mask.dtype != torch.bool else mask
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    L = mask.shape[-1]
    if mask.shape[-2] == L:
        eye = torch.eye(L, dtype=torch.bool, device=mask.device)
        mask = mask | (eye & ~mask.any(dim=-1, keepdim=True))
    return mask


def attention_bias(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor | None:
    """A bool mask in SDPA's additive form (0 visible, -inf hidden), made once per forward:
    SDPA converts a bool mask to exactly this at every call, that is in every layer. The dtype
    is the one attention runs in (autocast's inside autocast, else that of x)."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask, float("-inf"))


# ----------------------------------------------------------------------------------------------
# Blocks (shared with the NeuralTransformer)


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (nanoGPT; the key names must stay weight/bias)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """Keys and values of every layer so far: (B, nh, L, hs) views, grown by `append`.

    With `capacity` (the prompt plus the new tokens) each layer's buffer is allocated once and
    filled in place: growing by concatenation copies the whole cache at every step.
    """

    def __init__(self, n_layer: int, capacity: int | None = None):
        self.capacity = capacity
        self.buffers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        old = 0 if self.keys[layer] is None else self.keys[layer].shape[2]
        new = old + k.shape[2]
        if self.capacity is None or new > self.capacity:
            if self.keys[layer] is not None:
                k = torch.cat((self.keys[layer], k), dim=2)
                v = torch.cat((self.values[layer], v), dim=2)
            self.keys[layer], self.values[layer] = k, v
            return k, v
        if self.buffers[layer] is None:
            B, nh, _, hs = k.shape
            self.buffers[layer] = (k.new_empty(B, nh, self.capacity, hs),
                                   v.new_empty(B, nh, self.capacity, hs))
        kb, vb = self.buffers[layer]
        kb[:, :, old:new] = k
        vb[:, :, old:new] = v
        self.keys[layer], self.values[layer] = kb[:, :, :new], vb[:, :, :new]
        return self.keys[layer], self.values[layer]

    @property
    def length(self) -> int:
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def rows(self, index: torch.Tensor) -> "KVCache":
        """A new cache holding these batch rows of this one (an index may repeat: one copy of a
        prompt's cache per answer option). It grows by concatenation; this one is unchanged."""
        out = KVCache(len(self.keys))
        out.keys = [None if k is None else k.index_select(0, index) for k in self.keys]
        out.values = [None if v is None else v.index_select(0, index) for v in self.values]
        return out


SHORT_QUERY = 8   # queries per row up to which decoding steps take short_query_attention


def bf16_cpu(x: torch.Tensor) -> bool:
    return x.dtype == torch.bfloat16 and x.device.type == "cpu"


def short_query_attention(q, k, v, mask):
    """Attention of a few queries over many keys (a decoding step over its cache) in bf16 on a
    CPU: PyTorch's SDPA kernel is several times slower there in bf16 than in fp32, the plain
    product is faster than both. The softmax runs in fp32. The scores are k q^T transposed: k is
    a view of the cache (rows of its preallocated buffer), which k^T would copy whole at every
    step, while the product reads it where it is."""
    scores = (k @ q.transpose(-2, -1)).transpose(-2, -1).float() * (1.0 / math.sqrt(q.shape[-1]))
    if mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    else:
        scores = scores + mask
    return torch.softmax(scores, dim=-1).to(v.dtype) @ v


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.layer_idx = layer_idx

    def forward(self, x, mask=None, cache: KVCache | None = None, last_n: int | None = None):
        """mask: bool (B, 1, L, L_keys), True = visible, or its additive form (attention_bias);
        None = plain causal (text only). last_n: outputs for the last last_n tokens only (all of
        them still give keys and values)."""
        B, L, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, L, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, L, hs)
        k = k.view(B, L, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, L, hs)
        v = v.view(B, L, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, L, hs)
        if cache is not None:
            k, v = cache.append(self.layer_idx, k, v)  # (B, nh, L_keys, hs)
        if last_n is not None and last_n < L:
            if mask is None and k.shape[2] == L:   # is_causal would align the short query
                mask = torch.ones(L, L, dtype=torch.bool, device=x.device).tril()   # block left
            q, mask, L = q[:, :, -last_n:], mask[..., -last_n:, :], last_n
        dropout = self.dropout if self.training else 0.0
        if mask is not None and L <= SHORT_QUERY and dropout == 0.0 and bf16_cpu(q):
            y = short_query_attention(q, k, v, mask)
        elif mask is None:
            if k.shape[2] != L:
                raise ValueError("cached attention needs an explicit mask")
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, L, C)  # (B, L, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate=getattr(config, "gelu_approximate", "none"))
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block; the config needs n_embd, n_head, bias, dropout."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, mask=None, cache: KVCache | None = None, last_n: int | None = None):
        h = self.attn(self.ln_1(x), mask, cache, last_n)
        x = (x[:, -last_n:] if last_n else x) + h
        x = x + self.mlp(self.ln_2(x))
        return x


# ----------------------------------------------------------------------------------------------
# The model


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied until the vocabulary grows
        # A run-time choice, not part of the checkpoint: keep only each block's input in
        # training and recompute the block in the backward pass (about one more forward for
        # roughly a block's worth of activations instead of all of them).
        self.recompute_blocks = False
        self.apply(self._init_weights)
        # GPT-2 paper: scale the residual projections by the depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def get_num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    # -- vocabulary growth (NeuroLM) -----------------------------------------------------------

    def grow_vocabulary(self, n_text: int = PADDED_VOCAB_SIZE, n_extra_outputs: int = 0):
        """Embedding to n_text rows, head to n_text + n_extra_outputs rows; unties them.

        Existing rows are kept (the head keeps what it had: with GPT-2 weights, the 50257 word
        rows); new rows are drawn like the rest of the model (N(0, 0.02)).
        """
        C = self.config.n_embd
        old_wte, old_head = self.transformer.wte.weight.data, self.lm_head.weight.data
        if n_text < old_wte.shape[0] or n_text + n_extra_outputs < old_head.shape[0]:
            raise ValueError("grow_vocabulary cannot shrink the embedding or the head")
        wte = nn.Embedding(n_text, C).to(old_wte.device, old_wte.dtype)
        head = nn.Linear(C, n_text + n_extra_outputs, bias=False).to(old_head.device,
                                                                      old_head.dtype)
        nn.init.normal_(wte.weight, mean=0.0, std=0.02)
        nn.init.normal_(head.weight, mean=0.0, std=0.02)
        wte.weight.data[:old_wte.shape[0]] = old_wte
        head.weight.data[:old_head.shape[0]] = old_head
        self.transformer.wte, self.lm_head = wte, head
        self.config.vocab_size = n_text

    # -- forward -------------------------------------------------------------------------------

    def embed_text(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if int(positions.max()) >= self.config.block_size:
            raise ValueError(f"text position {int(positions.max())} >= block_size "
                             f"{self.config.block_size}")
        return self.transformer.wte(ids) + self.transformer.wpe(positions)  # (B, M, C)

    def embed_eeg(self, features: torch.Tensor, input_time: torch.Tensor) -> torch.Tensor:
        return features + self.transformer.wpe(input_time.long())  # (B, N, C)

    def run(self, x: torch.Tensor, mask: torch.Tensor | None, cache: KVCache | None = None,
            last_n: int | None = None) -> torch.Tensor:
        """Embedded tokens (B, L, C) -> final hidden states (B, L, C), or (B, last_n, C) of the
        last tokens only: the last block then computes keys and values for every token (the
        cache needs them) but attention outputs and the MLP only for those (prefill before
        decoding reads one position)."""
        x = self.transformer.drop(x)
        mask = attention_bias(mask, x)
        recompute = self.recompute_blocks and self.training and torch.is_grad_enabled()
        n_blocks = len(self.transformer.h)
        for i, block in enumerate(self.transformer.h):
            n = last_n if i == n_blocks - 1 else None
            if recompute and cache is None:
                x = torch.utils.checkpoint.checkpoint(block, x, mask, None, n,
                                                      use_reentrant=False)
            else:
                x = block(x, mask, cache, n)
        return self.transformer.ln_f(x)

    def forward(self, x_eeg=None, x_text=None, input_time=None, input_mask=None, targets=None,
                attn_mask=None, per_sample_text_positions: bool = True):
        """Logits (B, L, vocab + extra) and, with targets (B, L) (-1 ignore), the mean CE loss.

        x_eeg: EEG features (B, N, C) already in the LM's width; x_text: ids (B, M). EEG only,
        text only, or EEG followed by text. attn_mask: optional dense mask overriding the rule.
        """
        x, mask = self.embed_inputs(x_eeg, x_text, input_time, input_mask,
                                    per_sample_text_positions)
        if attn_mask is not None:
            mask = as_attention_mask(attn_mask)
        logits = self.lm_head(self.run(x, mask))  # (B, L, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss

    def embed_sequence(self, x_eeg, x_text, input_time, input_mask, per_sample=True):
        """(embedded tokens (B, L, C), positions (B, L), validity (B, L)) of EEG features
        followed by text ids: what the mask rule, generation and cached decoding start from."""
        return embed_sequence(self.embed_eeg, self.embed_text, x_eeg, x_text, input_time,
                              input_mask, per_sample)

    def embed_inputs(self, x_eeg, x_text, input_time, input_mask, per_sample=True):
        """(embedded tokens (B, L, C), bool mask (B, 1, L, L) or None for plain causal text)."""
        x, positions, valid = self.embed_sequence(x_eeg, x_text, input_time, input_mask,
                                                  per_sample)
        return x, None if x_eeg is None else build_attention_mask(positions, valid)


def embed_sequence(embed_eeg, embed_text, x_eeg, x_text, input_time, input_mask,
                   per_sample=True):
    """(input embeddings (B, L, C), positions (B, L), validity (B, L)) of EEG features (B, N, C)
    followed by text ids (B, M), embedded by embed_eeg(features, positions) and
    embed_text(ids, positions): EEG at its seconds, text after the sample's own last real second
    (per_sample=False: after the batch's, the public rule); text alone at 0..M-1."""
    if x_eeg is None and x_text is None:
        raise ValueError("give x_eeg, x_text or both")
    if x_eeg is None:
        B, M = x_text.shape
        positions = torch.arange(M, device=x_text.device).expand(B, M)
        return (embed_text(x_text, positions), positions,
                torch.ones(B, M, dtype=torch.bool, device=x_text.device))
    positions, valid = eeg_positions_and_validity(x_eeg, input_time, input_mask)
    x = embed_eeg(x_eeg, positions)
    if x_text is not None:
        text_pos = text_positions_after_eeg(positions, valid, x_text.shape[1], per_sample)
        x = torch.cat((x, embed_text(x_text, text_pos)), dim=1)  # (B, N + M, C)
        positions = torch.cat((positions, text_pos), dim=1)
        valid = torch.cat((valid, torch.ones_like(x_text, dtype=torch.bool)), dim=1)
    return x, positions, valid


def eeg_positions_and_validity(x_eeg, input_time, input_mask):
    """Long (B, N) positions and bool (B, N) validity of EEG tokens; defaults: time 0, all real."""
    B, N = x_eeg.shape[:2]
    if input_time is None:
        raise ValueError("EEG input needs input_time (the second of each token)")
    valid = (torch.ones(B, N, dtype=torch.bool, device=x_eeg.device) if input_mask is None
             else input_mask.bool())
    return input_time.long(), valid
