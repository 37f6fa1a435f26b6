"""VQ / VQ_Align: shapes, losses, public key names, checkpoint round trip."""
import pytest
import torch

from model import VQ_Align, load_vq, vq_checkpoint
from model.model_neural_transformer import NeuralTransformer, NTConfig

WIDTH, CODES, CODE_DIM = 32, 16, 8


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: thread hand-offs cost more than the maths (a
    generation test took 5 s with the default threads and 0.2 s with one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
# what the public train_vq.py stores in "encoder_args" / "decoder_args"
PUBLIC_ENCODER_ARGS = dict(n_layer=2, n_head=4, n_embd=WIDTH, block_size=64, bias=False,
                           dropout=0.0, num_classes=0, in_chans=1, out_chans=8)
PUBLIC_DECODER_ARGS = dict(PUBLIC_ENCODER_ARGS, n_layer=1, in_chans=CODE_DIM)


def block_keys(prefix, n_layer):
    names = ["ln_1.weight", "attn.c_attn.weight", "attn.c_proj.weight", "ln_2.weight",
             "mlp.c_fc.weight", "mlp.c_proj.weight"]
    return [f"{prefix}blocks.{i}.{n}" for i in range(n_layer) for n in names]


def public_encoder_keys(prefix, n_layer):
    conv = [f"{prefix}patch_embed.{m}.{p}" for m in ("conv1", "norm1", "conv2", "norm2", "conv3",
                                                      "norm3", "l.0") for p in ("weight", "bias")]
    return conv + [f"{prefix}pos_embed.weight", f"{prefix}time_embed.weight",
                   f"{prefix}fc_norm.weight", f"{prefix}fc_norm.bias"] + block_keys(prefix, n_layer)


def public_decoder_keys(prefix, n_layer):
    return [f"{prefix}patch_embed.weight", f"{prefix}patch_embed.bias", f"{prefix}pos_embed.weight",
            f"{prefix}time_embed.weight", f"{prefix}fc_norm.weight",
            f"{prefix}fc_norm.bias"] + block_keys(prefix, n_layer)


def two_layer(prefix):
    return [f"{prefix}.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]


PUBLIC_VQ_KEYS = (
    public_encoder_keys("VQ.encoder.", 2) + public_decoder_keys("VQ.decoder_freq.", 1)
    + public_decoder_keys("VQ.decoder_raw.", 1)
    + ["VQ.quantize.embedding.weight", "VQ.quantize.embedding.cluster_size",
       "VQ.quantize.embedding.embed_avg", "VQ.quantize.embedding.initted",
       "VQ.quantize.cluster_size"]
    + two_layer("VQ.encode_task_layer") + two_layer("VQ.decode_task_layer_freq")
    + two_layer("VQ.decode_task_layer_raw") + two_layer("domain_classifier") + ["wte.weight"])


def tiny_vq(seed=0):
    torch.manual_seed(seed)
    return VQ_Align(NTConfig.from_dict(PUBLIC_ENCODER_ARGS),
                    NTConfig.from_dict(PUBLIC_DECODER_ARGS),
                    text_embeddings=torch.randn(50, WIDTH), n_embed=CODES, embed_dim=CODE_DIM)


def tiny_batch(B=2, C=3, seconds=(4, 2), N=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, 200, generator=g)
    chans = torch.randint(0, 130, (B, N), generator=g)
    time = torch.zeros(B, N, dtype=torch.long)
    mask = torch.zeros(B, N, dtype=torch.bool)
    for b, s in enumerate(seconds):
        n = min(s * C, N)
        time[b, :n] = torch.arange(n) // C
        mask[b, :n] = True
        x[b, n:] = 0
    return x, chans, time, mask


def test_encoder_shapes_and_derived_conv_width():
    enc = NeuralTransformer(NTConfig(n_layer=1, n_head=2, n_embd=48, out_chans=4, patch_size=100))
    assert enc.patch_embed.l[0].in_features == 4 * 13
    x, chans, time, mask = tiny_batch()
    out = enc(x[..., :100], chans, time, mask)
    assert out.shape == (2, 12, 48) and torch.isfinite(out).all()
    default = NTConfig()
    assert (default.n_embd, default.n_head, default.n_layer, default.bias) == (768, 12, 12, False)


def test_new_encoder_features_follow_the_signal_not_the_position():
    # at init, two recordings' features at the same (channel, second) must differ by more than
    # the features of one recording at different positions resemble each other: the LM reads them
    enc = NeuralTransformer(NTConfig(n_layer=2, n_head=4, n_embd=64, out_chans=8)).eval()
    g = torch.Generator().manual_seed(0)
    S, N = 16, 24
    x = torch.randn(S, N, 200, generator=g) * torch.rand(S, 1, 1, generator=g) * 3
    chans = torch.arange(N).repeat(S, 1) % 8
    time = torch.arange(N).repeat(S, 1) // 8
    with torch.no_grad():
        h = enc(x, chans, time)                                       # (S, N, C)
    between_recordings = h.var(dim=0).mean(0).sum()
    assert between_recordings / h.var(dim=(0, 1)).sum() > 0.5


def test_encoder_ignores_padded_tokens():
    enc = NeuralTransformer(NTConfig.from_dict(PUBLIC_ENCODER_ARGS)).eval()
    x, chans, time, mask = tiny_batch()
    # padded patches stay zero (the conv's GroupNorm pools over all of a sample's tokens, as in
    # the public model); what padding carries through attention must not matter
    other_chans, other_time = chans.clone(), time.clone()
    other_chans[1, 6:], other_time[1, 6:] = 7, 3
    a, b = enc(x, chans, time, mask), enc(x, other_chans, other_time, mask)
    assert torch.allclose(a[:, :6], b[:, :6], atol=1e-6)


def test_vq_align_forward_losses_log_and_codes():
    model = tiny_vq()
    x, chans, time, mask = tiny_batch()
    y_freq, y_raw = torch.randn(2, 12, 100), torch.randn(2, 12, 200)
    loss, log = model(x, y_freq, y_raw, chans, time, mask, alpha=0.5)
    loss.backward()
    for key in ("loss", "commit_loss", "rec_freq_loss", "rec_raw_loss", "domain_loss",
                "codebook_usage", "code_perplexity"):
        assert isinstance(log[key], float)
    assert 0 < log["codebook_usage"] <= 1
    assert model.VQ.encoder.blocks[0].attn.c_attn.weight.grad is not None
    assert model.wte.weight.grad is None and not model.wte.weight.requires_grad
    text_loss = model.text_domain_loss(torch.randint(0, 50, (2, 7)), 0.5)
    assert text_loss.ndim == 0 and torch.isfinite(text_loss)
    codes = model.VQ.get_codebook_indices(x, chans, time, mask)
    assert codes.shape == (2, 12) and codes.dtype == torch.long and codes.max() < CODES


def test_gradient_reversal_flips_encoder_gradient():
    model = tiny_vq()
    x, chans, time, mask = tiny_batch()
    features = model.VQ.encoder(x, chans, time, mask)
    grads = []
    for alpha in (1.0, -1.0):
        model.zero_grad()
        from model.model_vq import ReverseLayerF
        f = features.detach().requires_grad_(True)
        model._domain_loss(ReverseLayerF.apply(f, alpha),
                           torch.zeros(2, 12, dtype=torch.long)).backward()
        grads.append(f.grad.clone())
    assert torch.allclose(grads[0], -grads[1])


def test_state_dict_has_exactly_the_public_key_names():
    assert sorted(tiny_vq().state_dict()) == sorted(PUBLIC_VQ_KEYS)


def test_public_layout_checkpoint_loads_strict_and_reloads_identically(tmp_path):
    model = tiny_vq()
    x, chans, time, mask = tiny_batch()
    model.train()(x, torch.randn(2, 12, 100), torch.randn(2, 12, 200), chans, time, mask)  # k-means
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    public_sd = {k: torch.randn(shapes[k]) for k in PUBLIC_VQ_KEYS}
    public_sd["VQ.quantize.embedding.initted"] = torch.tensor([1.0])
    torch.save({"model": {"_orig_mod." + k: v for k, v in public_sd.items()}, "optimizer": None,
                "encoder_args": PUBLIC_ENCODER_ARGS, "decoder_args": PUBLIC_DECODER_ARGS,
                "iter_num": 3, "epoch": 1}, tmp_path / "public.pt")
    loaded = load_vq(tmp_path / "public.pt")
    assert not loaded.training
    assert torch.equal(loaded.VQ.quantize.embedding.weight,
                       public_sd["VQ.quantize.embedding.weight"])

    torch.save(vq_checkpoint(model.eval(), iter_num=5, epoch=2), tmp_path / "ours.pt")
    again = load_vq(tmp_path / "ours.pt")
    codes = model.get_codebook_indices(x, chans, time, mask)
    assert torch.equal(again.get_codebook_indices(x, chans, time, mask), codes)
    with torch.no_grad():
        assert torch.equal(again.VQ.encoder(x, chans, time, mask),
                           model.VQ.encoder(x, chans, time, mask))


def test_mismatched_checkpoint_error_names_keys_and_shapes(tmp_path):
    sd = tiny_vq().state_dict()
    sd.pop("VQ.encoder.pos_embed.weight")
    sd["VQ.bogus.weight"] = torch.zeros(1)
    sd["wte.weight"] = torch.zeros(50, WIDTH + 1)
    torch.save({"model": sd, "encoder_args": PUBLIC_ENCODER_ARGS,
                "decoder_args": PUBLIC_DECODER_ARGS}, tmp_path / "bad.pt")
    with pytest.raises(ValueError) as err:
        load_vq(tmp_path / "bad.pt")
    text = str(err.value)
    assert "bad.pt" in text and "VQ.encoder.pos_embed.weight" in text
    assert "VQ.bogus.weight" in text and "wte.weight" in text


def test_encoder_shape_inferred_from_weights_when_args_are_missing():
    from model.checkpoints import infer_nt_config
    sd = tiny_vq().state_dict()
    enc = infer_nt_config(sd, "VQ.encoder.", n_head=4)
    want = NTConfig.from_dict(PUBLIC_ENCODER_ARGS)
    for field in ("n_layer", "n_embd", "bias", "in_chans", "out_chans", "patch_size",
                  "use_mean_pooling", "n_time_embeddings"):
        assert getattr(enc, field) == getattr(want, field), field
    assert infer_nt_config(sd, "VQ.decoder_raw.", n_head=4).in_chans == CODE_DIM
    with pytest.raises(ValueError, match="heads"):
        infer_nt_config(sd, "VQ.encoder.")
