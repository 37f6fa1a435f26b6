"""NeuralTransformer: the EEG encoder of the VQ tokenizer (and, with a Linear patch embedding,
its two decoders).

Encoder: temporal-conv patch embedding of each 1 s patch, plus a channel embedding of input_chans
and a time embedding of input_time, then pre-norm blocks with bidirectional attention in which
padded keys are masked, then LayerNorm(eps 1e-6) on every token. Decoder: the same with
Linear(code_dim, n_embd) in place of the convolutions. Module names follow the public checkpoints
(patch_embed.conv1, pos_embed, time_embed, blocks.N.attn.c_attn, fc_norm, ...).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from model.model import (
    ArgsDict,
    Block,
    as_attention_mask,
    attention_bias,
    build_attention_mask,
)

# Conv stride 8 with kernel 15, padding 7: a patch of P samples gives (P - 1) // 8 + 1 steps
# (25 for P = 200, hence the public 16 x 25 = 400 features).
CONV_STRIDE = 8


def temporal_conv_steps(patch_size: int) -> int:
    return (patch_size - 1) // CONV_STRIDE + 1


@dataclass
class NTConfig(ArgsDict):
    block_size: int = 1024          # tokens per sequence (informational; masks are built per call)
    patch_size: int = 200           # samples per token (1 s at 200 Hz)
    num_classes: int = 0            # > 0 adds a classification head (unused by NeuroLM)
    in_chans: int = 1               # 1: encoder (temporal conv); else decoder input width (codes)
    out_chans: int = 16             # conv channels; multiple of 4 (GroupNorm with 4 groups)
    use_mean_pooling: bool = True   # public layout: final LayerNorm named fc_norm
    init_scale: float = 0.001
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = False
    n_channel_embeddings: int = 256  # rows of pos_embed (channel vocabulary, padded)
    n_time_embeddings: int = 64      # rows of time_embed: the longest sample in seconds


class TemporalConv(nn.Module):
    """(B, N, P) patches -> (B, N, n_embd): three conv/GroupNorm/GELU stages, then Linear+GELU."""

    def __init__(self, patch_size: int = 200, out_chans: int = 16, n_embd: int = 768):
        super().__init__()
        if out_chans % 4:
            raise ValueError(f"out_chans={out_chans} must be a multiple of 4 (GroupNorm(4))")
        self.conv1 = nn.Conv2d(1, out_chans, kernel_size=(1, 15), stride=(1, CONV_STRIDE),
                               padding=(0, 7))
        self.gelu1 = nn.GELU()
        self.norm1 = nn.GroupNorm(4, out_chans)
        self.conv2 = nn.Conv2d(out_chans, out_chans, kernel_size=(1, 3), padding=(0, 1))
        self.gelu2 = nn.GELU()
        self.norm2 = nn.GroupNorm(4, out_chans)
        self.conv3 = nn.Conv2d(out_chans, out_chans, kernel_size=(1, 3), padding=(0, 1))
        self.norm3 = nn.GroupNorm(4, out_chans)
        self.gelu3 = nn.GELU()
        self.l = nn.Sequential(nn.Linear(out_chans * temporal_conv_steps(patch_size), n_embd),
                               nn.GELU())

    def forward(self, x):
        B, N, P = x.shape
        x = x.unsqueeze(1)                          # (B, 1, N, P)
        x = self.gelu1(self.norm1(self.conv1(x)))   # (B, oc, N, S)
        x = self.gelu2(self.norm2(self.conv2(x)))
        x = self.gelu3(self.norm3(self.conv3(x)))
        x = x.permute(0, 2, 3, 1).reshape(B, N, -1)  # (B, N, S * oc), step-major like the public
        return self.l(x)                            # (B, N, n_embd)


class NeuralTransformer(nn.Module):
    def __init__(self, config: NTConfig):
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.patch_size = config.patch_size
        self.patch_embed = (TemporalConv(config.patch_size, config.out_chans, config.n_embd)
                            if config.in_chans == 1 else nn.Linear(config.in_chans, config.n_embd))
        self.pos_embed = nn.Embedding(config.n_channel_embeddings, config.n_embd)
        self.time_embed = nn.Embedding(config.n_time_embeddings, config.n_embd)
        self.pos_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.norm = (nn.Identity() if config.use_mean_pooling
                     else nn.LayerNorm(config.n_embd, eps=1e-6))
        self.fc_norm = (nn.LayerNorm(config.n_embd, eps=1e-6) if config.use_mean_pooling
                        else None)
        self.head = (nn.Linear(config.n_embd, config.num_classes) if config.num_classes > 0
                     else nn.Identity())
        self.apply(self._init_weights)
        self._rescale_residual_projections()
        if isinstance(self.head, nn.Linear):
            self.head.weight.data.mul_(config.init_scale)
            self.head.bias.data.mul_(config.init_scale)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.zeros_(m.bias)
            nn.init.ones_(m.weight)
        elif isinstance(m, nn.Embedding):
            # LaBraM's init for its channel and time embeddings. At nn.Embedding's N(0, 1) they
            # outweigh the patch content ~10:1, and after the final LayerNorm the features of two
            # recordings differ by ~1 % of their scale: the LM reading them cannot tell them apart.
            nn.init.trunc_normal_(m.weight, std=0.02)

    def _rescale_residual_projections(self):
        # deeper blocks start with smaller residual writes (BEiT / LaBraM init)
        for depth, block in enumerate(self.blocks, start=1):
            block.attn.c_proj.weight.data.div_(math.sqrt(2.0 * depth))
            block.mlp.c_proj.weight.data.div_(math.sqrt(2.0 * depth))

    def _check_indices(self, input_chans, input_time):
        if int(input_time.max()) >= self.config.n_time_embeddings:
            raise ValueError(
                f"input_time reaches second {int(input_time.max())} but the time embedding has "
                f"{self.config.n_time_embeddings} rows: samples must be at most "
                f"{self.config.n_time_embeddings} s long")
        if int(input_chans.max()) >= self.config.n_channel_embeddings:
            raise ValueError(f"channel index {int(input_chans.max())} >= "
                             f"{self.config.n_channel_embeddings} channel embeddings")

    def forward_features(self, x, input_chans, input_time, input_mask=None, attn_mask=None,
                         return_all_tokens=True):
        """x (B, N, P) patches, or (B, N, in_chans) codes for a decoder -> (B, N, n_embd).

        input_mask (B, N) bool marks real tokens: every token attends every real token
        (bidirectional). attn_mask, a dense (B, [1,] N, N) mask, overrides it. With neither, all
        tokens are real (the public code fell back to causal attention there: not the method).
        """
        B, N = x.shape[:2]
        self._check_indices(input_chans, input_time)
        x = self.patch_embed(x)                                           # (B, N, C)
        x = x + self.pos_embed(input_chans.long()) + self.time_embed(input_time.long())
        x = self.pos_drop(x)
        if attn_mask is not None:
            mask = as_attention_mask(attn_mask)
        elif input_mask is not None:
            same_time = torch.zeros(B, N, dtype=torch.long, device=x.device)
            mask = build_attention_mask(same_time, input_mask)            # (B, 1, N, N)
        else:
            mask = torch.ones(B, 1, N, N, dtype=torch.bool, device=x.device)
        mask = attention_bias(mask, x)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x)
        if self.fc_norm is None:
            return x
        return self.fc_norm(x) if return_all_tokens else self.fc_norm(x.mean(1))

    def forward(self, x, input_chans, input_time, input_mask=None, attn_mask=None,
                return_all_tokens=True):
        return self.head(self.forward_features(x, input_chans, input_time, input_mask,
                                               attn_mask, return_all_tokens))
