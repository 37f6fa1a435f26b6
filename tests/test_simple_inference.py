"""simple_inference.py end to end on tiny planted checkpoints (tests/inference_fixtures.py).

The runs call main(argv) in this process (imports are slow on 2 cores); one test runs the
script as a command to show that user mistakes end without a traceback.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import edfio
import matplotlib.image
import numpy as np
import pytest
import torch
from inference_fixtures import (
    WORKLOAD_CHANNELS,
    WORKLOAD_EDF_NAMES,
    eeg_window,
    write_checkpoints,
    write_samples,
)
from raw_fixtures import write_edf

import simple_inference as si
from downstream_dataset import TASKS
from inference.timeline import draw_eeg

REPO = Path(__file__).resolve().parents[1]
SHARED_EEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "eeg"


def ANNOTATION_FILES(stem: str) -> list[str]:   # noqa: N802 - reads as the constant it is
    return [f"{stem}_answers.edf", f"{stem}_desc-neurolm_events.tsv",
            f"{stem}_answers-annot.fif"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture()
def samples(tmp_path):
    return write_samples(tmp_path / "test", [0, 1, 1])


def run_main(capsys, *argv) -> tuple[int, str, str]:
    rc = si.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def the_run_dir(output_dir: Path) -> Path:
    """The one folder of a run (named after its sample file or recording)."""
    runs = [p for p in output_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture()
def traces(monkeypatch):
    """The number of channel traces of every PNG the script writes."""
    counts = []
    real = si.plot_eeg

    def counting(*args, **kwargs):
        counts.append(real(*args, **kwargs))
        return counts[-1]
    monkeypatch.setattr(si, "plot_eeg", counting)
    return counts


def assert_png(path: Path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0          # something is drawn


# ---------------------------------------------------------------------------------------------
# a processed sample

def test_sample_run_writes_every_field_png_and_console(ckpts, samples, tmp_path, capsys, traces):
    out_dir = tmp_path / "out"
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--tokenizer_path", ckpts["vq"],
                            "--data_path", samples, "--task", "workload", "--sample_idx", 2,
                            "--out_dir", out_dir, "--device", "auto")
    assert rc == 0, err
    run_dir = the_run_dir(out_dir)
    assert run_dir.name == "rec_0002"          # named after the sample file, no timestamp
    assert sorted(p.name for p in run_dir.iterdir()) == ["sample_0002.json", "sample_0002.png"]
    record = json.loads((run_dir / "sample_0002.json").read_text())

    assert list(record) == list(si.RECORD_FIELDS)
    assert dt.datetime.fromisoformat(record["timestamp"]).tzinfo is not None
    assert record["sample_idx"] == 2
    assert record["task"] == "Workload"
    assert record["prompt"] == TASKS["Workload"].prompt
    # the planted LM answers " Yes" then " " then the end token: label 1 by the task's parser
    assert record["generated_text"] == " Yes "
    assert record["predicted_label"] == 1
    assert list(record["option_probs"]) == ["rest", "arithmetic"]
    assert sum(record["option_probs"].values()) == pytest.approx(1.0)
    assert record["option_probs"]["arithmetic"] > 0.99
    assert record["true_label"] == 1
    assert 0 < record["inference_seconds"] < 600
    assert record["model_path"] == str(ckpts["lm"].resolve())
    assert record["tokenizer_path"] == str(ckpts["vq"].resolve())
    assert record["device"] == "cpu"                 # auto on a machine without CUDA
    assert record["eeg_shape"] == [len(WORKLOAD_CHANNELS), 4 * 200]
    assert 10 < record["peak_memory_mb"] < 1e6

    assert_png(run_dir / "sample_0002.png")
    assert traces == [len(WORKLOAD_CHANNELS)]
    for line in ("prompt   " + TASKS["Workload"].prompt, "answer   ' Yes '",
                 "label    1 (arithmetic)   true label 1 (arithmetic)", "time     ", "memory "):
        assert line in out
    assert str(run_dir / "sample_0002") in out


def test_runs_repeat_their_answer_also_from_public_and_bare_layouts(ckpts, samples, tmp_path,
                                                                     capsys):
    """Greedy decoding: no seed; the second run also checks --output_dir, --out_dir's old name."""
    records = []
    for i, (lm, vq) in enumerate([("lm", "vq"), ("lm", "vq"), ("lm_public", "vq"),
                                  ("lm_bare", "vq")]):
        out_dir = tmp_path / f"out{i}"
        rc, _, err = run_main(capsys, "--model_path", ckpts[lm], "--tokenizer_path", ckpts[vq],
                              "--data_path", samples, "--task", "Workload", "--sample_idx", 0,
                              "--output_dir" if i == 1 else "--out_dir", out_dir)
        assert rc == 0, err
        records.append(json.loads((the_run_dir(out_dir) / "sample_0000.json").read_text()))
    for record in records[1:]:
        assert record["generated_text"] == records[0]["generated_text"]
        assert record["predicted_label"] == records[0]["predicted_label"]
        assert record["option_probs"] == pytest.approx(records[0]["option_probs"], abs=1e-6)


