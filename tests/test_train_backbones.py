"""The trainers on Hugging Face backbones (issue 25): train_pretrain.py and train_instruction.py
with --init_from a tiny random folder of another architecture (model.random_lm, its own BPE
vocabulary), with full fine-tuning and with LoRA; what trains, the printed and logged trainable
share, LoRA checkpoints continued and resumed bit-exactly, adapters added to a full checkpoint,
and the LoRA flags checked at the door. Tiny shapes, two or three steps per run (CPU)."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from test_train_instruction import input_driven_vq, write_task
from test_train_resume import assert_same, full_then_killed
from train_fixtures import pretrain_args, run_under_torchrun, write_dataset

import train_instruction
import train_pretrain
import training
import utils
from model import load_neurolm, vq_checkpoint
from model.hf_backbone import SUPPORTED_ARCHITECTURES
from model.random_lm import LMShape, write_random_lm
from model.text_tokenizer import GPT2_TEXT, HFTextTokenizer
from tasks import BUILTIN_TASKS
from text_dataset_maker import prepare
from training.loop import trainable_share

SHAPE = LMShape(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, positions=128)
TASKS = {"Workload": 2, "SEED": 3}
# what the tokenizers learn (and the text corpus repeats): the tasks' texts, so that they are
# a few tokens each in a 400-word vocabulary
TEXTS = [BUILTIN_TASKS[t].prompt + BUILTIN_TASKS[t].answer_text(label)
         for t, n in TASKS.items() for label in range(n)] + [
    "The recording shows a normal background rhythm.", "Sleep stage two with spindles."]
INSTRUCTION = ["--preset", "tiny", "--eeg_max_tokens", "16", "--text_max_tokens", "24",
               "--batch_size", "4", "--text_batch_size", "1", "--text_block_size", "16",
               "--num_workers", "0", "--log_every", "1", "--save_every", "0",
               "--device", "cpu", "--tasks", *TASKS, "--eval_modes", "scoring", "generation",
               "--eval_max_samples", "4", "--eval_batch_size", "4", "--resume", "none"]
LORA = ["--lora_rank", "2", "--lora_dropout", "0"]
EEG_SIDE = ("pos_embed.", "encode_transform_layer.", "eeg_head.")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """VQ checkpoint, pretraining samples and the instruction tasks' samples, written once."""
    root = tmp_path_factory.mktemp("backbones")
    torch.save(vq_checkpoint(input_driven_vq()), root / "vq.pt")
    write_dataset(root / "eeg")
    for seed, (task, n_classes) in enumerate(TASKS.items()):
        write_task(root / "tasks" / task, n_classes, seed)
    return root


def lm_folder(root: Path, arch: str) -> Path:
    """A random `arch` LM with its own tokenizer, and a text corpus in that tokenizer's ids."""
    folder = root / arch
    if not folder.exists():
        shape = dataclasses.replace(SHAPE, kv_heads=SHAPE.heads) if arch == "gpt2" else SHAPE
        write_random_lm(folder, arch, shape, TEXTS, vocab_size=400, seed=0)
        documents = root / f"documents_{arch}.jsonl"      # one document a line
        documents.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS * 40))
        assert prepare.main(["--out_dir", str(root / f"text_{arch}"), "--input", str(documents),
                             "--tokenizer", str(folder), "--num_proc", "1",
                             "--val_fraction", "0.2"]) == 0
    return folder


def pretrain(root: Path, arch: str, out: Path, *extra: str) -> Path:
    lm_folder(root, arch)
    return train_pretrain.main(pretrain_args(
        root / "vq.pt", root / "eeg", root / f"text_{arch}", out, "--init_from",
        str(root / arch), "--max_steps", "2", "--text_batch_size", "1", "--device", "cpu",
        *extra))


def instruction_args(root: Path, arch: str, out: Path, *extra: str) -> list[str]:
    return [*INSTRUCTION, "--data_root", str(root / "tasks"), "--text_dir",
            str(root / f"text_{arch}"), "--out_dir", str(out), *extra]


