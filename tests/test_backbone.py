"""Backbones (model/backbone.py, model/hf_backbone.py): tiny random models of every supported
architecture written with save_pretrained and read back from the folder; the NeuroLM mask must
really reach every attention implementation, and GPT-2 through transformers must equal the
native GPT."""
import pytest
import torch

from model.backbone import BackboneError, GPTBackbone
from model.gpt2_hf import gpt_from_hf
from model.hf_backbone import (
    ATTENTION_IMPLEMENTATIONS,
    SUPPORTED_ARCHITECTURES,
    HFBackbone,
    load_causal_lm,
)
from model.model import build_attention_mask
from tests.test_model_vq import one_torch_thread  # noqa: F401  (autouse fixture)

transformers = pytest.importorskip("transformers")

VOCAB = 101
WIDTH = 32
SMALL = dict(hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, vocab_size=VOCAB,
             max_position_embeddings=128)


def tiny_config(arch: str):
    """A random tiny model's config of each architecture (grouped-query attention where the
    architecture has it)."""
    if arch == "gpt2":
        return transformers.GPT2Config(n_embd=WIDTH, n_layer=2, n_head=4, vocab_size=VOCAB,
                                       n_positions=64, bos_token_id=0, eos_token_id=0)
    if arch == "llama":
        return transformers.LlamaConfig(**SMALL)
    if arch == "qwen2":
        return transformers.Qwen2Config(**SMALL)
    if arch == "qwen3":
        return transformers.Qwen3Config(**SMALL, head_dim=8)
    if arch == "mistral":
        return transformers.MistralConfig(**SMALL, sliding_window=64)
    if arch == "phi3":
        return transformers.Phi3Config(**SMALL, pad_token_id=0, bos_token_id=1,
                                       eos_token_id=2)
    raise AssertionError(arch)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """arch -> a folder written by save_pretrained (weights + config, random init)."""
    out = {}
    for arch in SUPPORTED_ARCHITECTURES:
        torch.manual_seed(0)
        lm = transformers.AutoModelForCausalLM.from_config(tiny_config(arch))
        folder = tmp_path_factory.mktemp(arch)
        lm.save_pretrained(folder)
        out[arch] = folder
    return out


def eeg_text_batch(seed=0, channels=3, seconds=3, n_pad=2, n_text=3):
    """EEG embeddings (time-major, channels x seconds, then padding) and text ids of one
    sample, as NeuroLM lays them out."""
    g = torch.Generator().manual_seed(seed)
    n = channels * seconds
    time = torch.cat((torch.arange(seconds).repeat_interleave(channels),
                      torch.zeros(n_pad, dtype=torch.long)))[None]
    valid = torch.cat((torch.ones(n, dtype=torch.bool), torch.zeros(n_pad, dtype=torch.bool)))
    eeg = torch.randn(1, n + n_pad, WIDTH, generator=g)
    text = torch.randint(3, VOCAB, (1, n_text), generator=g)
    return eeg, text, time, valid[None]


def dependency(backbone, embeds, positions, mask):
    """(L, L) bool: output i changes when input j is changed (one forward per j)."""
    base = backbone.run(embeds, positions, mask)
    L = embeds.shape[1]
    # not a constant: a norm layer would remove a shift of every feature by the same amount
    nudge = torch.randn(embeds.shape[-1], generator=torch.Generator().manual_seed(9))
    out = torch.zeros(L, L, dtype=torch.bool)
    for j in range(L):
        changed = embeds.clone()
        changed[:, j] += nudge
        diff = (backbone.run(changed, positions, mask) - base).abs().amax(-1)[0]   # (L,)
        out[:, j] = diff > 1e-6
    return out


@pytest.mark.parametrize("mask_applied", [True, False], ids=["neurolm_mask", "mask_dropped"])
@pytest.mark.parametrize("attn", ATTENTION_IMPLEMENTATIONS)
@pytest.mark.parametrize("arch", list(SUPPORTED_ARCHITECTURES))
@torch.no_grad()
def test_each_token_depends_on_exactly_what_the_mask_allows(folders, arch, attn, mask_applied):
    """Output i depends on input j exactly when the NeuroLM mask lets i see j (or i == j): an
    EEG token sees later-indexed channels of its own second, never a later second nor padding;
    text is causal and sees all real EEG. With the mask dropped (the model's own causal
    attention) the same check must fail: that is what a silent fallback would look like."""
    backbone = HFBackbone(load_causal_lm(folders[arch], attn).eval())
    eeg, text, time, valid = eeg_text_batch()
    embeds, positions, valid = backbone.embed_sequence(eeg, text, time, valid)
    mask = build_attention_mask(positions, valid)
    expected = mask[0, 0] | torch.eye(embeds.shape[1], dtype=torch.bool)
    # token 0 sees channel 2 of its second (a later index), not second 1, and no one sees padding
    assert expected[0, 2] and not expected[0, 3] and int(expected[:, 9].sum()) == 1
    got = dependency(backbone, embeds, positions, mask if mask_applied else None)
    assert torch.equal(got, expected) == mask_applied


