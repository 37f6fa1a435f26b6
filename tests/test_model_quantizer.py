"""NormEMAVectorQuantizer: k-means init, EMA moves used codes only, padding kept out."""
import torch
import torch.nn.functional as F

from model.norm_ema_quantizer import NormEMAVectorQuantizer, codebook_usage, kmeans_cosine
from tests.test_model_vq import one_torch_thread  # noqa: F401  (autouse fixture)


def clustered(n_per, centres, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = [c + noise * torch.randn(n_per, c.shape[0], generator=g) for c in centres]
    return torch.cat(pts)


def test_first_training_batch_initialises_codes_by_kmeans():
    torch.manual_seed(0)
    centres = F.normalize(torch.eye(8)[:4], dim=-1)
    z = clustered(50, centres).view(4, 50, 8)
    q = NormEMAVectorQuantizer(n_embed=4, embedding_dim=8, kmeans_init=True).train()
    assert q.embedding.initted.item() == 0 and q.embedding.weight.abs().sum() == 0
    q.embedding.update = False  # look at the k-means result alone
    _, _, idx = q(z)
    assert q.embedding.initted.item() == 1
    w = q.embedding.weight
    assert torch.allclose(w.norm(dim=-1), torch.ones(4), atol=1e-5)
    # every centre is matched by one code (cosine > 0.99) and each cluster maps to one code
    assert (centres @ w.t()).max(dim=1).values.min() > 0.99
    assert len(set(idx.view(4, 50)[:, 0].tolist())) == 4


def test_ema_moves_used_codes_and_leaves_unused_codes():
    torch.manual_seed(0)
    q = NormEMAVectorQuantizer(n_embed=4, embedding_dim=3, kmeans_init=False, decay=0.5).train()
    codes = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]])
    q.embedding.weight.data.copy_(codes)
    z = torch.tensor([[[1.0, 0.2, 0.0], [1.0, 0.4, 0.0]]])   # both near code 0
    z_q, loss, idx = q(z)
    assert idx.tolist() == [0, 0]
    target = F.normalize(F.normalize(z[0], dim=-1).mean(0), dim=-1)
    expected = F.normalize(0.5 * codes[0] + 0.5 * target, dim=-1)
    assert torch.allclose(q.embedding.weight[0], expected, atol=1e-6)
    assert torch.equal(q.embedding.weight[1:], codes[1:])       # unused: untouched
    assert q.cluster_size.tolist() == [1.0, 0.0, 0.0, 0.0]      # EMA of counts (0.5 * 2)
    assert loss.item() > 0


def test_straight_through_gradient_and_commitment_loss():
    q = NormEMAVectorQuantizer(n_embed=4, embedding_dim=3, kmeans_init=False).eval()
    z = torch.randn(2, 5, 3, requires_grad=True)
    z_q, loss, idx = q(z)
    zn = F.normalize(z, dim=-1)
    assert torch.allclose(z_q, q.embedding.weight[idx].view(2, 5, 3), atol=1e-6)
    assert torch.allclose(loss, F.mse_loss(q.embedding.weight[idx].view(2, 5, 3), zn))
    z_q.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_masked_tokens_take_no_part_in_kmeans_or_ema():
    torch.manual_seed(0)
    real = F.normalize(torch.tensor([1.0, 0, 0]), dim=0)
    pad = F.normalize(torch.tensor([0, 0, 1.0]), dim=0)
    z = torch.stack([real.expand(6, 3), pad.expand(6, 3)]).clone()   # (2, 6, 3)
    mask = torch.tensor([[True] * 6, [False] * 6])
    q = NormEMAVectorQuantizer(n_embed=2, embedding_dim=3, kmeans_init=True).train()
    q(z, mask)
    # k-means saw only the real vector: no code points at the padding direction
    assert (q.embedding.weight @ pad).max() < 0.5
    before = q.embedding.weight.clone()
    q(z, mask)
    assert torch.allclose(q.embedding.weight, before, atol=1e-6)  # real tokens sit on a code
    assert q.cluster_size.sum().item() > 0
    # the public behaviour (no mask): padding pulls a code
    q2 = NormEMAVectorQuantizer(n_embed=2, embedding_dim=3, kmeans_init=True).train()
    torch.manual_seed(1)
    q2(z)
    assert (q2.embedding.weight @ pad).max() > 0.99


def test_kmeans_keeps_empty_clusters_and_usage_statistics():
    samples = F.normalize(torch.tensor([[1.0, 0], [0.9, 0.1]]), dim=-1)
    means, bins = kmeans_cosine(samples, 4, 3)
    assert bins.sum() == 2 and means.shape == (4, 2)
    share, ppl = codebook_usage(torch.tensor([0, 0, 1, 1, 5]), 8,
                                torch.tensor([True, True, True, True, False]))
    assert share == 2 / 8 and abs(ppl - 2.0) < 1e-5


def test_codes_unused_for_k_steps_move_onto_batch_tokens():
    torch.manual_seed(0)
    codes = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [-1.0, 0, 0]])
    z = F.normalize(torch.tensor([[[1.0, 0.1, 0.0], [1.0, 0.0, 0.1], [1.0, 0.05, 0.05]]]), dim=-1)

    def quantizer(restart_after):
        q = NormEMAVectorQuantizer(n_embed=4, embedding_dim=3, kmeans_init=False,
                                   restart_unused_after=restart_after).train()
        q.embedding.weight.data.copy_(codes)
        return q

    q = quantizer(2)
    q(z)
    assert torch.equal(q.embedding.weight[1:], codes[1:])          # one idle step: not yet
    q(z)
    moved = q.embedding.weight[1:]
    # each dead code now sits exactly on one of the batch's tokens, and the rule never touches
    # a code in use
    assert (moved @ z[0].t()).max(dim=1).values.min() > 1 - 1e-6
    assert q.steps_unused.tolist() == [0, 0, 0, 0]
    assert "steps_unused" not in q.state_dict()                     # public key layout kept
    public = quantizer(0)
    for _ in range(5):
        public(z)
    assert torch.equal(public.embedding.weight[1:], codes[1:])      # public: dead stays dead
