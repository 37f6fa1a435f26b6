"""LoRA (model/lora.py) on a NeuroLM's Hugging Face backbone: only adapters and the EEG side
train, merged weights give the unmerged outputs, and the adapter folder loads with peft."""
import pytest
import torch

from model.backbone import BackboneError
from model.lora import LoraSettings, add_lora, merge_lora, save_adapter, trainable_parameters
from tests.test_backbone import SUPPORTED_ARCHITECTURES, folders  # noqa: F401  (fixture)
from tests.test_backbone_neurolm import (  # noqa: F401  (fixture)
    CODES,
    hf_neurolm,
    llama_with_tokenizer,
    small_vocab_batch,
)
from tests.test_model_vq import one_torch_thread  # noqa: F401  (autouse fixture)

peft = pytest.importorskip("peft")


def one_step(lm):
    """One SGD step on EEG + text starting with [SEP] (so the adapters' B matrices leave zero
    and [SEP]'s rows train)."""
    x, prompt, chans, time, mask = small_vocab_batch()
    prompt[:, 0] = lm.text.sep_id
    y_eeg = torch.randint(0, CODES, mask.shape, generator=torch.Generator().manual_seed(0))
    loss = lm(x_eeg=x, y_eeg=y_eeg.masked_fill(~mask, -1), x_text=prompt, y_text=prompt,
              input_chans=chans, input_time=time, input_mask=mask, return_logits=False)[0]
    loss.backward()
    with torch.no_grad():
        for p in lm.parameters():
            if p.grad is not None:
                p -= 0.5 * p.grad


def logits(lm):
    x, prompt, chans, time, mask = small_vocab_batch()
    with torch.no_grad():
        return lm(x_eeg=x, x_text=prompt, input_chans=chans, input_time=time,
                  input_mask=mask)[2]


@pytest.mark.parametrize("arch", list(SUPPORTED_ARCHITECTURES))
def test_lora_trains_adapters_and_eeg_side_only_and_merges_exactly(folders, arch,  # noqa: F811
                                                                   tmp_path):
    lm = hf_neurolm(folders[arch])
    base = {n: p.detach().clone() for n, p in lm.LM.named_parameters()}
    rows = {side: getattr(lm.LM, f"get_{side}_embeddings")().weight.detach().clone()
            for side in ("input", "output")}
    _, total_before = trainable_parameters(lm)
    add_lora(lm, LoraSettings(rank=4, dropout=0.0))
    trained, total = trainable_parameters(lm)
    names = {n for n, p in lm.named_parameters() if p.requires_grad}
    eeg_side = {n for n in names if n.startswith(("pos_embed.", "encode_transform_layer.",
                                                  "eeg_head."))}
    adapters = {n for n in names if ".lora_" in n}
    sep_rows = {n for n in names if ".trainable_tokens_delta." in n}   # a tied head: shared
    assert len(sep_rows) == (1 if arch == "gpt2" else 2)
    assert names == eeg_side | adapters | sep_rows and adapters and "eeg_head.weight" in eeg_side
    assert 0 < trained < total and total > total_before     # the adapters are new parameters
    lm.train()
    one_step(lm)
    lm.eval()
    inner = lm.LM.get_base_model()
    assert any(bool(p.any()) for n, p in inner.named_parameters() if ".lora_B." in n)
    for name, p in inner.named_parameters():    # every base weight unchanged
        if ".lora_" not in name and ".trainable_tokens_delta." not in name:
            key = name.replace(".token_adapter.base_layer", "").replace(".base_layer", "")
            assert torch.equal(p, base[key]), name
    sep = lm.text.sep_id
    for side, before in rows.items():           # the rows the model reads: [SEP]'s trained
        now = getattr(inner, f"get_{side}_embeddings")().weight.detach()
        assert not torch.equal(now[sep], before[sep]), side
        assert torch.equal(now[:sep], before[:sep]) and torch.equal(now[sep + 1:],
                                                                    before[sep + 1:]), side
    ids = torch.tensor([[sep, 5, sep, 7]])      # read as peft itself reads them
    hidden = torch.randn(1, 4, inner.config.hidden_size)
    with torch.no_grad():
        assert torch.equal(lm.backbone.embed_text(ids, None), inner.get_input_embeddings()(ids))
        torch.testing.assert_close(lm.backbone.text_logits(hidden), inner.get_output_embeddings()(
            hidden)[..., :lm.backbone.text_vocab], atol=1e-6, rtol=1e-6)
    unmerged = logits(lm)
    save_adapter(lm, tmp_path / "adapter")
    merge_lora(lm)
    assert not any(".lora_" in n for n, _ in lm.named_parameters())
    torch.testing.assert_close(logits(lm), unmerged, atol=1e-5, rtol=1e-5)
    # peft itself reads the adapter folder onto the base folder's model
    from model.hf_backbone import load_causal_lm

    again = hf_neurolm(folders[arch])
    again.LM = peft.PeftModel.from_pretrained(load_causal_lm(folders[arch]), tmp_path / "adapter")
    for name in ("pos_embed", "encode_transform_layer", "eeg_head", "tokenizer"):
        getattr(again, name).load_state_dict(getattr(lm, name).state_dict())
    torch.testing.assert_close(logits(again.eval()), unmerged, atol=1e-5, rtol=1e-5)


def test_lora_settings_and_backbones_are_checked():
    from tests.test_model_neurolm import tiny_lm

    with pytest.raises(BackboneError, match="native GPT"):
        add_lora(tiny_lm(), LoraSettings())
    for bad, match in ((LoraSettings(rank=0), "lora_rank"),
                       (LoraSettings(alpha=float("nan")), "lora_alpha"),
                       (LoraSettings(dropout=1.0), "lora_dropout")):
        with pytest.raises(BackboneError, match=match):
            bad.check()


