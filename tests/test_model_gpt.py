"""GPT: mask rule, input paths, vocabulary growth, OpenAI GPT-2 import."""
import pytest
import torch

from model.gpt2_hf import gpt_from_hf, load_hf_gpt2
from model.model import (
    GPT,
    GPT_PRESETS,
    GPTConfig,
    build_attention_mask,
    text_positions_after_eeg,
)
from tests.test_model_vq import one_torch_thread  # noqa: F401  (autouse fixture)


def tiny_config(**kw):
    return GPTConfig(**{**dict(block_size=64, vocab_size=96, n_layer=2, n_head=2, n_embd=16), **kw})


def test_mask_rule_matches_definition_elementwise():
    g = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 5, (3, 10), generator=g)
    valid = torch.rand(3, 10, generator=g) > 0.3
    valid[:, 0] = True
    mask = build_attention_mask(pos, valid)
    assert mask.shape == (3, 1, 10, 10) and mask.dtype == torch.bool
    for b in range(3):
        for i in range(10):
            rule = [bool(valid[b, j]) and bool(pos[b, j] <= pos[b, i]) for j in range(10)]
            if not any(rule):  # nothing visible: the row sees only itself (no NaN)
                rule = [j == i for j in range(10)]
            assert mask[b, 0, i].tolist() == rule


def test_eeg_block_mask_same_second_sees_each_other_padding_never():
    # 2 channels x 3 seconds, then 2 padded tokens (time 0)
    time = torch.tensor([[0, 0, 1, 1, 2, 2, 0, 0]])
    valid = torch.tensor([[True] * 6 + [False] * 2])
    mask = build_attention_mask(time, valid)[0, 0]
    assert mask[0, 1] and mask[1, 0]           # same second
    assert mask[3, 0] and not mask[0, 3]       # causal across seconds
    assert not mask[:, 6:].any()               # padded keys never seen
    assert mask[6, :2].all() and not mask[6, 2:].any()


def test_fully_padded_row_sees_itself_not_nan():
    mask = build_attention_mask(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 3, dtype=bool))
    assert torch.equal(mask[0, 0], torch.eye(3, dtype=torch.bool))


def test_text_positions_continue_after_each_samples_own_last_second():
    time = torch.tensor([[0, 1, 2, 0], [0, 0, 0, 0]])
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    pos = text_positions_after_eeg(time, valid, 3)
    assert pos.tolist() == [[3, 4, 5], [1, 2, 3]]
    public = text_positions_after_eeg(time, valid, 3, per_sample=False)
    assert public.tolist() == [[3, 4, 5], [3, 4, 5]]


def test_forward_shapes_of_three_input_paths():
    torch.manual_seed(0)
    gpt = GPT(tiny_config()).eval()
    eeg = torch.randn(2, 6, 16)
    time = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2)
    text = torch.randint(0, 96, (2, 4))
    assert gpt(x_eeg=eeg, input_time=time)[0].shape == (2, 6, 96)
    logits, loss = gpt(x_text=text, targets=text)
    assert logits.shape == (2, 4, 96) and loss.ndim == 0
    assert gpt(x_eeg=eeg, x_text=text, input_time=time)[0].shape == (2, 10, 96)


def test_text_only_path_is_causal():
    torch.manual_seed(0)
    gpt = GPT(tiny_config()).eval()
    text = torch.randint(0, 96, (1, 6))
    changed = text.clone()
    changed[0, 4] = (changed[0, 4] + 1) % 96
    a, b = gpt(x_text=text)[0], gpt(x_text=changed)[0]
    assert torch.allclose(a[:, :4], b[:, :4]) and not torch.allclose(a[:, 4:], b[:, 4:])


def test_grow_vocabulary_keeps_rows_and_unties():
    torch.manual_seed(0)
    gpt = GPT(tiny_config())
    old = gpt.transformer.wte.weight.detach().clone()
    gpt.grow_vocabulary(128, 32)
    assert gpt.transformer.wte.weight.shape == (128, 16)
    assert gpt.lm_head.weight.shape == (160, 16)
    assert torch.equal(gpt.transformer.wte.weight[:96], old)
    assert torch.equal(gpt.lm_head.weight[:96], old)
    assert gpt.transformer.wte.weight.data_ptr() != gpt.lm_head.weight.data_ptr()


def test_presets_are_the_openai_shapes():
    assert GPT_PRESETS["gpt2"] == dict(n_layer=12, n_head=12, n_embd=768)
    assert GPT_PRESETS["gpt2-xl"] == dict(n_layer=48, n_head=25, n_embd=1600)
    assert set(GPT_PRESETS) == {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}


@pytest.mark.parametrize("safe", [True, False])
def test_hf_gpt2_import_gives_transformers_logits(tmp_path, safe):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=120, n_positions=32, n_embd=24, n_layer=2,
                                        n_head=3)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    hf.save_pretrained(tmp_path)
    if not safe:  # the older layout: a torch pickle of the Conv1D state dict
        (tmp_path / "model.safetensors").unlink()
        torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    ids = torch.randint(0, 120, (2, 11))
    with torch.no_grad():
        expected = hf(ids).logits
        config, sd = load_hf_gpt2(tmp_path)
        ours = gpt_from_hf(tmp_path).eval()
        got = ours(x_text=ids)[0]
    assert config.n_layer == 2 and config.bias and config.vocab_size == 120
    assert (got - expected).abs().max().item() <= 1e-5
    weights = tmp_path / ("model.safetensors" if safe else "pytorch_model.bin")
    got_file = gpt_from_hf(weights).eval()(x_text=ids)[0]
    assert torch.allclose(got_file, got)


def test_hf_import_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_gpt2(tmp_path)


def test_preallocated_kv_cache_equals_the_growing_one_and_overflows_gracefully():
    from model.model import KVCache
    torch.manual_seed(0)
    chunks = [torch.randn(2, 3, n, 4) for n in (5, 1, 1, 2)]
    grown, filled = KVCache(1), KVCache(1, capacity=7)   # the last chunk overflows capacity
    for c in chunks:
        k1, v1 = grown.append(0, c, -c)
        k2, v2 = filled.append(0, c, -c)
        assert torch.equal(k1, k2) and torch.equal(v1, v2)
    assert filled.length == grown.length == 9


def test_last_positions_only_equal_the_full_run_and_fill_the_same_cache():
    """GPT.run(last_n=...) (the prefill before decoding, option scoring): the last block's
    outputs for the last tokens only, every token's keys and values still cached."""
    from model.model import KVCache
    torch.manual_seed(0)
    gpt = GPT(tiny_config()).eval()
    x = torch.randn(2, 9, 16)
    positions = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 4, 5], [0, 0, 1, 1, 9, 9, 3, 4, 5]])
    valid = torch.tensor([[True] * 9, [True] * 4 + [False] * 2 + [True] * 3])
    for mask in (None, build_attention_mask(positions, valid)):
        full_cache, last_cache = KVCache(2), KVCache(2)
        with torch.no_grad():
            full = gpt.run(x, mask, full_cache)
            for n in (1, 3, 9):
                torch.testing.assert_close(gpt.run(x, mask, last_n=n), full[:, -n:],
                                           rtol=0, atol=1e-6)
            last = gpt.run(x, mask, last_cache, last_n=1)
        torch.testing.assert_close(last, full[:, -1:], rtol=0, atol=1e-6)
        for a, b in zip(full_cache.keys + full_cache.values, last_cache.keys + last_cache.values):
            assert torch.equal(a, b)
