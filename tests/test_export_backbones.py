"""`python -m evaluation export` of a NeuroLM on a Hugging Face backbone (model/export.py): a full
run's folder round-trips through load_neurolm; a LoRA run exports merged (the unmerged model's
logits) or as a peft adapter folder (peft loads it onto the base model; load_neurolm rebuilds
on the base folder, refusing another); the model card names the backbone. A LoRA checkpoint
whose base folder moved loads from its new place; base identities are remembered per folder."""
import json
import shutil

import pytest
import torch

import evaluation as ev
from model import load_neurolm, neurolm_checkpoint
from model.backbone import BackboneError
from model.build import neurolm_on_hf
from model.checkpoints import CheckpointError
from model.export import export
from model.lora import LoraSettings, add_lora
from tests.test_backbone_neurolm import llama_with_tokenizer  # noqa: F401  (fixture)
from tests.test_model_neurolm import mixed_batch
from tests.test_model_vq import one_torch_thread, tiny_vq  # noqa: F401  (autouse fixture)

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def batch_of(lm):
    """EEG of 3 samples (4, 2, 1 seconds) + a prompt in the model's own tokenizer."""
    x, _, chans, time, mask = mixed_batch()
    prompt = torch.tensor([[lm.text.sep_id] + lm.text.encode("Question: abnormal? Answer:")] * 3)
    return dict(x_eeg=x, x_text=prompt, input_chans=chans, input_time=time, input_mask=mask)


def logits(lm):
    with torch.no_grad():
        return lm(**batch_of(lm))[2]


def trained(lm):
    """One SGD step on EEG + text: LoRA's B matrices leave zero, the EEG side moves."""
    batch = batch_of(lm)
    lm.train()
    lm(**batch, y_text=batch["x_text"])[0].backward()
    with torch.no_grad():
        for p in lm.parameters():
            if p.grad is not None:
                p -= p.grad
    return lm.eval()


@pytest.fixture
def base(llama_with_tokenizer, tmp_path):  # noqa: F811
    """A copy of the tiny Llama folder (with its own tokenizer) this test may move or change."""
    folder = tmp_path / "base"
    shutil.copytree(llama_with_tokenizer[0], folder)
    return folder


def lora_run(base, tmp_path):
    """(a trained NeuroLM with LoRA on `base`, its checkpoint: best.pt of a run folder)."""
    lm = neurolm_on_hf(tiny_vq().VQ, base)
    add_lora(lm, LoraSettings(rank=2, alpha=8, dropout=0.0))
    lm = trained(lm)
    (tmp_path / "run").mkdir()
    torch.save(neurolm_checkpoint(lm, iter_num=7), tmp_path / "run" / "best.pt")
    return lm, tmp_path / "run" / "best.pt"


def test_a_full_hf_export_round_trips(base, tmp_path):
    lm = trained(neurolm_on_hf(tiny_vq().VQ, base))
    torch.save(neurolm_checkpoint(lm, iter_num=3), tmp_path / "lm.pt")
    out = export(tmp_path / "lm.pt", tmp_path / "out")
    shutil.rmtree(base)         # the export needs nothing outside itself
    again = load_neurolm(out)
    torch.testing.assert_close(logits(again), logits(lm), atol=0, rtol=0)
    batch = batch_of(lm)
    args = (batch["x_eeg"], batch["x_text"], batch["input_chans"], batch["input_time"],
            batch["input_mask"])
    assert torch.equal(again.generate(*args, max_new_tokens=4),
                       lm.generate(*args, max_new_tokens=4))
    assert again.text.identity() == lm.text.identity()
    # the LM is a transformers folder as it is, [SEP] in its tokenizer; the EEG side beside it
    hf = transformers.AutoModelForCausalLM.from_pretrained(out / "lm")
    tok = transformers.AutoTokenizer.from_pretrained(out / "lm")
    assert tok.convert_tokens_to_ids("[SEP]") == lm.text.sep_id
    with torch.no_grad():
        ids = batch["x_text"]
        torch.testing.assert_close(hf(ids).logits, lm.LM(ids).logits, atol=0, rtol=0)
    from safetensors.torch import load_file
    side = load_file(out / "model.safetensors")
    assert side and not any(k.startswith("LM.") for k in side) and "eeg_head.weight" in side
    config = json.loads((out / "config.json").read_text())
    assert "config" not in config["checkpoint"]["backbone"]      # lm/config.json holds it
    assert config["backbone"]["architecture"] == "llama"
    assert config["backbone"]["export"] == "full"


