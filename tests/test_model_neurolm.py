"""NeuroLM: shapes, losses, public key names, checkpoint round trip, cached generation."""
import pytest
import torch
import torch.nn.functional as F

from model import NeuroLM, load_neurolm, neurolm_checkpoint
from model.gpt2_bpe import EOT_TOKEN_ID, GPT2_VOCAB_SIZE, PADDED_VOCAB_SIZE
from model.model import GPTConfig
from model.model_neural_transformer import NTConfig
from tests.test_model_vq import (
    PUBLIC_DECODER_ARGS,
    PUBLIC_ENCODER_ARGS,
    one_torch_thread,  # noqa: F401  (autouse fixture)
    public_encoder_keys,
    tiny_batch,
    tiny_vq,
)

CODES = 16
# what the public train_pretrain.py stores in "model_args" (GPT-2 weights: bias=True)
PUBLIC_MODEL_ARGS = dict(n_layer=2, n_head=2, n_embd=24, block_size=64, bias=True,
                         vocab_size=50257, dropout=0.0)


def public_lm_keys(n_layer):
    per_layer = ["ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
                 "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
                 "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]
    return (["GPT2.transformer.wte.weight", "GPT2.transformer.wpe.weight",
             "GPT2.transformer.ln_f.weight", "GPT2.transformer.ln_f.bias", "GPT2.lm_head.weight",
             "pos_embed.weight", "encode_transform_layer.0.weight", "encode_transform_layer.0.bias"]
            + [f"GPT2.transformer.h.{i}.{n}" for i in range(n_layer) for n in per_layer]
            + public_encoder_keys("tokenizer.", PUBLIC_ENCODER_ARGS["n_layer"]))


def tiny_lm(seed=0):
    torch.manual_seed(seed)
    return NeuroLM(GPTConfig.from_dict(PUBLIC_MODEL_ARGS), NTConfig.from_dict(PUBLIC_ENCODER_ARGS),
                   n_eeg_codes=CODES).eval()


def mixed_batch():
    """Three samples, 3 channels, 4 / 2 / 1 seconds of EEG padded to 12 tokens; a 4-token prompt."""
    x, chans, time, mask = tiny_batch(B=3, C=3, seconds=(4, 2, 1), N=12)
    prompt = torch.tensor([[50257, 15496, 995, 25]] * 3)
    return x, prompt, chans, time, mask


def test_forward_shapes_losses_and_log():
    lm = tiny_lm().train()
    assert not lm.tokenizer.training and not any(p.requires_grad for p in lm.tokenizer.parameters())
    x, text, chans, time, mask = mixed_batch()
    y_eeg = torch.randint(0, CODES, (3, 12)).masked_fill(~mask, -1)
    loss, log, logits = lm(x_eeg=x, y_eeg=y_eeg, input_chans=chans, input_time=time,
                           input_mask=mask)
    assert logits.shape == (3, 12, PADDED_VOCAB_SIZE + CODES)
    assert set(log) == {"loss", "eeg_loss", "eeg_accuracy"}
    loss.backward()
    assert lm.pos_embed.weight.grad is not None
    loss, log, logits = lm(x_text=text, y_text=text)
    assert logits.shape == (3, 4, PADDED_VOCAB_SIZE + CODES) and set(log) == {"loss", "text_loss"}
    y_text = torch.full_like(text, -1)
    y_text[:, -1] = EOT_TOKEN_ID
    loss, log, logits = lm(x, None, text, y_text, chans, time, mask)
    assert logits.shape == (3, 16, PADDED_VOCAB_SIZE + CODES) and set(log) == {"loss", "text_loss"}
    assert lm(x_text=text)[0] is None


def test_eeg_targets_are_scored_on_the_code_rows():
    lm = tiny_lm()
    x, _, chans, time, mask = mixed_batch()
    y = torch.full((3, 12), -1)
    y[0, 0] = 5
    _, log, logits = lm(x_eeg=x, y_eeg=y, input_chans=chans, input_time=time, input_mask=mask)
    expected = -torch.log_softmax(logits[0, 0], -1)[PADDED_VOCAB_SIZE + 5]
    assert abs(log["eeg_loss"] - expected.item()) < 1e-4


def test_state_dict_has_the_public_key_names_and_public_layout_loads(tmp_path):
    lm = tiny_lm()
    assert sorted(lm.state_dict()) == sorted(public_lm_keys(2))
    shapes = {k: v.shape for k, v in lm.state_dict().items()}
    public_sd = {k: torch.randn(shapes[k]) for k in public_lm_keys(2)}
    torch.save({"model": public_sd, "optimizer": None, "model_args": PUBLIC_MODEL_ARGS,
                "iter_num": 1, "epoch": 0}, tmp_path / "lm.pt")
    # public LM checkpoints carry no encoder shape: it comes from the VQ checkpoint
    vq = tiny_vq()
    torch.save({"model": vq.state_dict(), "encoder_args": PUBLIC_ENCODER_ARGS,
                "decoder_args": PUBLIC_DECODER_ARGS}, tmp_path / "vq.pt")
    loaded = load_neurolm(tmp_path / "lm.pt", tokenizer_path=tmp_path / "vq.pt")
    assert torch.equal(loaded.GPT2.lm_head.weight, public_sd["GPT2.lm_head.weight"])
    assert loaded.GPT2.config.gelu_approximate == "none"  # what the public model trained with
    # an LM checkpoint without tokenizer.* takes the VQ encoder's weights
    no_tok = {k: v for k, v in public_sd.items() if not k.startswith("tokenizer.")}
    torch.save({"model": no_tok, "model_args": PUBLIC_MODEL_ARGS}, tmp_path / "lm2.pt")
    loaded = load_neurolm(tmp_path / "lm2.pt", tokenizer_path=tmp_path / "vq.pt")
    assert torch.equal(loaded.tokenizer.pos_embed.weight, vq.VQ.encoder.pos_embed.weight)


def test_checkpoint_reloads_to_identical_outputs(tmp_path):
    lm = tiny_lm()
    torch.save(neurolm_checkpoint(lm, iter_num=7), tmp_path / "ckpt.pt")
    again = load_neurolm(tmp_path / "ckpt.pt")
    x, text, chans, time, mask = mixed_batch()
    with torch.no_grad():
        assert torch.equal(again(x, None, text, None, chans, time, mask)[2],
                           lm(x, None, text, None, chans, time, mask)[2])
    assert torch.equal(again.generate(x, text, chans, time, mask, max_new_tokens=4),
                       lm.generate(x, text, chans, time, mask, max_new_tokens=4))


def test_loading_draws_no_random_initialisation(tmp_path):
    # the weights are read into uninitialised storage: no init drawn only to be overwritten
    lm = tiny_lm()
    torch.save(neurolm_checkpoint(lm), tmp_path / "ckpt.pt")
    state = torch.random.get_rng_state()
    again = load_neurolm(tmp_path / "ckpt.pt")
    assert torch.equal(torch.random.get_rng_state(), state)
    loaded, saved = again.state_dict(), lm.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)