@pytest.mark.parametrize("arch", list(SUPPORTED_ARCHITECTURES))
@torch.no_grad()
def test_channels_of_one_second_share_one_position(folders, arch):
    """Swapping two channels of one second permutes their outputs and changes nothing else:
    they share a position id (rotary or learned) and see each other."""
    backbone = HFBackbone(load_causal_lm(folders[arch]).eval())
    eeg, text, time, valid = eeg_text_batch(seed=1)
    embeds, positions, valid = backbone.embed_sequence(eeg, text, time, valid)
    mask = build_attention_mask(positions, valid)
    order = list(range(embeds.shape[1]))
    order[3], order[5] = 5, 3                      # channels 0 and 2 of second 1
    a = backbone.run(embeds, positions, mask)
    b = backbone.run(embeds[:, order], positions, mask)
    torch.testing.assert_close(b, a[:, order], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ATTENTION_IMPLEMENTATIONS)
@pytest.mark.parametrize("arch", list(SUPPORTED_ARCHITECTURES))
@torch.no_grad()
def test_cached_decoding_equals_recomputing(folders, arch, attn):
    """Prefill EEG + prompt into the library's cache, then feed tokens one at a time (and a copy
    of the cache's rows): the same hidden states as running the whole sequence each time."""
    backbone = HFBackbone(load_causal_lm(folders[arch], attn).eval())
    eeg, text, time, valid = eeg_text_batch(seed=2, n_text=5)
    eeg, text = eeg.repeat(2, 1, 1), text.repeat(2, 1)
    text[1, 0] = 4
    time, valid = time.repeat(2, 1), valid.repeat(2, 1)
    embeds, positions, valid = backbone.embed_sequence(eeg, text, time, valid)
    full = backbone.run(embeds, positions, build_attention_mask(positions, valid))
    L0 = embeds.shape[1] - 3
    cache = backbone.new_cache()
    h = backbone.run(embeds[:, :L0], positions[:, :L0],
                     build_attention_mask(positions[:, :L0], valid[:, :L0]), cache, last_n=1)
    torch.testing.assert_close(h[:, 0], full[:, L0 - 1], atol=1e-5, rtol=1e-5)
    copy = backbone.cache_rows(cache, torch.tensor([1, 1, 0]))
    for t in range(L0, embeds.shape[1]):
        step_mask = build_attention_mask(positions[:, :t + 1], valid[:, :t + 1],
                                         positions[:, t:t + 1])
        h = backbone.run(embeds[:, t:t + 1], positions[:, t:t + 1], step_mask, cache)
        torch.testing.assert_close(h[:, 0], full[:, t], atol=1e-5, rtol=1e-5)
    rows = torch.tensor([1, 1, 0])
    h = backbone.run(embeds[rows, L0:], positions[rows, L0:],
                     build_attention_mask(positions[rows], valid[rows], positions[rows, L0:]),
                     copy)
    torch.testing.assert_close(h, full[rows, L0:], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_gpt2_through_transformers_equals_native_gpt(folders):
    """The same GPT-2 weights, read by transformers and by the native GPT (model/gpt2_hf.py):
    the same logits for EEG + text under the NeuroLM mask, text only (causal), and cached."""
    native = GPTBackbone(gpt_from_hf(folders["gpt2"]).eval(), text_vocab=VOCAB,
                         eeg_offset=VOCAB)
    for attn in ATTENTION_IMPLEMENTATIONS:
        hf = HFBackbone(load_causal_lm(folders["gpt2"], attn).eval())
        eeg, text, time, valid = eeg_text_batch(seed=3)
        for backbone_inputs in ((eeg, text, time, valid), (None, text, None, None)):
            logits = []
            for backbone in (native, hf):
                embeds, positions, ok = backbone.embed_sequence(*backbone_inputs)
                mask = None if backbone_inputs[0] is None else build_attention_mask(positions, ok)
                logits.append(backbone.text_logits(backbone.run(embeds, positions, mask)))
            torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=0)


def test_unsupported_folders_and_kernels_are_refused(folders, tmp_path):
    with pytest.raises(BackboneError, match="no config.json"):
        load_causal_lm(tmp_path)
    with pytest.raises(BackboneError, match="cannot apply NeuroLM's mask"):
        load_causal_lm(folders["llama"], "flash_attention_2")
    other = tmp_path / "bert"
    transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32).save_pretrained(other)
    with pytest.raises(BackboneError, match="'bert' is not supported"):
        load_causal_lm(other)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@torch.no_grad()
def test_the_dependency_check_catches_a_bool_mask_added_by_eager_attention(folders, arch,
                                                                           monkeypatch):
    """Negative control of the pitfall the additive mask avoids: eager attention adds the mask
    to the scores, so a bool mask would be added as 0/1 and hide nothing."""
    import model.hf_backbone

    monkeypatch.setattr(model.hf_backbone, "attention_bias", lambda mask, x: mask)
    backbone = HFBackbone(load_causal_lm(folders[arch], "eager").eval())
    eeg, text, time, valid = eeg_text_batch()
    embeds, positions, valid = backbone.embed_sequence(eeg, text, time, valid)
    mask = build_attention_mask(positions, valid)
    expected = mask[0, 0] | torch.eye(embeds.shape[1], dtype=torch.bool)
    assert not torch.equal(dependency(backbone, embeds, positions, mask), expected)
