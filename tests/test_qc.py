"""Quality control end to end: a recording with planted flat, clipped and high-amplitude
segments and a BAD_ annotation; QC flags exactly the windows that meet them."""
from __future__ import annotations

import csv

import mne
import numpy as np
import pytest
from inference_fixtures import WORKLOAD_CHANNELS, WORKLOAD_EDF_NAMES, write_checkpoints
from raw_fixtures import eeg_like, write_edf

import simple_inference as si
from inference import qc

SFREQ = 250.0
SECONDS = 44            # Workload: windows of 4 s every 2 s, k = 0..20, window k = [2k, 2k + 4)
FLAT = (1, 10, 14)      # channel, start s, stop s: windows 4, 5, 6 (half of 4 and 6)
CLIPPED = (7, 20, 24)   # clipped at +-10 uV: windows 9, 10, 11 (half of 9 and 11)
HIGH = (12, 30, 32)     # a 2 mV burst: windows 14, 15
BAD = (36, 1.0)         # BAD_movement: windows 17, 18
EXPECTED = {"flat": {4, 5, 6}, "clipped": {9, 10, 11}, "high_amplitude": {14, 15},
            "bad_annotation": {17, 18}}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("ckpts"))


def planted_recording(path):
    data = eeg_like(len(WORKLOAD_CHANNELS), SECONDS, SFREQ, seed=11)
    t = np.arange(data.shape[1]) / SFREQ

    def span(lo, hi):
        return (t >= lo) & (t < hi)
    ch, lo, hi = FLAT
    data[ch, span(lo, hi)] = 3.0
    ch, lo, hi = CLIPPED
    data[ch, span(lo, hi)] = np.clip(data[ch, span(lo, hi)], -10, 10)
    ch, lo, hi = HIGH
    data[ch, span(lo, hi)] += 2000 * np.sin(2 * np.pi * 5 * t[span(lo, hi)])
    raw = mne.io.RawArray(data * 1e-6, mne.create_info(WORKLOAD_CHANNELS, SFREQ, "eeg"),
                          verbose="ERROR")
    raw.set_annotations(mne.Annotations([BAD[0], 5.0], [BAD[1], 0.0],
                                        ["BAD_movement", "eyes closed"]))
    raw.save(path, verbose="ERROR")
    return path


def test_planted_segments_are_flagged_exactly(ckpts, tmp_path, capsys):
    folder = tmp_path / "recs"
    folder.mkdir()
    planted_recording(folder / "planted_raw.fif")
    write_edf(folder / "clean.edf", WORKLOAD_EDF_NAMES, seconds=12, sfreq=256.0, seed=2)
    (folder / "unreadable.bdf").write_bytes(b"\xffBIOSEMI garbage")
    out = tmp_path / "out"
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(folder), "--task", "Workload",
                  "--plot", "overview", "--out_dir", str(out)])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    windows = list(csv.DictReader((out / "windows.csv").open()))
    planted = [w for w in windows if w["file"] == "planted_raw.fif"]
    assert [int(w["window"]) for w in planted] == list(range(21))
    for flag, expected in EXPECTED.items():
        got = {int(w["window"]) for w in planted if flag in w["qc_flags"].split(";")}
        assert got == expected, (flag, got)
    flagged = set().union(*EXPECTED.values())
    assert all(w["qc_flags"] == "" for w in planted if int(w["window"]) not in flagged)
    assert all(w["qc_flags"] == "" for w in windows if w["file"] == "clean.edf")
    assert all(w["label_name"] == "arithmetic" for w in planted)     # flagged, still answered
    rows = {r["file"]: r for r in csv.DictReader((out / "recordings.csv").open())}
    assert set(rows) == {"planted_raw.fif", "clean.edf", "unreadable.bdf"}
    assert rows["unreadable.bdf"]["status"] == "error" and rows["unreadable.bdf"]["error"]
    p = rows["planted_raw.fif"]
    assert (p["qc_flagged"], p["qc_flat"], p["qc_clipped"], p["qc_high_amplitude"],
            p["qc_bad_annotation"], p["qc_skipped"]) == ("10", "3", "3", "2", "2", "0")
    assert rows["clean.edf"]["qc_flagged"] == "0"
    assert "10 QC-flagged (flat 3, clipped 3, high_amplitude 2, bad_annotation 2)" in stdout
    assert (out / "planted_raw" / "overview.png").is_file()


def test_qc_skip_leaves_flagged_windows_unanswered(ckpts, tmp_path, capsys):
    path = planted_recording(tmp_path / "planted_raw.fif")
    out = tmp_path / "out"
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(path), "--task", "Workload",
                  "--qc", "skip", "--plot", "none", "--out_dir", str(out)])
    assert rc == 0, capsys.readouterr().err
    windows = list(csv.DictReader((out / "windows.csv").open()))
    assert len(windows) == 21
    for w in windows:
        assert (w["generated_text"] == "" and w["prob_rest"] == "") == bool(w["qc_flags"])
    row, = csv.DictReader((out / "recordings.csv").open())
    assert (row["answered"], row["qc_skipped"]) == ("11", "10")


def test_muscle_and_line_noise_are_named():
    rng = np.random.default_rng(0)
    t = np.arange(800) / 200
    clean = 20 * np.sin(2 * np.pi * 10 * t) + 3 * rng.standard_normal((4, 800))
    assert qc.window_flags(clean, 200, clean, 50.0) == []
    emg = 30 * rng.standard_normal((4, 800))            # white: most power above 30 Hz
    from scipy.signal import butter, sosfiltfilt
    emg = sosfiltfilt(butter(4, 35, "highpass", fs=200, output="sos"), emg)
    assert qc.window_flags(emg, 200, emg, 50.0) == ["muscle"]
    t500 = np.arange(2000) / 500
    mains = clean[:, :1] * 0 + 100 * np.sin(2 * np.pi * 50 * t500) + rng.standard_normal(2000)
    assert "line_noise" in qc.window_flags(mains, 500, clean, 50.0)
    assert "line_noise" not in qc.window_flags(mains, 500, clean, 60.0)