def test_cached_generation_equals_uncached_greedy_with_padding_and_mixed_lengths():
    lm = tiny_lm()
    x, text, chans, time, mask = mixed_batch()
    cached = lm.generate(x, text, chans, time, mask, max_new_tokens=8)
    uncached = lm.generate(x, text, chans, time, mask, max_new_tokens=8, use_cache=False)
    assert cached.shape == (3, 12) and torch.equal(cached[:, :4], text)
    assert torch.equal(cached, uncached)
    assert (cached[:, 4:] < GPT2_VOCAB_SIZE).all()
    # generated tokens never see padded EEG: changing what padding carries changes nothing
    other_chans, other_time = chans.clone(), time.clone()
    other_chans[~mask], other_time[~mask] = 11, 2
    assert torch.equal(lm.generate(x, text, other_chans, other_time, mask, max_new_tokens=8),
                       cached)
    # each sample's positions are its own: a row alone decodes as in the mixed batch
    for b in range(3):
        alone = lm.generate(x[b:b + 1], text[b:b + 1], chans[b:b + 1], time[b:b + 1],
                            mask[b:b + 1], max_new_tokens=8)
        assert torch.equal(alone[0], cached[b])


def test_rows_stop_at_end_of_text_and_are_padded(monkeypatch):
    lm = tiny_lm()
    x, text, chans, time, mask = mixed_batch()
    real_next = lm._next_token
    calls = []

    def end_row_one_at_step_two(h, temperature, top_k, do_sample):
        ids = real_next(h, temperature, top_k, do_sample)
        calls.append(1)
        if len(calls) == 2:
            ids[1] = EOT_TOKEN_ID
        return ids
    monkeypatch.setattr(lm, "_next_token", end_row_one_at_step_two)
    out = lm.generate(x, text, chans, time, mask, max_new_tokens=6)
    assert out.shape == (3, 10)
    assert (out[1, 5:] == EOT_TOKEN_ID).all()
    assert (out[0, 4:] != EOT_TOKEN_ID).any()


