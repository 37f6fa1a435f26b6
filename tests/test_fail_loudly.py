"""Issue 13 on the training side: bad samples named, non-finite runs stopped, exact VQ resume,
stale checkpoint temp files removed, user mistakes in one line (exit 2), wandb through its public
API, --help with the preset's defaults, the public code's flag names."""
from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_train_resume import assert_same, full_then_killed
from train_fixtures import (
    REPO,
    pretrain_args,
    tiny_inputs,
    tiny_vq_checkpoint,
    vq_args,
    write_dataset,
)

import train_instruction
import train_pretrain
import train_vq
import training
import utils
from dataset import PickleLoader, SampleFileError, load_sample
from training import loop

# ----------------------------------------------------------------------------- samples (3, 4)

GOOD_X = np.ones((2, 400), np.float32)


@pytest.mark.parametrize("content,match", [
    ({"X": np.where(np.arange(400) == 7, np.nan, 1.0)[None].repeat(2, 0)}, "NaN/Inf"),
    ({"X": np.full((2, 400), np.inf)}, "NaN/Inf"),
    ({"X": np.full((2, 400), 1e30)}, "not EEG in microvolts"),
    ({"X": GOOD_X, "y": "abnormal"}, "label must be a single whole number"),
    ({"X": np.array([[object()] * 400] * 2, dtype=object)}, "not a usable sample file"),
    ({"X": np.ones((2, 150), np.float32)}, "shorter than one second"),
])
def test_bad_sample_content_is_refused_naming_the_file(content, match, tmp_path):
    path = tmp_path / "bad_sample.pkl"
    content.setdefault("ch_names", ["C3", "C4"])
    if content["X"].dtype == object:
        path.write_bytes(pickle.dumps(content))   # refused (object array) or unreadable
        with pytest.raises((SampleFileError, pickle.UnpicklingError), match="bad_sample.pkl"):
            load_sample(path)
        return
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(SampleFileError, match=f"bad_sample.pkl.*{match}"):
        load_sample(path)


