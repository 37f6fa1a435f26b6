"""Knowing what the model knows: recordings outside a task's training profile earn their
warning (console, answers.json, recordings.csv) and --strict refuses them with one line; the
instruction trainer stores the profile in its checkpoints."""
from __future__ import annotations

import csv
import json
import pickle

import mne
import numpy as np
import pytest
import torch
from inference_fixtures import WORKLOAD_CHANNELS, WORKLOAD_EDF_NAMES, write_checkpoints
from raw_fixtures import eeg_like, write_edf

import simple_inference as si
from inference import ood


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("ckpts"))


def fif(path, names, data_volts, sfreq=250.0):
    raw = mne.io.RawArray(data_volts, mne.create_info(names, sfreq, "eeg"), verbose="ERROR")
    raw.save(path, verbose="ERROR")
    return path


def two_channels(tmp_path):
    return write_edf(tmp_path / "two.edf", ["EEG F8", "EEG FCz"], seconds=10, sfreq=250.0)


def hundred_hz(tmp_path):
    return write_edf(tmp_path / "slow.edf", WORKLOAD_EDF_NAMES, seconds=10, sfreq=100.0)


def in_volts(tmp_path):
    # microvolt numbers handed to MNE as volts: a million times too large
    uv = eeg_like(len(WORKLOAD_CHANNELS), 10, 250.0, seed=1)
    return fif(tmp_path / "volts_raw.fif", WORKLOAD_CHANNELS, uv)


def bipolar(tmp_path):
    names = [f"EEG {c}-Oz" for c in "Fp1 Fp2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 Fz Cz "
             "Pz".split()]
    return write_edf(tmp_path / "bipolar.edf", names, seconds=10, sfreq=250.0)