def test_sampling_options_and_text_only_generation():
    lm = tiny_lm()
    _, text, *_ = mixed_batch()
    greedy = lm.generate(None, text, None, None, None, max_new_tokens=3)
    assert torch.equal(greedy, lm.generate(None, text, None, None, None, max_new_tokens=3, top_k=1))
    torch.manual_seed(0)
    sampled = lm.generate(None, text, None, None, None, max_new_tokens=3, temperature=0.7, top_k=5)
    assert sampled.shape == (3, 7) and (sampled[:, 4:] < GPT2_VOCAB_SIZE).all()
    assert torch.equal(greedy, lm.generate(None, text, None, None, None, max_new_tokens=3,
                                           use_cache=False))


def test_encoder_time_limit_is_a_clear_error():
    lm = tiny_lm()
    x, text, chans, time, mask = mixed_batch()
    with pytest.raises(ValueError, match="time embedding has 64 rows"):
        lm(x_eeg=x, input_chans=chans, input_time=time + 64, input_mask=mask)


def test_centered_channel_embedding_cancels_each_channels_mean_feature():
    model = tiny_lm()
    x, _, chans, time, mask = mixed_batch()
    with torch.no_grad():
        features = model.encode_transform_layer(model.tokenizer(x, chans, time, mask))[mask]
    torch.manual_seed(5)
    model.center_channel_embedding(x, chans, time, mask)
    torch.manual_seed(5)
    noise = torch.nn.init.normal_(torch.empty_like(model.pos_embed.weight), std=0.02)
    offset = model.pos_embed.weight - noise                 # what the init subtracted, per row
    seen = chans[mask]
    for c in seen.unique():
        assert torch.allclose(offset[c], -features[seen == c].mean(0), atol=1e-6)
    unseen = [c for c in range(len(offset)) if c not in seen.tolist()]
    assert torch.allclose(offset[unseen], -features.mean(0).expand(len(unseen), -1), atol=1e-6)


def _loss_and_grads(lm, **batch):
    lm.zero_grad(set_to_none=True)
    loss, log, _ = lm(**batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None}
    return loss.detach(), log, grads


