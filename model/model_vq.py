"""The neural tokenizer (VQ) and its text-aligned training wrapper (VQ_Align), spec section 3.

VQ: encoder -> Linear-Tanh-Linear (fp32) -> NormEMAVectorQuantizer -> two decoders predicting
each patch's FFT amplitude (P/2 values) and the patch itself (P values).
VQ_Align: VQ + a domain classifier that sees the encoder features through gradient reversal
(target 0) and frozen GPT-2 token embeddings of text (target 1). The embeddings are handed in
(or loaded from a checkpoint's "wte.weight"): no constructor touches the network. Checkpoints:
model/checkpoints.py.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from model.gpt2_bpe import GPT2_VOCAB_SIZE
from model.model_neural_transformer import NeuralTransformer, NTConfig
from model.norm_ema_quantizer import NormEMAVectorQuantizer, codebook_usage

CODEBOOK_SIZE = 8192   # the paper's codebook (spec section 3); the LM head has one row per code


def _init_linear(m):
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _two_layer_head(width: int, out: int) -> nn.Sequential:
    head = nn.Sequential(nn.Linear(width, width), nn.Tanh(), nn.Linear(width, out))
    head.apply(_init_linear)
    return head


class VQ(nn.Module):
    def __init__(self, encoder_config: NTConfig, decoder_config: NTConfig,
                 n_embed: int = CODEBOOK_SIZE, embed_dim: int = 128, decay: float = 0.99,
                 quantize_kmeans_init: bool = True, decoder_out_dim: int | None = None,
                 smooth_l1_loss: bool = False, mask_padding_in_quantizer: bool = True,
                 restart_unused_codes_after: int = 20):
        """mask_padding_in_quantizer=False feeds padded tokens to k-means and the EMA (public);
        restart_unused_codes_after=0 never moves a dead code (public)."""
        super().__init__()
        # the decoders read codes: their input width is the code width whatever the config says
        decoder_config = dataclasses.replace(decoder_config, in_chans=embed_dim)
        self.encoder_config, self.decoder_config = encoder_config, decoder_config
        self.encoder = NeuralTransformer(encoder_config)
        self.decoder_freq = NeuralTransformer(decoder_config)
        self.decoder_raw = NeuralTransformer(decoder_config)
        self.quantize = NormEMAVectorQuantizer(n_embed=n_embed, embedding_dim=embed_dim, beta=1.0,
                                               kmeans_init=quantize_kmeans_init, decay=decay,
                                               restart_unused_after=restart_unused_codes_after)
        self.decoder_out_dim = decoder_out_dim or encoder_config.patch_size
        self.encode_task_layer = _two_layer_head(encoder_config.n_embd, embed_dim)
        self.decode_task_layer_freq = _two_layer_head(decoder_config.n_embd,
                                                      self.decoder_out_dim // 2)
        self.decode_task_layer_raw = _two_layer_head(decoder_config.n_embd, self.decoder_out_dim)
        self.loss_fn = F.smooth_l1_loss if smooth_l1_loss else F.mse_loss
        self.mask_padding_in_quantizer = mask_padding_in_quantizer
        self.vq_args = dict(n_embed=n_embed, embed_dim=embed_dim, decay=decay,
                            decoder_out_dim=self.decoder_out_dim)

    def _to_quantizer(self, features):
        with torch.autocast(device_type=features.device.type, enabled=False):
            head = self.encode_task_layer
            return head(features.to(head[-1].weight.dtype))               # (B, N, D) fp32

    @torch.no_grad()
    def codes_from_features(self, features):
        """Long (B, N) codes of encoder features (B, N, C) already computed (the same codes as
        get_codebook_indices of the patches): callers that need the frozen encoder's features
        anyway run it once."""
        z = self._to_quantizer(features)
        idx = self.quantize.nearest_codes(F.normalize(z, p=2, dim=-1).reshape(-1, z.shape[-1]))
        return idx.view(features.shape[:2])

    def encode(self, x, input_chans, input_time, input_mask=None):
        """-> (z_q (B, N, D), indices (B*N,), commitment loss, encoder features (B, N, C))."""
        features = self.encoder(x, input_chans, input_time, input_mask)   # (B, N, C)
        to_quantizer = self._to_quantizer(features)
        qmask = input_mask if self.mask_padding_in_quantizer else None
        z_q, loss, indices = self.quantize(to_quantizer, qmask)
        return z_q, indices, loss, features

    def decode(self, z_q, input_chans, input_time, input_mask=None):
        """-> (rec_freq (B, N, P/2), rec_raw (B, N, P))."""
        freq = self.decoder_freq(z_q, input_chans, input_time, input_mask)
        raw = self.decoder_raw(z_q, input_chans, input_time, input_mask)
        return self.decode_task_layer_freq(freq), self.decode_task_layer_raw(raw)

    @torch.no_grad()
    def get_codebook_indices(self, x, input_chans=None, input_time=None, input_mask=None,
                             **kwargs):
        """Long (B, N) VQ codes of the patches x (B, N, P); padded tokens get a code too."""
        _, indices, _, _ = self.encode(x, input_chans, input_time, input_mask)
        return indices.view(x.shape[0], x.shape[1])

    def forward(self, x, y_freq, y_raw, input_chans, input_time, input_mask=None):
        """-> (loss, encoder features (B, N, C), log). Predictions on padded rows are zeroed."""
        if input_mask is None:
            input_mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        z_q, indices, commit_loss, features = self.encode(x, input_chans, input_time, input_mask)
        rec_freq, rec_raw = self.decode(z_q, input_chans, input_time, input_mask)
        real = input_mask.unsqueeze(-1).to(rec_freq.dtype)                 # (B, N, 1)
        rec_freq_loss = self.loss_fn(rec_freq * real, y_freq)
        rec_raw_loss = self.loss_fn(rec_raw * real, y_raw)
        loss = commit_loss + rec_freq_loss + rec_raw_loss
        usage, perplexity = codebook_usage(indices, self.quantize.num_tokens, input_mask)
        log = {"loss": loss.item(), "commit_loss": commit_loss.item(),
               "rec_freq_loss": rec_freq_loss.item(), "rec_raw_loss": rec_raw_loss.item(),
               "codebook_usage": usage, "code_perplexity": perplexity}
        return loss, features, log


def next_second_targets(codes: torch.Tensor, input_time: torch.Tensor,
                        input_mask: torch.Tensor) -> torch.Tensor:
    """(B, N) codes -> (B, N) targets of NeuroLM's pretraining: the code of the same channel one
    second later, -1 for the last second and padding. Tokens are time-major, so that token sits
    C places later, C = the sample's channel count (its real tokens at second 0)."""
    N = codes.shape[1]
    n_chans = (input_mask & (input_time == 0)).sum(dim=1, keepdim=True)        # (B, 1)
    n_real = input_mask.sum(dim=1, keepdim=True)                                # (B, 1)
    source = torch.arange(N, device=codes.device).unsqueeze(0) + n_chans        # (B, N)
    valid = input_mask & (source < n_real)
    shifted = codes.gather(1, source.clamp(max=N - 1))
    return torch.where(valid, shifted, torch.full_like(shifted, -1))