def trained_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def assert_lora_trains_only_adapters_and_eeg_side(model):
    names = trained_names(model)
    adapters = {n for n in names if ".lora_" in n or ".trainable_tokens_delta." in n}  # [SEP]
    assert adapters and names - adapters == {n for n in names if n.startswith(EEG_SIDE)}
    assert "eeg_head.weight" in names and "pos_embed.weight" in names


def logged_share(out: Path) -> tuple[int, int]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    row = next(r for r in rows if "trainable_parameters" in r)
    return row["trainable_parameters"], row["parameters"]


def built(trainer, argv):
    """The stage `argv` builds (its unwrapped model), without training."""
    try:
        return training.unwrap(trainer.build_stage(trainer.parse_args(argv)).model)
    finally:
        training.cleanup_runtime()


@pytest.mark.parametrize("arch, lora, attn", [("llama", False, "sdpa"), ("llama", True, "sdpa"),
                                             ("qwen3", True, "eager")])
def test_pretrain_then_instruction_on_a_hf_folder(root, tmp_path, arch, lora, attn, capsys,
                                                  single_thread):
    flags = LORA if lora else []
    last = pretrain(root, arch, tmp_path / "lm", *flags, "--attn_implementation", attn)
    trained, total = logged_share(tmp_path / "lm")
    assert trainable_share(trained, total) in capsys.readouterr().out
    model = load_neurolm(last)
    assert model.config.model_type == arch and model.text.identity() == \
        HFTextTokenizer.from_folder(root / arch).identity()
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["backbone"]["attn_implementation"] == attn
    if lora:
        assert trained < total / 2 and ckpt["backbone"]["lora"]["rank"] == 2
        assert not any(".base_layer." in k for k in ckpt["model"])   # the folder keeps those
        assert sum(v.numel() for v in ckpt["model"].values()) < sum(
            v.numel() for v in model.state_dict().values())
        assert_lora_trains_only_adapters_and_eeg_side(model.train())
    else:
        assert trained == total - sum(p.numel() for p in model.tokenizer.parameters())

    # instruction tuning from that checkpoint: a LoRA one continues its own adapters
    argv = instruction_args(root, arch, tmp_path / "it", "--model_path", str(last),
                            "--max_steps", "2")
    start = built(train_instruction, argv)
    for name, value in ckpt["model"].items():
        if ".lora_" in name or name.startswith(EEG_SIDE):
            assert torch.equal(start.state_dict()[name], value), name
    if lora:
        assert_lora_trains_only_adapters_and_eeg_side(start)
    best = train_instruction.main(argv)
    results = json.loads((tmp_path / "it" / "results.json").read_text())
    final = results["evaluations"][-1]["results"]
    for task in TASKS:
        assert set(final[task]["test"]) >= {"scoring", "generation"}
        assert final[task]["test"]["scoring"]["n"] == 4
    again = load_neurolm(best)
    assert again.config.model_type == arch and (".lora_" in str(again.state_dict().keys())) \
        == lora


def end_to_end(root: Path, out: Path, arch: str, *flags: str) -> dict:
    """prepare.py --tokenizer (lm_folder) -> pretraining -> instruction tuning; the last
    evaluation's results."""
    last = pretrain(root, arch, out / "lm", *flags)
    train_instruction.main(instruction_args(
        root, arch, out / "it", "--model_path", str(last), "--max_epochs", "6",
        "--eval_every_epochs", "6", "--lr", "1e-2",
        "--eval_max_samples", "12"))
    return json.loads((out / "it" / "results.json").read_text())["evaluations"][-1]["results"]


def assert_answers_valid(results: dict) -> None:
    """Generated answers are mostly valid (at most half invalid: best.pt's rule) and option
    scoring beats chance, on every task's test split."""
    for task, n_classes in TASKS.items():
        gen, scoring = (results[task]["test"][mode] for mode in ("generation", "scoring"))
        assert gen["n"] == scoring["n"] == 12
        assert gen["invalid_rate"] <= 0.5, (task, gen)
        assert scoring["balanced_accuracy"] > 1 / n_classes, (task, scoring)