@pytest.mark.parametrize("part", ["eeg", "text", "eeg+text"])
def test_chunked_head_loss_and_gradients_equal_the_straightforward_computation(part):
    """The trainers' path (return_logits=False: head + cross-entropy in row chunks with the
    gradient computed on the way, encoder features handed in) against cross_entropy over the
    full (B, L, 58k) logits."""
    lm = tiny_lm().train().double()
    x, text, chans, time, mask = mixed_batch()
    x = x.double()
    y_eeg = torch.randint(0, CODES, (3, 12), generator=torch.Generator().manual_seed(3))
    y_eeg = y_eeg.masked_fill(~mask, -1)
    batch = {"eeg": dict(x_eeg=x, y_eeg=y_eeg, input_chans=chans, input_time=time,
                         input_mask=mask),
             "text": dict(x_text=text, y_text=text.roll(-1, 1)),
             "eeg+text": dict(x_eeg=x, y_eeg=y_eeg, x_text=text, y_text=text.roll(-1, 1),
                              input_chans=chans, input_time=time, input_mask=mask)}[part]
    ref_loss, ref_log, ref_grads = _loss_and_grads(lm, **batch)
    features = None
    if "x_eeg" in batch:
        with torch.no_grad():
            features = lm.tokenizer(x, chans, time, mask)
    loss, log, grads = _loss_and_grads(lm, **batch, return_logits=False, eeg_features=features)
    assert abs(float(loss - ref_loss)) < 1e-6
    assert log.keys() == ref_log.keys()
    for key in log:
        assert abs(log[key] - ref_log[key]) < 1e-6, key
    assert grads.keys() == ref_grads.keys() and "GPT2.lm_head.weight" in grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=0, atol=1e-6, msg=name)


def test_head_loss_in_bf16_autocast_chunked_equals_the_straightforward_head(monkeypatch):
    """Under bf16 autocast (the trainers' --dtype auto on CPUs with bf16 units) the chunked head
    reuses its chunk buffers: a ragged last chunk, the loss and both gradients as autocast's
    own linear + fp32 cross-entropy gives them, within bf16's rounding."""
    from model.head_loss import head_cross_entropy
    g = torch.Generator().manual_seed(0)
    h = torch.randn(10, 16, generator=g, requires_grad=True)
    w = torch.randn(37, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 37, (10,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy(F.linear(h, w).float(), t, reduction="sum")
    ref_h, ref_w = torch.autograd.grad(ref, (h, w))
    import model.head_loss as head_loss
    for rows, held, add in ((3, 1024, 4096), (3, 4, 5), (10, 1024, 4096), (64, 7, 36)):
        # held: rows of gradient per head product (several products per pass when small);
        # add: head rows added to the fp32 gradient at a time
        monkeypatch.setattr(head_loss, "GRAD_ROWS_HELD", held)
        monkeypatch.setattr(head_loss, "ADD_ROWS", add)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, per_token, predicted = head_cross_entropy(h, w, t, rows_per_chunk=rows)
        grad_h, grad_w = torch.autograd.grad(loss, (h, w))
        assert loss.dtype == torch.float32 and grad_w.dtype == torch.float32
        torch.testing.assert_close(loss, ref.detach(), rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(grad_h, ref_h, rtol=2e-2, atol=2e-2)
        torch.testing.assert_close(grad_w, ref_w, rtol=2e-2, atol=2e-2)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = F.linear(h, w).float()
        assert torch.equal(predicted, logits.argmax(-1))
        assert per_token.shape == (10,)


def test_recomputed_blocks_give_the_same_loss_and_gradients():
    """--activation_checkpointing (GPT.recompute_blocks): each block is run again in the
    backward pass instead of keeping its activations; the numbers stay the same."""
    lm = tiny_lm().train()
    x, text, chans, time, mask = mixed_batch()
    batch = dict(x_eeg=x, x_text=text, y_text=text.roll(-1, 1), input_chans=chans,
                 input_time=time, input_mask=mask, return_logits=False)
    ref_loss, _, ref_grads = _loss_and_grads(lm, **batch)
    lm.GPT2.recompute_blocks = True
    loss, _, grads = _loss_and_grads(lm, **batch)
    assert float(loss) == float(ref_loss) and grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=0, atol=1e-7, msg=name)


def test_codes_from_features_equal_the_codebook_indices():
    vq = tiny_vq().VQ.eval()
    x, chans, time, mask = tiny_batch()
    features = vq.encoder(x, chans, time, mask)
    assert torch.equal(vq.codes_from_features(features),
                       vq.get_codebook_indices(x, chans, time, mask))