@pytest.mark.parametrize("payload", [b"", pickle.dumps({"X": GOOD_X})[:40]])
def test_empty_or_truncated_pickle_names_the_file(payload, tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(payload)
    with pytest.raises(SampleFileError, match="cut.pkl"):
        load_sample(path)


def test_loader_worker_error_names_the_file(tmp_path):
    (tmp_path / "a.pkl").write_bytes(b"")
    loader = torch.utils.data.DataLoader(PickleLoader([tmp_path / "a.pkl"], 32), num_workers=1)
    with pytest.raises(SampleFileError) as err:
        next(iter(loader))
    line = training.one_line(err.value)
    assert line.startswith(str(tmp_path / "a.pkl")) and "Traceback" not in line


# ----------------------------------------------------------------------------- trainers (3, 10)

def run_cli(script, *argv, env=None):
    return subprocess.run([sys.executable, script, *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: "), last
    for needle in needles:
        assert needle in last, last


def poison_train_step(monkeypatch, after_step):
    """train_vq's stage with `after_step(stage, log) -> log` run after every real train step."""
    build = train_vq.build_stage

    def poisoned(args):
        stage = build(args)
        step = stage.train_step
        stage.train_step = lambda *a: after_step(stage, step(*a))
        return stage

    monkeypatch.setattr(train_vq, "build_stage", poisoned)


def test_nonfinite_gradients_stop_the_run_before_a_checkpoint(train_root, tmp_path, monkeypatch,
                                                              single_thread, capsys):
    dataset, text = tiny_inputs(train_root)
    poison_train_step(monkeypatch, lambda stage, log: {**log, "grad_norm": float("nan")})
    monkeypatch.setattr(loop, "NONFINITE_STEP_LIMIT", 3)
    with pytest.raises(SystemExit) as exit_:
        train_vq.main(vq_args(dataset, text, tmp_path / "out", "--max_steps", "6",
                              "--save_every", "5"))
    assert exit_.value.code == 2
    assert "non-finite gradients" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.pt"))


def test_a_model_holding_nan_is_not_checkpointed(train_root, tmp_path, monkeypatch,
                                                 single_thread, capsys):
    dataset, text = tiny_inputs(train_root)

    def nan_codebook(stage, log):
        with torch.no_grad():
            utils.unwrap(stage.model).VQ.quantize.embedding.weight.fill_(float("nan"))
        return log

    poison_train_step(monkeypatch, nan_codebook)
    with pytest.raises(SystemExit):
        train_vq.main(vq_args(dataset, text, tmp_path / "out", "--max_steps", "2"))
    assert "NaN/Inf values" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("*.pt"))


def test_vq_resume_is_exact_with_code_restarts(train_root, tmp_path, monkeypatch, single_thread):
    """The unused-code counters steer restarts: they travel in the checkpoint ("buffers"), so
    a run killed mid-epoch resumes to the very same tensors, buffers included."""
    dataset, text = tiny_inputs(train_root)

    def argv(out):
        return vq_args(dataset, text, out, "--max_steps", "7", "--save_every", "3",
                       "--restart_unused_codes_after", "2")

    full = full_then_killed(train_vq, argv, tmp_path, monkeypatch, step=5)
    resumed = train_vq.main([*argv(tmp_path / "part"), "--resume", "auto"])
    a = torch.load(full, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    assert "VQ.quantize.steps_unused" in a["buffers"]
    assert a["stage"] == "VQ_Align"
    for key in ("model", "optimizer", "buffers", "iter_num", "epoch", "step_in_epoch"):
        assert_same(a[key], b[key], key)


def test_stale_checkpoint_temp_files_are_removed(tmp_path):
    stale = tmp_path / ".ckpt-0000003.pt.tmp-999999999"
    last = tmp_path / ".last.pt.tmp-999999999"
    other = tmp_path / ".results.json.tmp-999999999"
    foreign = tmp_path / "notes.txt"
    for p in (stale, last, other, foreign):
        p.write_bytes(b"x")
    removed = training.Checkpointer(tmp_path).remove_stale_temp_files()
    assert sorted(removed) == sorted([stale, last])
    assert other.exists() and foreign.exists() and not stale.exists()


def test_user_mistakes_are_one_line_with_exit_2(train_root, tmp_path):
    dataset, text = tiny_inputs(train_root)
    vq = tiny_vq_checkpoint(train_root)
    result = run_cli("train_vq.py", *vq_args(tmp_path / "nowhere", text, tmp_path / "o"))
    assert_one_line_error(result, "nowhere")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    result = run_cli("train_vq.py", *vq_args(tmp_path / "empty", text, tmp_path / "o"))
    assert_one_line_error(result, "holds no sample files")
    (tmp_path / "t0").mkdir()
    (tmp_path / "t0" / "train.bin").write_bytes(b"")
    result = run_cli("train_vq.py", *vq_args(dataset, tmp_path / "t0", tmp_path / "o"))
    assert_one_line_error(result, "train.bin")
    (tmp_path / "afile").write_text("x")
    result = run_cli("train_vq.py", *vq_args(dataset, text, tmp_path / "afile"))
    assert_one_line_error(result, "--out_dir", "is a file")
    small = write_dataset(tmp_path / "small", n_train=1, n_val=1)
    result = run_cli("train_vq.py", *vq_args(small, text, tmp_path / "o2"))
    assert_one_line_error(result, "holds 1 samples", "--batch_size 2")
    result = run_cli("train_vq.py", *vq_args(dataset, text, tmp_path / "o3",
                                             "--init_from", tmp_path / "no_gpt2"))
    assert_one_line_error(result, "no_gpt2")
    # resuming the pretraining stage from the tokenizer's checkpoint: refused, both named
    result = run_cli("train_pretrain.py", *pretrain_args(vq, dataset, text, tmp_path / "o4",
                                                         "--resume", vq))
    assert_one_line_error(result, "VQ_Align stage", "NeuroLM stage")
    # a VQ checkpoint where a NeuroLM is expected
    result = run_cli("train_instruction.py", "--model_path", vq, "--data_root", tmp_path,
                     "--tasks", "Workload", "--text_batch_size", "0", "--out_dir",
                     tmp_path / "o5")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_sample_folder_of_another_task_is_refused(tmp_path):
    folder = tmp_path / "tuev"
    for split in ("train", "val", "test"):
        write_dataset(folder / split, n_train=1, n_val=0)
    (folder / "splits.json").write_text('{"dataset": "TUEV", "splits": {}}')
    args = train_instruction.parse_args(["--model_path", "m.pt", "--tasks", "HMC",
                                         "--task_dir", f"HMC={folder}", "--text_batch_size",
                                         "0"])
    with pytest.raises(utils.UserError, match="TUEV.*HMC"):
        train_instruction.task_folders(args)


# ----------------------------------------------------------------------------- wandb (13)

def test_wandb_offline_with_the_real_package(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb").mkdir()
    runtime = utils.setup_runtime("cpu", 0, "float32")
    try:
        logger = training.Logger(runtime, tmp_path / "run", wandb=True, project="p", run_name="r",
                              config={"lr": 1.0})
        logger.log({"loss": 1.0}, step=1)
        logger.close()
        run_id = (tmp_path / "run" / "wandb_run_id.txt").read_text().strip()
        assert run_id
        again = training.Logger(runtime, tmp_path / "run", wandb=True, project="p")
        assert again._wandb_run.id == run_id            # a resumed run continues the same one
        again.close()
    finally:
        training.cleanup_runtime()


# ----------------------------------------------------------------------------- flags (14, 16)

def test_help_shows_the_chosen_presets_defaults():
    paper = run_cli("train_vq.py", "--help").stdout
    tiny = run_cli("train_vq.py", "--preset", "tiny", "--help").stdout
    assert "(default: 5e-05)" in paper and "(default: 64)" in paper and "(default: 50)" in paper
    assert "(default: 0.0003)" in tiny and "(default: 2)" in tiny
    pretrain = run_cli("train_pretrain.py", "--help").stdout
    assert "(default: 60)" in pretrain and "(default: 20)" in pretrain


def test_public_flag_names_are_accepted_with_a_note(capsys):
    base = ["--dataset_dir", "d", "--text_dir", "t", "--preset", "tiny"]
    args = train_vq.parse_args([*base, "--learning_rate", "0.01", "--epochs", "3",
                                "--eeg_batch_size", "5", "--gradient_accumulation_steps", "2",
                                "--log_interval", "7", "--wandb_log", "--wandb_runname", "x",
                                "--save_ckpt_freq", "5"])
    assert (args.lr, args.max_epochs, args.batch_size, args.grad_accum, args.log_every,
            args.wandb, args.wandb_run_name) == (0.01, 3, 5, 2, 7, True, "x")
    err = capsys.readouterr().err
    assert "note: --learning_rate is --lr here" in err and "--save_ckpt_freq" in err
    args = train_instruction.parse_args(["--NeuroLM_path", "m.pt", "--dataset_dir", "data",
                                         "--text_batch_size", "0"])
    assert (args.model_path, args.data_root) == ("m.pt", "data")
    with pytest.raises(SystemExit) as exit_:
        train_pretrain.parse_args(["--tokenizer_path", "v", "--dataset_dir", "d", "--text_dir",
                                   "t", "--wandb_api_key", "secret"])
    assert exit_.value.code == 2 and "WANDB_API_KEY" in capsys.readouterr().err