def test_lm_checkpoint_alone_carries_its_encoder(ckpts, samples, tmp_path, capsys):
    rc, _, err = run_main(capsys, "--model_path", ckpts["lm"], "--data_path", samples,
                          "--task", "Workload", "--out_dir", tmp_path / "out")
    assert rc == 0, err
    record = json.loads((the_run_dir(tmp_path / "out") / "sample_0000.json").read_text())
    assert record["tokenizer_path"] is None and record["true_label"] == 0


def test_legacy_public_tuev_sample(ckpts, tmp_path, capsys):
    folder = tmp_path / "legacy"
    folder.mkdir()
    legacy = {"signal": eeg_window(23, 5, seed=1).astype(np.float64), "label": np.array([3.0]),
              "offending_channel": np.array([4])}     # no ch_names: the 23 TUH channels
    (folder / "legacy_0.pkl").write_bytes(pickle.dumps(legacy))
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--data_path", folder,
                            "--task", "TUEV", "--out_dir", tmp_path / "out")
    assert rc == 0, err
    record = json.loads((the_run_dir(tmp_path / "out") / "sample_0000.json").read_text())
    assert record["true_label"] == 2                  # public labels are 1-based
    assert record["eeg_shape"] == [23, 1000]
    assert list(record["option_probs"]) == list(TASKS["TUEV"].label_names)
    assert sum(record["option_probs"].values()) == pytest.approx(1.0)
    assert record["predicted_label"] in (None, *range(6))   # an untrained answer may be invalid
    assert "true label 2 (pled)" in out


def test_eeg_figure_has_names_seconds_and_microvolt_scale():
    names = ["FP1", "CZ", "O2"]
    X = eeg_window(3, 2.5, seed=0)
    fig = draw_eeg(X, names, 200, "title")
    ax = fig.axes[0]
    assert len(ax.lines) == len(names) + 1            # traces + the scale bar
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_xlabel() == "time (s)" and ax.get_xlim() == pytest.approx((0, 2.5))
    assert any(t.get_text().endswith("\u00b5V") for t in ax.texts)
    assert np.ptp(ax.lines[0].get_xdata()) == pytest.approx(2.5 - 1 / 200)


# ---------------------------------------------------------------------------------------------
# raw recordings

def test_edf_every_window_table_and_records(ckpts, tmp_path, capsys, traces):
    edf = write_edf(tmp_path / "rec.edf", WORKLOAD_EDF_NAMES, seconds=6, sfreq=256.0, seed=3)
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--tokenizer_path", ckpts["vq"],
                            "--edf", edf, "--task", "Workload", "--out_dir", tmp_path / "out")
    assert rc == 0, err
    run_dir = the_run_dir(tmp_path / "out")
    assert run_dir.name == "rec"                   # named after the recording, no timestamp
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["rec", "recordings.csv",
                                                                     "windows.csv"]
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["answers.json", "overview.png", *ANNOTATION_FILES("rec")])
    answers = json.loads((run_dir / "answers.json").read_text())
    assert answers["channels"] == WORKLOAD_CHANNELS and answers["n_windows"] == 2
    assert {c["channel"] for c in answers["left_out"]} == {"EEG A2-A1", "ECG ECG"}
    # 6 s in windows of 4 s every 2 s (prepare_workload.py): starts 0 and 2
    for window, record in enumerate(answers["windows"]):
        assert record["file"] == "rec.edf" and record["window"] == window
        assert record["seconds_seen"] == 4 and record["label"] == 1
        assert record["label_name"] == "arithmetic" and record["start_s"] == 2 * window
        assert record["generated_text"] == " Yes " and record["qc_flags"] == ""
    rows = list(csv.DictReader((tmp_path / "out" / "windows.csv").open()))
    assert [(r["file"], r["window"], r["start_s"], r["label_name"]) for r in rows] == [
        ("rec.edf", "0", "0", "arithmetic"), ("rec.edf", "1", "2", "arithmetic")]
    assert float(rows[0]["prob_rest"]) + float(rows[0]["prob_arithmetic"]) == \
        pytest.approx(1, abs=1e-5)
    summary, = csv.DictReader((tmp_path / "out" / "recordings.csv").open())
    assert summary["file"] == "rec.edf" and summary["status"] == "ok"
    assert (summary["n_windows"], summary["answered"], summary["answer"]) == ("2", "2",
                                                                              "arithmetic")
    assert_png(run_dir / "overview.png")
    assert traces == []                       # no per-window figures by default
    assert "left out: 'EEG A2-A1' (a derivation between two reference electrodes)" in out
    table = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [row[:2] for row in table] == [["0", "0"], ["1", "2"]]
    assert all(row[-2:] == ["arithmetic", "1.000"] for row in table)