# Full fine-tuning only: LoRA cannot learn answers on a *random* LM. Its frozen head (std 0.02
# rows) over a frozen unit-gain final norm bounds every logit to about +-0.6, so the answer
# loss stalls near ln(912) - 1 whatever the adapters do (one batch: 5.27 after 60 steps, full
# fine-tuning: 0.001). A pretrained head has no such bound; the LoRA path is checked above.
@pytest.mark.parametrize("arch", [pytest.param(a, marks=() if a == "llama" else pytest.mark.slow)
                                  for a in SUPPORTED_ARCHITECTURES])
def test_end_to_end_answers_in_both_modes(root, tmp_path, arch, single_thread):
    assert_answers_valid(end_to_end(root, tmp_path, arch))


def test_instruction_tuning_builds_lora_on_a_folder_directly(root, tmp_path, single_thread):
    folder = lm_folder(root, "llama")
    model = built(train_instruction, instruction_args(
        root, "llama", tmp_path, "--init_from", str(folder), "--tokenizer_path",
        str(root / "vq.pt"), *LORA))
    assert_lora_trains_only_adapters_and_eeg_side(model)
    assert not (tmp_path / "base_lm").exists()      # the folder itself is the base


def test_a_full_hf_checkpoint_gets_new_adapters(root, tmp_path, single_thread):
    full = pretrain(root, "llama", tmp_path / "lm")
    argv = instruction_args(root, "llama", tmp_path / "it", "--model_path", str(full),
                            "--max_steps", "2", *LORA)
    model = built(train_instruction, argv)
    assert_lora_trains_only_adapters_and_eeg_side(model)
    # its frozen base (the checkpoint's LM) is a folder of the run, which the checkpoints name
    base = tmp_path / "it" / "base_lm"
    assert (base / "config.json").is_file()
    last = train_instruction.main(argv)
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["backbone"]["base_folder"] == str(base.resolve())
    reloaded = load_neurolm(last)
    lm = torch.load(full, weights_only=True)["model"]
    for name, value in reloaded.LM.get_base_model().state_dict().items():
        if ".lora_" not in name and ".trainable_tokens_delta." not in name:  # the pretrained
            key = name.replace(".token_adapter.base_layer", "").replace(".base_layer", "")
            assert torch.equal(value, lm["LM." + key]), name    # weights under the adapters
    # a second run into the same folder finds the same base there
    train_instruction.main([*argv, "--resume", "auto"])


def test_recomputed_layers_give_the_same_losses(root, tmp_path, single_thread):
    """--activation_checkpointing on a Hugging Face backbone with adapters: the library's own
    checkpointing, the same numbers."""
    def losses(out, *flag):
        pretrain(root, "llama", out, *LORA, *flag)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    plain = losses(tmp_path / "plain")
    assert len(plain) == 2 and losses(tmp_path / "recompute", "--activation_checkpointing") \
        == plain
    lm = built(train_pretrain, pretrain_args(
        root / "vq.pt", root / "eeg", root / "text_llama", tmp_path / "b", "--init_from",
        str(root / "llama"), "--activation_checkpointing")).LM
    on = [getattr(lm, name) for name in ("is_activation_checkpointing",
                                         "is_gradient_checkpointing") if hasattr(lm, name)]
    assert on[0]      # (really on: same numbers alone would not show it)


def test_lora_kill_and_resume_continues_bit_exactly(root, tmp_path, monkeypatch, single_thread):
    lm_folder(root, "llama")

    def argv(out):
        return pretrain_args(root / "vq.pt", root / "eeg", root / "text_llama", out,
                             "--init_from", str(root / "llama"), "--max_steps", "5",
                             "--save_every", "2", "--text_batch_size", "1", "--device", "cpu",
                             "--lora_rank", "2", "--lora_dropout", "0.1")
    full = full_then_killed(train_pretrain, argv, tmp_path, monkeypatch, step=3)
    assert sorted(p.name for p in (tmp_path / "part").glob("ckpt-*.pt")) == ["ckpt-0000002.pt"]
    resumed = train_pretrain.main([*argv(tmp_path / "part"), "--resume", "auto"])
    a, b = torch.load(full, weights_only=True), torch.load(resumed, weights_only=True)
    assert a["iter_num"] == b["iter_num"] == 5
    assert any(".lora_B." in k and bool(v.any()) for k, v in a["model"].items())
    assert_same(a["model"], b["model"], "model")
    assert_same(a["optimizer"], b["optimizer"], "optimizer")