class ReverseLayerF(torch.autograd.Function):
    """Identity forward; gradient times -alpha backward (domain-adversarial training)."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.neg() * ctx.alpha, None


EEG_DOMAIN, TEXT_DOMAIN = 0, 1


class VQ_Align(nn.Module):
    def __init__(self, encoder_config: NTConfig, decoder_config: NTConfig,
                 text_embeddings: torch.Tensor | None = None,
                 text_vocab_size: int = GPT2_VOCAB_SIZE, **vq_kwargs):
        """text_embeddings: frozen GPT-2 token embeddings (vocab, encoder width); without them
        the table starts empty (zeros) and is expected from a checkpoint's "wte.weight"."""
        super().__init__()
        self.VQ = VQ(encoder_config, decoder_config, **vq_kwargs)
        width = encoder_config.n_embd
        self.domain_classifier = nn.Sequential(nn.Linear(width, 256), nn.GELU(), nn.Linear(256, 2))
        self.domain_classifier.apply(_init_linear)
        if text_embeddings is not None:
            if text_embeddings.shape[1] != width:
                raise ValueError(f"text embeddings are {text_embeddings.shape[1]} wide but the "
                                 f"encoder is {width}: the domain classifier reads both")
            text_vocab_size = text_embeddings.shape[0]
        self.wte = nn.Embedding(text_vocab_size, width, _freeze=True)
        with torch.no_grad():
            if text_embeddings is None:
                self.wte.weight.zero_()
            else:
                self.wte.weight.copy_(text_embeddings)

    # what users of a loaded tokenizer call, without reaching into .VQ
    def get_codebook_indices(self, x, input_chans=None, input_time=None, input_mask=None,
                             **kwargs):
        return self.VQ.get_codebook_indices(x, input_chans, input_time, input_mask)

    @property
    def encoder(self) -> NeuralTransformer:
        return self.VQ.encoder

    def _domain_loss(self, features, target):
        logits = self.domain_classifier(features)                          # (B, L, 2)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-1)

    def forward(self, x, y_freq, y_raw, input_chans, input_time, input_mask=None, alpha=0.0):
        """-> (VQ loss + EEG-side domain loss, log)."""
        vq_loss, features, log = self.VQ(x, y_freq, y_raw, input_chans, input_time, input_mask)
        target = torch.full(features.shape[:2], EEG_DOMAIN, dtype=torch.long, device=x.device)
        if input_mask is not None:
            target = target.masked_fill(~input_mask.bool(), -1)
        domain_loss = self._domain_loss(ReverseLayerF.apply(features, alpha), target)
        loss = vq_loss + domain_loss
        log.update(loss=loss.item(), vq_loss=vq_loss.item(), domain_loss=domain_loss.item())
        return loss, log

    def text_domain_loss(self, text_ids, alpha=0.0):
        """Domain loss (target 1) on the frozen embeddings of a text batch (B, M) of GPT-2 ids."""
        emb = self.wte(text_ids).detach()                                   # (B, M, C)
        target = torch.full(text_ids.shape, TEXT_DOMAIN, dtype=torch.long, device=text_ids.device)
        return self._domain_loss(ReverseLayerF.apply(emb, alpha), target)
