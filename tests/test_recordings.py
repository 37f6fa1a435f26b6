"""inference/: many recordings in, one table out; the Python entry point; streaming equals
preprocessing the whole recording at once."""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import mne
import numpy as np
import pytest
from inference_fixtures import WORKLOAD_CHANNELS, WORKLOAD_EDF_NAMES, write_checkpoints
from raw_fixtures import eeg_like, write_edf

import inference
import simple_inference as si
from inference import recordings
from tasks import BUILTIN_TASKS as TASKS
from utils import UserError


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture(scope="module")
def loaded(ckpts):
    return inference.load_model(ckpts["lm"], device="cpu")


def workload_raw(seconds: float, sfreq: float = 250.0, seed: int = 0) -> mne.io.RawArray:
    data = eeg_like(len(WORKLOAD_CHANNELS), seconds, sfreq, seed) * 1e-6
    return mne.io.RawArray(data, mne.create_info(WORKLOAD_CHANNELS, sfreq, "eeg"),
                           verbose="ERROR")


def test_a_folder_gives_one_table_row_per_recording_and_per_window(ckpts, tmp_path, capsys):
    folder = tmp_path / "recs"
    write_edf(folder / "night" / "a.edf", WORKLOAD_EDF_NAMES, seconds=10, sfreq=256.0, seed=1)
    write_edf(folder / "b.edf", WORKLOAD_EDF_NAMES, seconds=8, sfreq=500.0, seed=2)
    (folder / "broken.edf").write_bytes(b"0       not an EDF header")
    (folder / "notes.txt").write_text("not a recording")
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(folder), "--task", "Workload",
                  "--plot", "none", "--out_dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rows = list(csv.DictReader((tmp_path / "out" / "recordings.csv").open()))
    assert [(r["file"], r["status"]) for r in rows] == [
        ("b.edf", "ok"), ("broken.edf", "error"), ("a.edf", "ok")]
    assert "broken.edf" in rows[1]["error"] and rows[1]["n_windows"] == ""
    windows = list(csv.DictReader((tmp_path / "out" / "windows.csv").open()))
    per_file = {f: [w["window"] for w in windows if w["file"] == f] for f in ("a.edf", "b.edf")}
    assert per_file == {"a.edf": [str(i) for i in range(4)], "b.edf": ["0", "1", "2"]}
    assert {r["file"]: r["n_windows"] for r in rows if r["status"] == "ok"} == {
        "a.edf": "4", "b.edf": "3"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["a", "b"]
    assert "skipped  broken.edf" in err


def test_globs_and_bids_roots_find_recordings(tmp_path):
    bids = tmp_path / "bids"
    (bids / "dataset_description.json").parent.mkdir()
    (bids / "dataset_description.json").write_text("{}")
    for sub in ("01", "02"):
        write_edf(bids / f"sub-{sub}" / "eeg" / f"sub-{sub}_task-rest_eeg.edf",
                  ["EEG Fp1"], seconds=2)
        (bids / f"sub-{sub}" / "eeg" / f"sub-{sub}_task-rest_events.tsv").write_text("onset\n")
    write_edf(bids / "derivatives" / "x" / "sub-01" / "eeg" / "sub-01_task-rest_eeg.edf",
              ["EEG Fp1"], seconds=2)
    found = recordings.find_recordings([bids])
    assert [p.name for p in found] == ["sub-01_task-rest_eeg.edf", "sub-02_task-rest_eeg.edf"]
    assert recordings.find_recordings([str(bids / "sub-*" / "eeg" / "*.edf")]) == found
    (tmp_path / "SC4001EC-Hypnogram.edf").write_bytes(b"")     # labels, not a recording
    write_edf(tmp_path / "SC4001E0-PSG.edf", ["EEG Fpz-Cz"], seconds=2)
    assert [p.name for p in recordings.find_recordings([str(tmp_path / "SC*.edf")])] == [
        "SC4001E0-PSG.edf"]
    with pytest.raises(UserError, match="matches no EEG recording"):
        recordings.find_recordings([str(tmp_path / "*.vhdr")])


def test_python_entry_point_takes_an_mne_raw(loaded):
    raw = workload_raw(12)
    seen = []
    result = inference.analyse_recording(raw, "Workload", loaded, progress=lambda d, t:
                                         seen.append((d, t)))
    table = result.windows
    assert list(table["window"]) == list(range(5)) and list(table["start_s"]) == [0, 2, 4, 6, 8]
    assert {"file", "duration_s", "generated_text", "label", "label_name", "prob_rest",
            "prob_arithmetic", "uncertain", "qc_flags"} <= set(table.columns)
    assert (table["label_name"] == "arithmetic").all() and seen[-1] == (5, 5)
    assert result.summary["n_windows"] == 5 and result.summary["answer"] == "arithmetic"
    assert result.signal["channels"] == WORKLOAD_CHANNELS and result.sleep is None
    assert result.warnings == []
    data, names, sfreq = inference.read_signal(raw, "Workload", 2, 6)
    assert data.shape == (19, 800) and names == WORKLOAD_CHANNELS and sfreq == 200
    # a checkpoint's calibration temperature softens the probabilities; --abstain 0.6 then
    # marks every window uncertain, none dropped
    hot = dataclasses.replace(loaded, calibration={"Workload": {"temperature": 1e4}})
    soft = inference.analyse_recording(raw, TASKS["Workload"], hot, abstain=0.6)
    assert soft.windows["prob_arithmetic"].between(0.5, 0.6).all()
    assert soft.windows["uncertain"].all() and soft.summary["uncertain"] == 5
    assert soft.summary["answered"] == 5 and len(soft.windows) == 5
    assert soft.summary["calibrated"] and not result.summary["calibrated"]


def test_streamed_blocks_equal_the_whole_recording_preprocessed(tmp_path):
    edf = write_edf(tmp_path / "long.edf", WORKLOAD_EDF_NAMES, seconds=300, sfreq=256.0, seed=4)
    rec = recordings.open_recording(edf, TASKS["Workload"])
    whole, _, _ = rec.read(0, rec.n_out)
    step = 7001   # blocks not aligned to anything
    parts = [rec.read(s, min(s + step, rec.n_out))[0] for s in range(0, rec.n_out, step)]
    assert np.abs(np.concatenate(parts, axis=1) - whole).max() < 1e-6
    blocks = list(rec.blocks(range(rec.n_windows)))
    assert len(blocks) > 1
    ids = [k for chunk, *_ in blocks for k in chunk]
    assert ids == list(range(rec.n_windows))
    chunk, starts, X, raws = blocks[1]
    k = chunk[3]
    start = k * rec.stride_samples
    np.testing.assert_allclose(X[3], whole[:, start:start + rec.window_samples], atol=1e-4)
    assert raws[3].shape == (19, 4 * 256)


def test_envelope_keeps_every_extreme():
    rng = np.random.default_rng(0)
    data = rng.standard_normal((3, 10_000))
    data[1, 4321] = 50.0        # a spike plain decimation (data[:, ::step]) would miss
    mins, maxs = inference.envelope(data, 100)
    assert mins.shape == maxs.shape == (3, 100)
    assert maxs[1].max() == 50.0 and np.allclose(maxs.max(axis=1)[[0, 2]],
                                                 data[[0, 2]].max(axis=1))
    assert (mins <= maxs).all()
    small = data[:, :50]
    assert np.array_equal(inference.envelope(small, 100)[0], small)


def test_answers_json_is_strict_json(ckpts, tmp_path, capsys):
    edf = write_edf(tmp_path / "r.edf", WORKLOAD_EDF_NAMES, seconds=6, sfreq=200.0)
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(edf), "--task", "Workload",
                  "--qc", "skip", "--plot", "none", "--out_dir", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    text = (tmp_path / "out" / "r" / "answers.json").read_text()
    answers = json.loads(text)
    assert "NaN" not in text and answers["summary"]["status"] == "ok"
    assert answers["class_time"] == {"rest": {"minutes": 0.0, "percent": 0.0},
                                     "arithmetic": {"minutes": 0.067, "percent": 100.0}}


def test_unknown_recording_path_is_one_line(ckpts, tmp_path, capsys):
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(tmp_path / "nothing"),
                  str(tmp_path / "none.edf"), "--task", "Workload", "--out_dir",
                  str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == si.USER_ERROR_EXIT and "Traceback" not in err
    assert err.splitlines() == ["skipped  nothing: no such file", "skipped  none.edf: no such file",
                                "error: no recording could be answered: nothing: no such file "
                                "(and 1 more)"]
    assert not (tmp_path / "out" / "recordings.csv").exists()
    assert Path(tmp_path / "out").exists() is False or not any((tmp_path / "out").iterdir())


def test_timeline_answer_strip_merges_runs_and_sensitivity_is_clinical():
    from inference import timeline
    assert timeline.runs(["W", "W", "N1", "W"], [0, 30, 60, 120], 30) == [
        ("W", 0.0, 60.0), ("N1", 60.0, 30.0), ("W", 120.0, 30.0)]   # a gap breaks a run
    rng = np.random.default_rng(0)
    data = 20 * rng.standard_normal((4, 20_000))   # +-2 sigma = 80 uV of excursion
    mins, maxs = inference.envelope(data, 500)
    assert timeline.sensitivity_uv(mins, maxs) in timeline.SENSITIVITIES_UV
    assert 30 <= timeline.sensitivity_uv(mins, maxs) <= 100