@pytest.mark.parametrize("flag, value", [("--lora_rank", "nan"), ("--lora_rank", "-1"),
                                         ("--lora_rank", "0.5"), ("--lora_alpha", "0"),
                                         ("--lora_alpha", "inf"), ("--lora_dropout", "1"),
                                         ("--lora_dropout", "-0.1")])
def test_lora_numbers_are_checked_at_the_flag(root, tmp_path, flag, value, capsys):
    with pytest.raises(SystemExit) as exit_:
        train_pretrain.parse_args(pretrain_args(root / "vq.pt", root / "eeg", root / "text",
                                                tmp_path, flag, value))
    assert exit_.value.code == 2 and flag in capsys.readouterr().err


def test_lora_on_the_native_gpt_is_refused_in_one_line(root, tmp_path, capsys):
    lm_folder(root, "llama")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        train_pretrain.main(pretrain_args(root / "vq.pt", root / "eeg", root / "text_llama",
                                          tmp_path, "--device", "cpu", *LORA))
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert "--lora_rank 2" in err and "native GPT" in err
    with pytest.raises(SystemExit) as exit_:     # a target the architecture does not have
        train_pretrain.main(pretrain_args(
            root / "vq.pt", root / "eeg", root / "text_llama", tmp_path / "t", "--device",
            "cpu", "--init_from", str(root / "llama"), *LORA, "--lora_targets", "c_attn"))
    last = capsys.readouterr().err.strip().splitlines()[-1]   # (after transformers' progress)
    assert exit_.value.code == 2 and last.startswith("error: --lora_targets")


def test_sequences_must_fit_the_backbones_positions_and_sliding_window(tmp_path):
    import transformers

    from tests.test_backbone import tiny_config
    from tests.test_backbone_neurolm import hf_neurolm

    config = tiny_config("mistral")          # 128 positions, a sliding window of 64
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    model = hf_neurolm(tmp_path)

    def check(**flags):
        args = dict(text_batch_size=1, text_block_size=32, block_size=None, eeg_max_tokens=None,
                    text_max_tokens=None)
        utils.check_text_block(argparse.Namespace(**{**args, **flags}), model)

    check(block_size=64)
    for flags, message in ((dict(text_block_size=129), "exceeds the LM's 128 positions"),
                           (dict(text_block_size=65), "--text_block_size: 65 tokens exceed"),
                           (dict(block_size=65), "--block_size: 65 tokens exceed"),
                           (dict(eeg_max_tokens=48, text_max_tokens=20), "68 tokens exceed")):
        with pytest.raises(utils.UserError, match=message):
            check(**flags)
    check(text_batch_size=0, text_block_size=1000, eeg_max_tokens=44, text_max_tokens=20)


def test_text_max_tokens_follows_the_models_tokenizer(root, tmp_path, capsys):
    from tasks import text_length

    folder = lm_folder(root, "llama")
    text = HFTextTokenizer.from_folder(folder)
    tasks = {name: BUILTIN_TASKS[name] for name in ("TUEV", "Workload")}
    longest = text_length(BUILTIN_TASKS["TUEV"], text)
    assert longest > 80         # this tokenizer never saw TUEV's long option prompt
    args = argparse.Namespace(text_max_tokens=None)
    utils.size_text(args, tasks, text)
    assert args.text_max_tokens == longest
    utils.size_text(args := argparse.Namespace(text_max_tokens=None), tasks, GPT2_TEXT)
    assert args.text_max_tokens == 80          # the paper's, for GPT-2
    with pytest.raises(utils.UserError, match=f"task TUEV's instruction text takes {longest}"):
        utils.size_text(argparse.Namespace(text_max_tokens=80), tasks, text)
    # through the trainer: one line, exit 2
    argv = instruction_args(root, "llama", tmp_path, "--init_from", str(folder),
                            "--tokenizer_path", str(root / "vq.pt"), "--text_max_tokens", "3")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        train_instruction.main(argv)
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: --text_max_tokens 3")


