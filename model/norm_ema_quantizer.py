"""NormEMAVectorQuantizer: nearest-code lookup on the unit sphere, codebook moved by EMA.

- The first training batch initialises the codebook by cosine k-means (10 iterations).
- Each training step moves every used code towards the normalised mean of the vectors assigned to
  it (decay 0.99) and re-normalises it; unused codes are left exactly where they are.
- With restart_unused_after=k, a code that no real token picked for k training steps in a row is
  moved onto a random token of the current batch. Without it (k=0, the public behaviour) the
  codes that the encoder drifts away from early in training stay dead for good: a small encoder
  trained on a CPU lost all but two of 512 codes within 20 steps.
- Loss = beta * MSE(z_q.detach(), z) (commitment); the output carries z's gradient
  (straight-through).
- Under torch.distributed the counts and sums are all-reduced and the k-means result is broadcast
  from rank 0, so every rank holds the same codebook.

Padding: with `mask` (B, N) bool, padded tokens take no part in k-means, the EMA or the loss. The
public code had no mask, so padding was fed into both; calling forward without a mask reproduces
that behaviour exactly.

State-dict names follow the public checkpoints: embedding.weight, embedding.cluster_size,
embedding.embed_avg, embedding.initted, cluster_size.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


def l2norm(t: torch.Tensor) -> torch.Tensor:
    return F.normalize(t, p=2, dim=-1)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce_(t: torch.Tensor) -> torch.Tensor:
    if _distributed():
        dist.all_reduce(t)
    return t


# Iterations of the codebook's k-means init: the public code's and the spec's (section 3).
KMEANS_ITERATIONS = 10


def _pick_rows(samples: torch.Tensor, num: int) -> torch.Tensor:
    n = samples.shape[0]
    if n >= num:
        idx = torch.randperm(n, device=samples.device)[:num]
    else:
        idx = torch.randint(0, n, (num,), device=samples.device)
    return samples[idx]


def kmeans_cosine(samples: torch.Tensor, num_clusters: int,
                  num_iters: int = KMEANS_ITERATIONS):
    """(means (K, D) unit vectors, bins (K,) counts) of cosine k-means on unit vectors (n, D).

    A cluster that loses all its members keeps its previous mean.
    """
    D = samples.shape[-1]
    means = _pick_rows(samples, num_clusters)
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(num_iters):
        buckets = (samples @ means.t()).argmax(dim=-1)                  # (n,)
        bins = torch.bincount(buckets, minlength=num_clusters)          # (K,)
        sums = torch.zeros(num_clusters, D, dtype=samples.dtype, device=samples.device)
        sums.index_add_(0, buckets, samples)
        new_means = l2norm(sums / bins.clamp(min=1)[:, None])
        means = torch.where((bins == 0)[:, None], means, new_means)
    return means, bins


def codebook_usage(indices: torch.Tensor, n_codes: int, mask: torch.Tensor | None = None):
    """(share of codes used, perplexity of the code distribution) over the real tokens."""
    idx = indices.reshape(-1)
    if mask is not None:
        idx = idx[mask.reshape(-1).bool()]
    if idx.numel() == 0:
        return 0.0, 0.0
    counts = torch.bincount(idx, minlength=n_codes).float()
    p = counts / counts.sum()
    perplexity = torch.exp(-(p * torch.log(p.clamp(min=1e-10))).sum())
    return float((counts > 0).float().mean()), float(perplexity)


class EmbeddingEMA(nn.Module):
    """The codebook. Parameters without gradient, so the public key names stay."""

    def __init__(self, num_tokens: int, codebook_dim: int, decay: float = 0.99, eps: float = 1e-5,
                 kmeans_init: bool = True):
        super().__init__()
        self.num_tokens = num_tokens
        self.codebook_dim = codebook_dim
        self.decay = decay
        self.eps = eps
        weight = (torch.zeros(num_tokens, codebook_dim) if kmeans_init
                  else l2norm(torch.randn(num_tokens, codebook_dim)))
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.cluster_size = nn.Parameter(torch.zeros(num_tokens), requires_grad=False)
        self.embed_avg = nn.Parameter(weight.clone(), requires_grad=False)
        # float, shape (1,): the public layout
        self.register_buffer("initted", torch.tensor([0.0 if kmeans_init else 1.0]))
        self.update = True

    @torch.no_grad()
    def init_embed_(self, data: torch.Tensor):
        if bool(self.initted.item()) or data.shape[0] == 0:
            return
        embed, bins = kmeans_cosine(data.float(), self.num_tokens)
        if _distributed():
            dist.broadcast(embed, src=0)
            dist.broadcast(bins, src=0)
        self.weight.data.copy_(embed)
        self.cluster_size.data.copy_(bins.to(self.cluster_size.dtype))
        self.initted.fill_(1.0)

    def forward(self, embed_id):
        return F.embedding(embed_id, self.weight)


class NormEMAVectorQuantizer(nn.Module):
    def __init__(self, n_embed: int, embedding_dim: int, beta: float = 1.0, decay: float = 0.99,
                 eps: float = 1e-5, statistic_code_usage: bool = True, kmeans_init: bool = True,
                 restart_unused_after: int = 0):
        super().__init__()
        self.restart_unused_after = restart_unused_after
        # not in the state dict: public checkpoints have no such entry
        self.register_buffer("steps_unused", torch.zeros(n_embed, dtype=torch.long),
                             persistent=False)
        self.codebook_dim = embedding_dim
        self.num_tokens = n_embed
        self.beta = beta
        self.decay = decay
        self.embedding = EmbeddingEMA(n_embed, embedding_dim, decay, eps, kmeans_init)
        self.statistic_code_usage = statistic_code_usage
        if statistic_code_usage:
            self.register_buffer("cluster_size", torch.zeros(n_embed))  # EMA of code counts

    @property
    def n_e(self) -> int:
        return self.num_tokens

    def nearest_codes(self, z_flat: torch.Tensor) -> torch.Tensor:
        w = self.embedding.weight
        d = (z_flat.pow(2).sum(dim=1, keepdim=True) + w.pow(2).sum(dim=1)
             - 2 * z_flat @ w.t())                                   # (n, K)
        return d.argmin(dim=1)

    @torch.no_grad()
    def _ema_update(self, z_flat: torch.Tensor, idx: torch.Tensor):
        bins = torch.bincount(idx, minlength=self.num_tokens).to(z_flat.dtype)     # (K,)
        _all_reduce_(bins)
        if self.statistic_code_usage:
            self.cluster_size.mul_(self.decay).add_(bins, alpha=1 - self.decay)
        if not (self.training and self.embedding.update):
            return
        sums = torch.zeros(self.num_tokens, self.codebook_dim, dtype=z_flat.dtype,
                           device=z_flat.device).index_add_(0, idx, z_flat)        # (K, D)
        _all_reduce_(sums)
        unused = (bins == 0)[:, None]
        target = torch.where(unused, self.embedding.weight,
                             l2norm(sums / bins.clamp(min=1)[:, None]))
        w = self.embedding.weight.data
        w.mul_(self.decay).add_(target, alpha=1 - self.decay)
        w.copy_(l2norm(w))
        if self.restart_unused_after > 0:
            self._restart_unused_codes(z_flat, bins)

    @torch.no_grad()
    def _restart_unused_codes(self, z_flat: torch.Tensor, bins: torch.Tensor):
        # bins are all-reduced, so every rank finds the same dead codes; rank 0 picks the tokens
        self.steps_unused.add_(1).masked_fill_(bins > 0, 0)
        dead = self.steps_unused >= self.restart_unused_after
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        w = self.embedding.weight.data
        new = _pick_rows(z_flat, n_dead) if z_flat.shape[0] > 0 else w[dead]
        if _distributed():
            dist.broadcast(new, src=0)
        w[dead] = new.to(w.dtype)
        self.steps_unused[dead] = 0

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None):
        """z (B, N, D) -> (z_q (B, N, D) straight-through, commitment loss, indices (B*N,))."""
        z = l2norm(z)
        z_flat = z.reshape(-1, self.codebook_dim)                     # (B*N, D)
        real = None if mask is None else mask.reshape(-1).bool()
        z_real = z_flat if real is None else z_flat[real]
        if self.training:
            self.embedding.init_embed_(z_real.detach())
        idx = self.nearest_codes(z_flat)                              # (B*N,)
        z_q = self.embedding(idx).view_as(z)
        self._ema_update(z_real.detach(), idx if real is None else idx[real])
        if real is None:
            loss = self.beta * F.mse_loss(z_q.detach(), z)
        else:
            per_token = (z_q.detach() - z).pow(2).mean(dim=-1).reshape(-1)
            loss = self.beta * (per_token * real).sum() / real.sum().clamp(min=1)
        z_q = z + (z_q - z).detach()
        return z_q, loss, idx
