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


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2", "qwen3", "mistral", "phi3"])
def test_every_architecture_exports_merged_and_as_an_adapter(arch, tmp_path):
    """The merged export gives the unmerged logits, the adapter export the same ones, on each
    architecture (GPT-2: tied head, Conv1D adapters; Phi-3: fused projections)."""
    from model.hf_backbone import SUPPORTED_ARCHITECTURES
    from model.random_lm import LMShape, write_random_lm
    from tests.test_backbone_neurolm import TEXTS

    assert arch in SUPPORTED_ARCHITECTURES
    write_random_lm(tmp_path / "base", arch, LMShape(hidden=32, layers=2, heads=4,
                                                     kv_heads=4 if arch == "gpt2" else 2,
                                                     intermediate=64, positions=128),
                    TEXTS, vocab_size=300)
    lm = neurolm_on_hf(tiny_vq().VQ, tmp_path / "base")
    add_lora(lm, LoraSettings(rank=2, dropout=0.0))
    lm = trained(lm)
    ckpt = neurolm_checkpoint(lm)
    # the base's embedding and head stay in its folder: [SEP]'s rows are what travels
    assert {k.split(".token_adapter.")[0].rsplit(".", 1)[-1] for k in ckpt["model"]
            if k.startswith("LM.") and ".lora_" not in k} == (
        {"wte"} if arch == "gpt2" else {"embed_tokens", "lm_head"})
    assert all(v.shape[0] == 1 for k, v in ckpt["model"].items() if ".trainable_tokens" in k)
    torch.save(ckpt, tmp_path / "lora.pt")
    expected = logits(lm)
    for adapter in (False, True, False):      # the same folder again: nothing stale is left
        out = export(tmp_path / "lora.pt", tmp_path / "out", adapter=adapter)
        assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
            "adapter" if adapter else "lm"]
        torch.testing.assert_close(logits(load_neurolm(out)), expected, atol=1e-5, rtol=1e-5)


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
    from safetensors.torch import load_file

    stored = load_file(out / "adapter" / "adapter_model.safetensors")
    assert {k for k in stored if ".lora_" not in k} == {   # no embedding, no head: [SEP]'s rows
        f"base_model.model.{m}.token_adapter.trainable_tokens_delta" for m in
        ("model.embed_tokens", "lm_head")}
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


# ----------------------------------------------------------------------------------------------
# Loading for inference: a checkpoint, a LoRA checkpoint and their exports answer alike


def workload_raw(seconds: float):
    import mne

    from tests.inference_fixtures import WORKLOAD_CHANNELS
    from tests.raw_fixtures import eeg_like

    data = eeg_like(len(WORKLOAD_CHANNELS), seconds, 250.0, 0) * 1e-6
    return mne.io.RawArray(data, mne.create_info(WORKLOAD_CHANNELS, 250.0, "eeg"),
                           verbose="ERROR")


def test_inference_loads_llama_checkpoints_and_exports_and_analyses_a_recording(base, tmp_path,
                                                                               capsys):
    import inference
    import simple_inference as si
    from tests.inference_fixtures import tiny_vq as recording_vq
    from utils import UserError

    lm = neurolm_on_hf(recording_vq().VQ, base)
    add_lora(lm, LoraSettings(rank=2, dropout=0.0))
    torch.save(neurolm_checkpoint(trained(lm)), tmp_path / "lora.pt")
    raw = workload_raw(12)
    tables = {}
    for name, path in (("checkpoint", tmp_path / "lora.pt"),
                       ("merged", export(tmp_path / "lora.pt", tmp_path / "merged")),
                       ("adapter", export(tmp_path / "lora.pt", tmp_path / "ad", adapter=True))):
        loaded = inference.load_model(path, device="cpu", dtype="float32")
        assert loaded.model.text.identity() == lm.text.identity()
        result = inference.analyse_recording(raw, "Workload", loaded)
        table = result.windows
        assert len(table) == 5 and result.summary["n_windows"] == 5
        probs = table[["prob_rest", "prob_arithmetic"]].to_numpy()
        assert abs(probs.sum(axis=1) - 1).max() < 1e-5
        # an untrained LM's greedy answers need not be an option: the same ones every load
        assert set(table["label_name"]) <= {"", "rest", "arithmetic"}
        tables[name] = probs, list(table["generated_text"])
    for name in ("merged", "adapter"):
        assert abs(tables[name][0] - tables["checkpoint"][0]).max() < 1e-4
        assert tables[name][1] == tables["checkpoint"][1]
    # the base moved: one line naming the way out, and --base_folder / base_folder= finds it
    moved = tmp_path / "moved"
    base.rename(moved)
    with pytest.raises(UserError, match="--base_folder"):
        inference.load_model(tmp_path / "lora.pt", device="cpu")
    loaded = inference.load_model(tmp_path / "lora.pt", device="cpu", dtype="float32",
                                  base_folder=moved)
    probs = inference.analyse_recording(raw, "Workload", loaded).windows[
        ["prob_rest", "prob_arithmetic"]].to_numpy()
    assert abs(probs - tables["checkpoint"][0]).max() < 1e-6
    from tests.inference_fixtures import WORKLOAD_EDF_NAMES
    from tests.raw_fixtures import write_edf

    edf = write_edf(tmp_path / "rec" / "a.edf", WORKLOAD_EDF_NAMES, seconds=8, sfreq=256.0,
                    seed=1)
    common = ["--model_path", str(tmp_path / "lora.pt"), "--edf", str(edf), "--task",
              "Workload", "--plot", "none", "--device", "cpu"]
    capsys.readouterr()
    assert si.main([*common, "--out_dir", str(tmp_path / "o1")]) == 2
    assert "--base_folder" in capsys.readouterr().err
    assert si.main([*common, "--out_dir", str(tmp_path / "o2"), "--base_folder",
                    str(moved)]) == 0
    # the viewer takes the exported folder and the moved base too
    import serve
    from viewer.analysis import Engine

    args = serve.resolve_inputs(serve.build_parser().parse_args(
        ["--model_path", str(tmp_path / "ad"), "--data_dir", str(tmp_path),
         "--base_folder", str(moved)]))
    engine = Engine(args.model_path, device="cpu", base_folder=args.base_folder)
    assert engine.loaded.model.text.identity() == lm.text.identity()
    assert "Workload" in engine.tasks