@pytest.mark.parametrize("plot, pngs", [("none", []), ("first", ["window_0000.png"]),
                                        ("all", [f"window_{i:04d}.png" for i in range(5)])])
def test_edf_plot_modes(plot, pngs, ckpts, tmp_path, capsys):
    edf = write_edf(tmp_path / "rec.edf", WORKLOAD_EDF_NAMES, seconds=12, sfreq=200.0, seed=4)
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--edf", edf, "--task",
                            "Workload", "--plot", plot, "--out_dir", tmp_path / "out")
    assert rc == 0, err
    names = sorted(p.name for p in the_run_dir(tmp_path / "out").iterdir())
    overview = [] if plot == "none" else ["overview.png"]
    assert names == sorted(["answers.json", *ANNOTATION_FILES("rec")] + overview + pngs)


def test_edf_batched_answers_equal_one_window_answers(ckpts, tmp_path, capsys):
    """--batch_size 4 over 9 windows (batches of 4, 4, 1) gives the one-window path's answers."""
    edf = write_edf(tmp_path / "rec.edf", WORKLOAD_EDF_NAMES, seconds=20, sfreq=500.0, seed=5)
    windows = {}
    for batch_size in (1, 4):
        out_dir = tmp_path / f"b{batch_size}"
        rc, _, err = run_main(capsys, "--model_path", ckpts["lm"], "--edf", edf, "--task",
                              "Workload", "--batch_size", batch_size, "--plot", "none",
                              "--out_dir", out_dir)
        assert rc == 0, err
        windows[batch_size] = json.loads(
            (the_run_dir(out_dir) / "answers.json").read_text())["windows"]
    assert len(windows[1]) == 9
    for one, batched in zip(windows[1], windows[4]):
        assert batched["generated_text"] == one["generated_text"]
        assert batched["label"] == one["label"]
        for name in TASKS["Workload"].label_names:
            assert batched[f"prob_{name}"] == pytest.approx(one[f"prob_{name}"], abs=1e-5)


def test_edf_odd_file_name_and_short_recording(ckpts, tmp_path, capsys):
    odd = tmp_path / os.fsdecode(b"rec\tname\nwith \xff byte.edf")
    write_edf(odd, WORKLOAD_EDF_NAMES, seconds=5, sfreq=200.0)
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--edf", odd, "--task",
                            "Workload", "--out_dir", tmp_path / "out")
    assert rc == 0, err
    run_dir = the_run_dir(tmp_path / "out")
    assert_png(run_dir / "overview.png")
    assert json.loads((run_dir / "answers.json").read_text())["file"] == \
        "rec\\tname\\nwith \\xff byte.edf"
    short = tmp_path / "short.edf"      # half a second: records of 0.5 s
    rng = np.random.default_rng(0)
    edfio.Edf([edfio.EdfSignal(20 * rng.standard_normal(100), 200.0, label=name,
                               physical_range=(-1000, 1000)) for name in WORKLOAD_EDF_NAMES],
              data_record_duration=0.5).write(short)
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--edf", short, "--task",
                            "Workload", "--out_dir", tmp_path / "out2")
    assert rc == si.USER_ERROR_EXIT and err.count("\n") == 1
    assert "short.edf" in err and "shorter than one second" in err
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_short_sample_is_a_clear_error(ckpts, tmp_path, capsys):
    folder = tmp_path / "short"
    folder.mkdir()
    sample = {"X": eeg_window(19, 0.5, seed=0), "ch_names": WORKLOAD_CHANNELS, "y": 0}
    (folder / "s.pkl").write_bytes(pickle.dumps(sample))
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--data_path", folder,
                            "--task", "Workload", "--out_dir", tmp_path / "out")
    assert rc == si.USER_ERROR_EXIT and "s.pkl" in err and "shorter than one second" in err


@pytest.mark.skipif(not (SHARED_EEG / "eegmat" / "Subject00_2.edf").exists(),
                    reason="../shared/data/eeg/eegmat (real EEGMAT recordings) is absent")