def test_help_names_the_architectures_and_local_folders(capsys):
    with pytest.raises(SystemExit):
        train_instruction.parse_args(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in ("Llama", "Qwen3", "Mistral", "Phi-3", "nothing is downloaded", "--lora_rank",
                 "q_proj"):
        assert name in out, name


def test_lora_instruction_tuning_under_ddp_keeps_the_ranks_equal(root, tmp_path):
    last = pretrain(root, "llama", tmp_path / "lm", *LORA)
    ranks = run_under_torchrun("instruction", tmp_path / "dump", instruction_args(
        root, "llama", tmp_path / "it", "--model_path", str(last), "--max_steps", "2"))
    start = torch.load(last, weights_only=True)["model"]
    adapters = [k for k in ranks[0] if ".lora_A." in k or ".lora_B." in k]
    assert adapters and all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    # the adapters trained on from the pretraining checkpoint's, the same on both ranks
    assert any(not torch.equal(ranks[0][k], start[k]) for k in adapters if k in start)


@pytest.mark.slow   # two 2-rank runs on a shared CPU
def test_lora_under_ddp_and_fsdp_gives_the_same_losses_and_weights(root, tmp_path):
    lm_folder(root, "llama")

    def argv(out):
        return pretrain_args(root / "vq.pt", root / "eeg", root / "text_llama", out,
                             "--init_from", str(root / "llama"), "--max_steps", "3",
                             "--text_batch_size", "1", *LORA)

    ranks = run_under_torchrun("pretrain", tmp_path / "dump_ddp", argv(tmp_path / "ddp"))
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k     # DDP keeps the ranks equal
    run_under_torchrun("pretrain", tmp_path / "dump_fsdp", [*argv(tmp_path / "fsdp"), "--fsdp"])

    def losses(out):
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    assert len(losses(tmp_path / "ddp")) == 3
    assert losses(tmp_path / "fsdp") == pytest.approx(losses(tmp_path / "ddp"), abs=1e-5)
    a = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "fsdp" / "last.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and any(".lora_A." in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5, msg=k)
    assert logged_share(tmp_path / "fsdp") == logged_share(tmp_path / "ddp")


def test_a_lora_model_path_whose_base_moved_trains_on_with_base_folder(root, tmp_path, capsys,
                                                                       single_thread):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(lm_folder(root, "llama"), base)
    argv = [*instruction_args(root, "llama", tmp_path / "first", "--init_from", str(base),
                              "--tokenizer_path", str(root / "vq.pt"), "--max_steps", "1"),
            *LORA]
    first = train_instruction.main(argv)
    moved = tmp_path / "moved"
    base.rename(moved)
    again = instruction_args(root, "llama", tmp_path / "second", "--model_path", str(first),
                             "--max_steps", "1")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        train_instruction.main(again)
    assert exit_.value.code == 2
    assert "--base_folder" in capsys.readouterr().err.strip().splitlines()[-1]
    model = built(train_instruction, [*again, "--base_folder", str(moved)])
    ckpt = torch.load(first, weights_only=True)["model"]
    for name, value in ckpt.items():
        if ".lora_" in name:     # its adapters continue, on the moved base
            assert torch.equal(model.state_dict()[name], value), name
    with pytest.raises(SystemExit) as exit_:   # adapters are never added for evaluation
        train_instruction.parse_args([*again, "--eval_only", *LORA])
    assert exit_.value.code == 2 and "--lora_rank" in capsys.readouterr().err
    shutil.rmtree(moved)