def test_merged_lora_export_gives_the_unmerged_logits(base, tmp_path):
    lm, ckpt = lora_run(base, tmp_path)
    out = export(ckpt, tmp_path / "merged")
    merged = load_neurolm(out)
    assert not any(".lora_" in n for n, _ in merged.named_parameters())
    assert "lora" not in json.loads((out / "config.json").read_text())["checkpoint"]["backbone"]
    torch.testing.assert_close(logits(merged), logits(lm), atol=1e-5, rtol=1e-5)
    config = json.loads((out / "config.json").read_text())["backbone"]
    from model.hf_checkpoint import base_identity
    assert config["base_folder"] == str(base.resolve())
    assert config["base_identity"] == base_identity(base)
    assert config["lora"]["rank"] == 2 and config["export"] == "merged LoRA"


def test_adapter_export_loads_with_peft_and_back_on_its_base(base, tmp_path):
    lm, ckpt = lora_run(base, tmp_path)
    out = export(ckpt, tmp_path / "adapter_export", adapter=True)
    assert (out / "adapter" / "adapter_config.json").is_file()
    ids = batch_of(lm)["x_text"]
    with torch.no_grad():
        ours = lm.LM(input_ids=ids).logits
        # peft onto the base folder's model, grown to the tokenizer's length ([SEP]) first
        plain = transformers.AutoModelForCausalLM.from_pretrained(base)
        tok = transformers.AutoTokenizer.from_pretrained(out / "adapter")
        plain.resize_token_embeddings(len(tok))
        adapted = peft.PeftModel.from_pretrained(plain, out / "adapter").eval()
        torch.testing.assert_close(adapted(input_ids=ids).logits, ours, atol=1e-5, rtol=1e-5)
        auto = peft.AutoPeftModelForCausalLM.from_pretrained(out / "adapter").eval()
        torch.testing.assert_close(auto(input_ids=ids).logits, ours, atol=1e-5, rtol=1e-5)
    again = load_neurolm(out)
    torch.testing.assert_close(logits(again), logits(lm), atol=1e-6, rtol=1e-6)
    # the base moved: refused with the way out; pointed at, it loads (identity still checked)
    moved = tmp_path / "moved"
    base.rename(moved)
    with pytest.raises(BackboneError, match="--base_folder"):
        load_neurolm(out)
    torch.testing.assert_close(logits(load_neurolm(out, base_folder=moved)), logits(lm),
                               atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits(load_neurolm(ckpt, base_folder=moved)), logits(lm),
                               atol=0, rtol=0)
    other = tmp_path / "other"
    shutil.copytree(moved, other)
    (other / "config.json").write_text((other / "config.json").read_text().replace(
        '"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    with pytest.raises(BackboneError, match="not the base model it was trained on"):
        load_neurolm(out, base_folder=other)


def test_the_command_writes_a_card_naming_the_backbone(base, tmp_path, capsys):
    _, ckpt = lora_run(base, tmp_path)
    from model.hf_checkpoint import base_identity

    for flags, name in (([], "merged"), (["--adapter"], "adapter")):
        assert ev.main(["export", str(ckpt), str(tmp_path / name), *flags]) == 0
        card = (tmp_path / name / "README.md").read_text()
        assert "llama" in card and base_identity(base) in card and str(base.resolve()) in card
        assert "rank 2" in card and "alpha 8" in card
    assert "PeftModel.from_pretrained" in card
    plain = tmp_path / "plain.pt"
    torch.save(neurolm_checkpoint(neurolm_on_hf(tiny_vq().VQ, base)), plain)
    capsys.readouterr()
    assert ev.main(["export", str(plain), str(tmp_path / "x"), "--adapter"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a LoRA checkpoint" in err and len(err.splitlines()) == 1
    with pytest.raises(CheckpointError, match="not a LoRA checkpoint"):
        export(plain, tmp_path / "y", adapter=True)


def test_base_identity_is_remembered_until_the_folder_changes(base, monkeypatch):
    import os

    from model import hf_checkpoint

    first = hf_checkpoint.base_identity(base)
    hashed = []
    real = hf_checkpoint._folder_hash
    monkeypatch.setattr(hf_checkpoint, "_folder_hash", lambda files: hashed.append(1) or
                        real(files))
    assert hf_checkpoint.base_identity(base) == first and not hashed
    weights = base / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF                      # same size, new bytes and modification time
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert hf_checkpoint.base_identity(base) != first and hashed == [1]