def test_edf_real_eegmat_window(ckpts, tmp_path, capsys):
    edf = SHARED_EEG / "eegmat" / "Subject00_2.edf"
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--edf", edf,
                            "--task", "Workload", "--window", 5, "--out_dir", tmp_path / "out")
    assert rc == 0, err
    run_dir = the_run_dir(tmp_path / "out")
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(
        ["answers.json", "window_0005.png", *ANNOTATION_FILES("Subject00_2")])
    answers = json.loads((run_dir / "answers.json").read_text())
    record, = answers["windows"]
    assert record["window"] == 5 and record["seconds_seen"] == 4
    assert answers["channels"] == WORKLOAD_CHANNELS      # 'EEG Fp1' ... at 500 Hz
    assert "1 of 30 windows of 4 s every 2 s" in out and "channels 19 used" in out


@pytest.mark.skipif(not (SHARED_EEG / "neuroscan_cnt").is_dir(),
                    reason="../shared/data/eeg/neuroscan_cnt (real Neuroscan CNT files) is absent")
def test_edf_real_neuroscan_cnt_reports_channels_it_cannot_place(ckpts, tmp_path, capsys):
    cnt = SHARED_EEG / "neuroscan_cnt" / "test_CNT_events_mne_JWoess_clipped.cnt"
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--edf", cnt, "--task",
                            "Workload", "--channels", "all", "--plot", "none",
                            "--out_dir", tmp_path / "out")
    assert rc == 0, err
    answers = json.loads((the_run_dir(tmp_path / "out") / "answers.json").read_text())
    assert answers["channels"] == ["F8", "FCZ"] and len(answers["windows"]) == 44  # 90 s, 4/2 s
    # 128 numbered electrodes: none can be placed, which is one clear line
    cnt = SHARED_EEG / "neuroscan_cnt" / "scan41_short.cnt"
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--edf", cnt, "--task",
                            "Workload", "--channels", "all", "--out_dir", tmp_path / "out2")
    assert rc == si.USER_ERROR_EXIT and err.count("\n") == 1
    assert "scan41_short.cnt: missing channels: no channel of the vocabulary" in err
    assert "among 1, 2, 3" in err and "(128 in all)" in err


# ---------------------------------------------------------------------------------------------
# user mistakes: exit status 2, one line naming the problem, no traceback

def _no_model_run(tmp_path, ckpts, samples, **override):
    args = {"--model_path": ckpts["lm"], "--tokenizer_path": ckpts["vq"],
            "--data_path": samples, "--task": "Workload", "--sample_idx": 0,
            "--out_dir": tmp_path / "out"}
    args.update(override)
    argv = []
    for key, value in args.items():
        if value is not None:
            argv += [key, value]
    return argv


def _garbage_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_text("not a checkpoint")
    return path


def _edf_missing_channels(tmp_path):
    return write_edf(tmp_path / "few.edf", ["EEG Fp1", "EEG Cz", "EEG O1"], seconds=8)