def test_eval_only_evaluates_a_llama_lora_checkpoint_and_its_exports(base, tmp_path):
    import train_instruction
    from tests.test_train_instruction import FAST, input_driven_vq, write_task

    write_task(tmp_path / "data" / "Workload", 2, seed=0)
    lm = neurolm_on_hf(input_driven_vq().VQ, base)
    add_lora(lm, LoraSettings(rank=2, dropout=0.0))
    torch.save(neurolm_checkpoint(trained(lm)), tmp_path / "lora.pt")
    flags = [*FAST, "--text_max_tokens", "48", "--data_root", str(tmp_path / "data"),
             "--tasks", "Workload", "--eval_max_samples", "4"]
    found = {}
    for name, path in (("checkpoint", tmp_path / "lora.pt"),
                       ("merged", export(tmp_path / "lora.pt", tmp_path / "merged")),
                       ("adapter", export(tmp_path / "lora.pt", tmp_path / "ad", adapter=True))):
        results = train_instruction.main([*flags, "--eval_only", "--model_path", str(path),
                                          "--out_dir", str(tmp_path / f"eval_{name}")])
        found[name] = results["Workload"]["test"]["scoring"]
        assert found[name]["n"] == 4
    assert found["merged"]["balanced_accuracy"] == found["checkpoint"]["balanced_accuracy"]
    assert found["adapter"]["balanced_accuracy"] == found["checkpoint"]["balanced_accuracy"]
    moved = tmp_path / "moved"
    base.rename(moved)
    with pytest.raises(SystemExit) as exit_:
        train_instruction.main([*flags, "--eval_only", "--model_path", str(tmp_path / "lora.pt"),
                                "--out_dir", str(tmp_path / "eval_lost")])
    assert exit_.value.code == 2
    results = train_instruction.main([*flags, "--eval_only", "--model_path",
                                      str(tmp_path / "lora.pt"), "--base_folder", str(moved),
                                      "--out_dir", str(tmp_path / "eval_moved")])
    assert results["Workload"]["test"]["scoring"] == found["checkpoint"]


def test_a_damaged_lm_or_adapter_folder_is_one_error_naming_it(base, tmp_path):
    _, ckpt = lora_run(base, tmp_path)
    for adapter, sub, weights in ((False, "lm", "model.safetensors"),
                                  (True, "adapter", "adapter_model.safetensors")):
        out = export(ckpt, tmp_path / sub, adapter=adapter)
        (out / sub / weights).write_bytes((out / sub / weights).read_bytes()[:100])
        with pytest.raises(CheckpointError, match=f"{out / sub}: not a readable model folder"):
            load_neurolm(out)
        shutil.rmtree(out / sub)
        with pytest.raises(CheckpointError, match=f"{out / sub}: missing"):
            load_neurolm(out)
        config = json.loads((out / "config.json").read_text())
        config["checkpoint"]["backbone"]["folder"] = "../elsewhere"
        (out / "config.json").write_text(json.dumps(config))
        with pytest.raises(CheckpointError, match="neither 'lm' nor 'adapter'"):
            load_neurolm(out)


def test_transformers_progress_bars_stay_out_of_a_redirected_log(base, tmp_path, capfd):
    """pytest's stderr is not a terminal: loading and exporting print no bars there."""
    lm = neurolm_on_hf(tiny_vq().VQ, base)
    torch.save(neurolm_checkpoint(lm), tmp_path / "lm.pt")
    capfd.readouterr()
    load_neurolm(export(tmp_path / "lm.pt", tmp_path / "out"))
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "Writing model shards" not in err and "it/s" not in err