@pytest.fixture(scope="module")
def qwen3_tied_with_tokenizer(tmp_path_factory):
    """A tiny Qwen3 whose head is its token embedding (tie_word_embeddings), own tokenizer."""
    from tests.test_backbone_neurolm import save_tiny_lm_with_tokenizer

    folder = tmp_path_factory.mktemp("qwen3_tied_tok")
    return folder, save_tiny_lm_with_tokenizer(folder, "qwen3", tie_word_embeddings=True)


@pytest.mark.parametrize("tied", [False, True], ids=["llama", "qwen3_tied"])
def test_lora_checkpoint_holds_what_was_trained_and_needs_its_own_base(
        llama_with_tokenizer, qwen3_tied_with_tokenizer, tied, tmp_path):
    """Saved: adapters, [SEP]'s rows (trained: the base has no [SEP], building adds it), EEG
    side, base folder + identity, never the embedding or head; reloaded on that folder (grown
    to the same bits): the same logits; on a changed folder: refused in one line."""
    import shutil

    from model import load_neurolm, neurolm_checkpoint
    from model.build import neurolm_on_hf
    from tests.test_model_neurolm import mixed_batch
    from tests.test_model_vq import tiny_vq

    folder = tmp_path / "base"
    shutil.copytree((qwen3_tied_with_tokenizer if tied else llama_with_tokenizer)[0], folder)
    lm = neurolm_on_hf(tiny_vq().VQ, folder)
    add_lora(lm, LoraSettings(rank=2, dropout=0.0))
    inner = lm.LM.get_base_model()
    grown = inner.get_input_embeddings().token_adapter.base_layer.weight.detach().clone()
    x, _, chans, time, mask = mixed_batch()
    prompt = torch.tensor([[lm.text.sep_id] + lm.text.encode("Question: abnormal? Answer:")] * 3)
    batch = dict(x_eeg=x, x_text=prompt, y_text=prompt, input_chans=chans, input_time=time,
                 input_mask=mask)
    lm(**batch)[0].backward()
    with torch.no_grad():
        for p in lm.parameters():
            if p.grad is not None:
                p -= p.grad
    ckpt = neurolm_checkpoint(lm.eval())
    lm_keys = {k for k in ckpt["model"] if k.startswith("LM.")}
    embed = "model.embed_tokens.token_adapter.trainable_tokens_delta.default"
    head = "lm_head.token_adapter.trainable_tokens_delta.default"
    rows = {"LM.base_model.model." + k for k in ([embed] if tied else [embed, head])}
    assert {k for k in lm_keys if ".lora_" not in k} == rows      # no embedding, no head
    assert all(ckpt["model"][k].shape == (1, inner.config.hidden_size) for k in rows)
    assert ckpt["backbone"]["lora"]["trainable_tokens"] == [lm.text.sep_id]
    torch.save(ckpt, tmp_path / "lora.pt")
    again = load_neurolm(tmp_path / "lora.pt")
    again_inner = again.LM.get_base_model()
    assert torch.equal(again_inner.get_input_embeddings().token_adapter.base_layer.weight, grown)
    assert torch.equal(grown[lm.text.sep_id], grown[:lm.text.sep_id].double().mean(0).float())
    assert (again_inner.get_output_embeddings().token_adapter.base_layer.weight is again_inner
            .get_input_embeddings().token_adapter.base_layer.weight) is tied
    with torch.no_grad():
        torch.testing.assert_close(again(**batch)[2], lm(**batch)[2], atol=0, rtol=0)
    old = dict(ckpt, backbone=dict(ckpt["backbone"], lora={
        k: v for k, v in ckpt["backbone"]["lora"].items() if k != "trainable_tokens"}))
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(BackboneError, match="earlier layout"):
        load_neurolm(tmp_path / "old.pt")
    layout = ckpt["backbone"]
    assert layout["lora"]["embedding_rows"] == lm.text.n_words
    other = dict(ckpt, backbone=dict(layout, lora=dict(
        layout["lora"], embedding_rows=lm.text.n_words + 1)))
    torch.save(other, tmp_path / "other.pt")
    with pytest.raises(BackboneError, match="trained with"):
        load_neurolm(tmp_path / "other.pt")
    config = (folder / "config.json").read_text().replace('"rms_norm_eps": 1e-06',
                                                         '"rms_norm_eps": 1e-05')
    assert config != (folder / "config.json").read_text()
    (folder / "config.json").write_text(config)
    with pytest.raises(BackboneError, match="not the base model it was trained on"):
        load_neurolm(tmp_path / "lora.pt")


def test_a_lora_checkpoint_names_the_base_as_it_was_read_not_as_it_is_at_save_time(
        llama_with_tokenizer, tmp_path):
    """The base folder changing during a run (another model saved over it) must not make the
    next checkpoint vouch for weights the adapters were never trained on."""
    import shutil

    from model import neurolm_checkpoint
    from model.build import neurolm_on_hf
    from model.hf_checkpoint import base_identity
    from tests.test_model_vq import tiny_vq

    folder = tmp_path / "base"
    shutil.copytree(llama_with_tokenizer[0], folder)
    read = base_identity(folder)
    lm = neurolm_on_hf(tiny_vq().VQ, folder)
    add_lora(lm, LoraSettings(rank=2, dropout=0.0))
    config = (folder / "config.json").read_text().replace('"rms_norm_eps": 1e-06',
                                                         '"rms_norm_eps": 1e-05')
    (folder / "config.json").write_text(config)
    assert base_identity(folder) != read
    layout = neurolm_checkpoint(lm)["backbone"]
    assert layout["base_identity"] == read
    assert layout["base_folder"] == str(folder.resolve())