CASES = {
    "2 channels": (two_channels, ["--channels", "all"], "channel coverage: 1 of the 19"),
    "100 Hz": (hundred_hz, [], "sampling rate: 100 Hz cannot carry the trained 0.1-75 Hz band"),
    "volts": (in_volts, [], "amplitude: "),
    "bipolar": (bipolar, [], "bipolar montage: 19 derivation(s)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_out_of_distribution_warns_and_strict_refuses(case, ckpts, tmp_path, capsys):
    make, extra, expected = CASES[case]
    path = make(tmp_path)
    base = ["--model_path", str(ckpts["lm"]), "--edf", str(path), "--task", "Workload",
            "--plot", "none", *extra]
    rc = si.main([*base, "--out_dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"warning  {expected}" in out
    row, = csv.DictReader((tmp_path / "out" / "recordings.csv").open())
    assert expected in row["warnings"]
    folder, = [p for p in (tmp_path / "out").iterdir() if p.is_dir()]
    assert any(expected in w for w in json.loads((folder / "answers.json").read_text())
               ["warnings"])

    rc = si.main([*base, "--strict", "--out_dir", str(tmp_path / "strict")])
    out, err = capsys.readouterr()
    assert rc == si.USER_ERROR_EXIT and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {path.name}: refused (--strict): ") and expected in err
    assert not (tmp_path / "strict" / "recordings.csv").exists()


def test_in_distribution_recording_has_no_warning(ckpts, tmp_path, capsys):
    path = write_edf(tmp_path / "fine.edf", WORKLOAD_EDF_NAMES, seconds=10, sfreq=500.0)
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(path), "--task", "Workload",
                  "--plot", "none", "--strict", "--out_dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0, err and "warning" not in out
    row, = csv.DictReader((tmp_path / "out" / "recordings.csv").open())
    assert row["warnings"] == "" and row["status"] == "ok"


def test_strict_over_a_folder_answers_the_rest_and_exits_2(ckpts, tmp_path, capsys):
    hundred_hz(tmp_path)
    write_edf(tmp_path / "fine.edf", WORKLOAD_EDF_NAMES, seconds=10, sfreq=500.0)
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(tmp_path), "--task",
                  "Workload", "--plot", "none", "--strict", "--out_dir", str(tmp_path / "out")])
    capsys.readouterr()
    assert rc == si.USER_ERROR_EXIT
    rows = {r["file"]: r["status"] for r in csv.DictReader((tmp_path / "out" /
                                                            "recordings.csv").open())}
    assert rows == {"fine.edf": "ok", "slow.edf": "refused"}


def test_profile_amplitudes_and_channels():
    rng = np.random.default_rng(0)
    windows = [(rng.normal(0, 10, (2, 800)), ["FP1", "CZ"]) for _ in range(5)]
    windows.append((rng.normal(0, 10, (1, 800)), ["O1"]))
    profile = ood.training_profile({"T": iter(windows)})["T"]
    assert profile["channels"] == ["FP1", "CZ", "O1"] and profile["n_windows"] == 6
    assert profile["sfreq"] == 200 and profile["band_hz"] == [0.1, 75.0]
    amp = profile["amplitude_uv"]["FP1"]
    assert amp["median_abs"] == pytest.approx(6.74, rel=0.1)     # 0.674 sigma
    assert amp["p99_abs"] == pytest.approx(25.8, rel=0.15)       # 2.58 sigma


def test_instruction_checkpoints_carry_the_training_profile(tmp_path):
    from inference_fixtures import tiny_vq
    from train_fixtures import write_text

    import train_instruction
    from model import vq_checkpoint

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        folder = tmp_path / "data" / "Workload" / split
        folder.mkdir(parents=True)
        for i in range(n):
            sample = {"X": (40 * rng.standard_normal((2, 800))).astype(np.float32),
                      "ch_names": ["FP1", "CZ"], "y": i % 2}
            (folder / f"s{i}.pkl").write_bytes(pickle.dumps(sample))
    torch.save(vq_checkpoint(tiny_vq()), tmp_path / "vq.pt")
    write_text(tmp_path / "text", n_tokens=2000)
    last = train_instruction.main([
        "--preset", "tiny", "--eeg_max_tokens", "8", "--text_max_tokens", "20",
        "--batch_size", "2", "--text_batch_size", "1", "--text_block_size", "16",
        "--num_workers", "0", "--save_every", "0", "--device", "cpu", "--max_steps", "1",
        "--init_from", "scratch", "--tokenizer_path", str(tmp_path / "vq.pt"),
        "--data_root", str(tmp_path / "data"), "--tasks", "Workload",
        "--text_dir", str(tmp_path / "text"), "--out_dir", str(tmp_path / "run"),
        "--resume", "none"])
    for path in (last, tmp_path / "run" / "best.pt"):
        profile = torch.load(path, weights_only=True)[ood.TRAINING_PROFILE_KEY]["Workload"]
        assert profile["channels"] == ["FP1", "CZ"] and profile["n_windows"] == 8
        assert 20 < profile["amplitude_uv"]["CZ"]["median_abs"] < 35     # 0.674 * 40


def test_an_export_keeps_calibration_and_training_profile(ckpts, tmp_path):
    from inference import load_model
    from model.export import export

    ckpt = torch.load(ckpts["lm"], weights_only=True)
    ckpt["calibration"] = {"Workload": {"temperature": 2.5, "ece_before": 0.2,
                                        "ece_after": 0.1, "n": 40}}
    ckpt[ood.TRAINING_PROFILE_KEY] = ood.training_profile(
        {"Workload": [(np.full((1, 800), 30.0), ["CZ"])]})
    torch.save(ckpt, tmp_path / "lm.pt")
    loaded = load_model(export(tmp_path / "lm.pt", tmp_path / "export"), device="cpu")
    assert loaded.temperature(si.resolve_task("Workload")) == 2.5
    assert loaded.training_profile["Workload"]["amplitude_uv"]["CZ"]["median_abs"] == 30.0