ERRORS = {
    "missing checkpoint": (lambda t, c, s: {"--model_path": t / "nope.pt"},
                           ["nope.pt", "checkpoint not found"]),
    "unreadable checkpoint": (lambda t, c, s: {"--model_path": _garbage_file(t)},
                              ["garbage.pt", "not a readable"]),
    "VQ checkpoint unreadable": (lambda t, c, s: {"--tokenizer_path": _garbage_file(t)},
                                 ["garbage.pt", "not a readable"]),
    "VQ encoder does not fit": (lambda t, c, s: {"--tokenizer_path": c["vq_wide"]},
                                ["vq_wide.pt", "does not fit the LM checkpoint"]),
    "VQ encoder does not fit a bare LM": (
        lambda t, c, s: {"--model_path": c["lm_bare"], "--tokenizer_path": c["vq_wide"]},
        ["vq_wide.pt", "does not fit the LM checkpoint", "lm_bare.pt"]),
    "bare LM without VQ": (lambda t, c, s: {"--model_path": c["lm_bare"],
                                            "--tokenizer_path": None},
                           ["lm_bare.pt", "--tokenizer_path"]),
    "LM checkpoint given a VQ file": (lambda t, c, s: {"--model_path": c["vq"]},
                                      ["vq.pt", "model_args"]),
    "sample index too large": (lambda t, c, s: {"--sample_idx": 3},
                               ["--sample_idx 3 is out of range", "3 sample files", "0..2"]),
    "negative sample index": (lambda t, c, s: {"--sample_idx": -1}, ["out of range", "0..2"]),
    "unknown task": (lambda t, c, s: {"--task": "TUXX"},
                     ["unknown task 'TUXX'", "TUAB, TUEV, TUSL, HMC, SEED, Workload"]),
    "empty data folder": (lambda t, c, s: {"--data_path": (t / "empty").mkdir() or t / "empty"},
                          ["empty", "no sample files"]),
    "data folder missing": (lambda t, c, s: {"--data_path": t / "absent"},
                            ["absent", "not a folder"]),
    "missing EDF channels": (lambda t, c, s: {"--data_path": None,
                                              "--edf": _edf_missing_channels(t)},
                             ["few.edf", "missing channels: FP2, F3", "PZ",
                              "the file has FP1, CZ, O1"]),
    "EDF window out of range": (lambda t, c, s: {"--data_path": None, "--window": 3, "--edf":
                                                 write_edf(t / "r.edf", WORKLOAD_EDF_NAMES, 8)},
                                ["--window 3 is out of range", "3 windows", "0..2"]),
    "EDF missing": (lambda t, c, s: {"--data_path": None, "--edf": t / "none.edf"},
                    ["none.edf", "no such file"]),
    "not a sample file": (lambda t, c, s: {"--data_path": _bad_pickle_folder(t)},
                          ["evil.pkl", "refused"]),
    "channel outside the vocabulary": (
        lambda t, c, s: {"--data_path": write_samples(t / "odd", [0], channels=["FP1", "XYZ"])},
        ["rec_0000.pkl", "not in the model's channel vocabulary: XYZ"]),
    "no new tokens": (lambda t, c, s: {"--max_new_tokens": 0}, ["--max_new_tokens", "at least 1"]),
    "device name unknown": (lambda t, c, s: {"--device": "gpu0"},
                            ["--device 'gpu0'", "not a device name"]),
}
if not torch.cuda.is_available():
    ERRORS["CUDA asked on a machine without"] = (lambda t, c, s: {"--device": "cuda"},
                                                 ["--device cuda", "CUDA is not available"])


def _bad_pickle_folder(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    # a pickle that would call os.system: the restricted unpickler refuses it
    (folder / "evil.pkl").write_bytes(b"cos\nsystem\n(S'echo hacked'\ntR.")
    return folder


@pytest.mark.parametrize("name", list(ERRORS))
def test_user_mistakes_are_one_clear_line(name, ckpts, samples, tmp_path, capsys):
    make_override, expected = ERRORS[name]
    argv = _no_model_run(tmp_path, ckpts, samples, **make_override(tmp_path, ckpts, samples))
    rc, out, err = run_main(capsys, *argv)
    assert rc == si.USER_ERROR_EXIT
    assert err.startswith("error: ") and "Traceback" not in err
    for part in expected:
        assert part in err, (part, err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_command_line_error_has_no_traceback(ckpts, samples, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "simple_inference.py"), "--model_path", str(ckpts["lm"]),
         "--tokenizer_path", str(ckpts["vq_wide"]), "--data_path", str(samples),
         "--task", "Workload", "--out_dir", str(tmp_path / "out")],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == si.USER_ERROR_EXIT
    assert "does not fit the LM checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_edf_any_mne_format_all_channels_within_the_token_budget(ckpts, tmp_path, capsys):
    """A FIF recording at 160 Hz with 70 BCI2000-style names: --channels all keeps all 70, so a
    window holds 276 // 70 = 3 seconds instead of the task's 4."""
    import mne

    from dataset import CHANNEL_VOCAB, normalise_channel
    names = [f"{c.capitalize()}." for c in CHANNEL_VOCAB[:70]]
    info = mne.create_info(names, 160.0, "eeg")
    rng = np.random.default_rng(0)
    mne.io.RawArray(20e-6 * rng.standard_normal((70, 160 * 9)), info,
                    verbose="ERROR").save(tmp_path / "rec_raw.fif", verbose="ERROR")
    rc, out, err = run_main(capsys, "--model_path", ckpts["lm"], "--edf", tmp_path / "rec_raw.fif",
                            "--task", "Workload", "--channels", "all", "--plot", "none",
                            "--out_dir", tmp_path / "out")
    assert rc == 0, err
    answers = json.loads((the_run_dir(tmp_path / "out") / "answers.json").read_text())
    expected = [normalise_channel(c) for c in CHANNEL_VOCAB[:70]]     # T7 -> T3 ...
    assert answers["channels"] == expected and answers["window_seconds"] == 3
    assert [w["seconds_seen"] for w in answers["windows"]] == [3] * 4   # 9 s: 0, 2, 4, 6
    assert "channels 70 used: FP1, FPZ" in out

