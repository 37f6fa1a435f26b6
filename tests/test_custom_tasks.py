"""Your own data and tasks: prepare_custom.py (CSV labels, annotations, BIDS events), task files,
and the whole path synthetic recordings + CSV -> prepare_custom.py -> task file ->
train_instruction.py (with a built-in task) -> simple_inference.py --task_file --edf."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from inference_fixtures import write_checkpoints, write_samples
from raw_fixtures import eeg_like, write_edf
from train_fixtures import write_text

import evaluation
import simple_inference
import tasks as tk
import train_instruction
from dataset import load_sample
from dataset_maker import common, prepare_custom

SHARED_EEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "eeg"
BCI2000_NAMES = ["Fp1.", "Fp2.", "C3..", "C4.."]          # 4 channels x 4 s = 16 EEG tokens
TASK_TOML = """
name = "EyesTest"
question = "Are the eyes closed in this EEG segment?"
label_names = ["open", "closed"]
answers = ["No", "Yes"]
data_dir = "processed"
[preprocessing]
window_seconds = 4
channels = "all"
mains_hz = 60
"""


def prepare(capsys, *argv):
    """prepare_custom as its command runs it, in this process: (exit status, stdout, stderr)."""
    try:
        common.script_main(prepare_custom.main, [str(a) for a in argv])
        rc = 0
    except SystemExit as stop:
        rc = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return rc, out, err


def errors_of(out_dir: Path) -> dict[str, str]:
    lines = (out_dir / "errors.tsv").read_text().splitlines()[1:]
    return {Path(f).name: reason for f, reason in (line.split("\t") for line in lines)}


def written(out_dir: Path) -> dict[str, list[Path]]:
    return {s: sorted((out_dir / s).glob("*.pkl")) for s in ("train", "val", "test")}


# ---------------------------------------------------------------------------------------------
# task files

def test_task_file_builds_a_task_like_the_built_in_ones(tmp_path):
    path = tmp_path / "eyes.toml"
    path.write_text(TASK_TOML)
    task = tk.read_task_file(path)
    assert task.prompt == "Question: Are the eyes closed in this EEG segment? Answer:"
    assert task.answers == (" No", " Yes") and task.metrics == tk.BINARY_METRICS
    assert task.processed_dir == str(tmp_path / "processed") and task.window_seconds == 4
    assert task.channels is None and task.mains_hz == 60 and task.stride_seconds == 4
    assert tk.parse_answer(task, " Yes") == 1 and tk.parse_answer(task, "closed") == 1
    js = tmp_path / "opts.json"
    js.write_text(json.dumps({"name": "OptsTest", "question": "Which state is it?",
                              "label_names": ["a", "b", "c"], "options": ["rest", "task", "sleep"],
                              "preprocessing": {"window_seconds": 2, "channels": ["T7", "Cz"]}}))
    task = tk.read_task_file(js)
    assert task.is_option_task and task.answers == ("A) ", "B) ", "C) ")
    assert task.channels == ("T7", "Cz") and tk.parse_answer(task, "(B) task") == 1


BAD_TASK_FILES = {
    "missing field": ('name = "X1"\nlabel_names = ["a", "b"]\n[preprocessing]\n'
                      'window_seconds = 4\n', "missing field 'question'"),
    "duplicate option": ('name = "X2"\nquestion = "Q?"\nlabel_names = ["a", "b"]\n'
                         'options = ["same", "Same"]\n[preprocessing]\nwindow_seconds = 4\n',
                         "options lists 'Same', 'same' more than once"),
    "a label with no answer": ('name = "X3"\nquestion = "Q?"\nlabel_names = ["a", "b", "c"]\n'
                               'answers = ["No", "Yes"]\n[preprocessing]\nwindow_seconds = 4\n',
                               "every label needs exactly one answer"),
    "no window": ('name = "X4"\nquestion = "Q?"\nlabel_names = ["a", "b"]\n',
                  "missing field 'preprocessing.window_seconds'"),
    "unknown channel": ('name = "X5"\nquestion = "Q?"\nlabel_names = ["a", "b"]\n'
                        '[preprocessing]\nwindow_seconds = 4\nchannels = ["Fp1", "E17"]\n',
                        "not in the channel vocabulary: E17"),
    "built-in name": ('name = "tuab"\nquestion = "Q?"\nlabel_names = ["a", "b"]\n'
                      '[preprocessing]\nwindow_seconds = 4\n', "is a built-in task's"),
    "not TOML": ("name = \n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_TASK_FILES))
def test_malformed_task_file_is_one_line_for_every_script(case, tmp_path, capsys):
    text, expected = BAD_TASK_FILES[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(tk.TaskFileError, match=expected) as err:
        tk.read_task_file(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    rc = simple_inference.main(["--model_path", str(tmp_path / "m.pt"), "--task_file", str(path),
                                "--edf", str(tmp_path / "r.edf")])
    _, err_text = capsys.readouterr()
    assert rc == 2 and err_text.startswith("error: task file") and expected in err_text
    if case != "built-in name":     # preparing data under a built-in name is harmless
        rc, _, err_text = prepare(capsys, "--raw_dir", tmp_path, "--out_dir", tmp_path / "o",
                                  "--task_file", path, "--labels", tmp_path / "l.csv")
        assert rc == 2 and expected in err_text and "Traceback" not in err_text
    with pytest.raises(SystemExit) as stop:
        train_instruction.parse_args(["--task_file", str(path), "--tokenizer_path", "vq.pt",
                                      "--text_batch_size", "0"])
    assert stop.value.code == 2 and expected in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# label sources on real recordings

@pytest.mark.skipif(not (SHARED_EEG / "sleep-edfx" / "short_psg.edf").exists(),
                    reason="../shared/data/eeg/sleep-edfx (real Sleep-EDF excerpt) is absent")
def test_sleep_edf_labelled_from_its_hypnogram(tmp_path, capsys):
    raw = tmp_path / "raw"
    raw.mkdir()
    # Sleep-EDF's own names: the recording SC4001E0-PSG.edf beside its SC4001EC-Hypnogram.edf
    (raw / "SC4001E0-PSG.edf").symlink_to(SHARED_EEG / "sleep-edfx" / "short_psg.edf")
    (raw / "SC4001EC-Hypnogram.edf").symlink_to(SHARED_EEG / "sleep-edfx" /
                                                "SC4001EC-Hypnogram.edf")
    stages = ["Sleep stage W=W", "Sleep stage 1=N1", "Sleep stage 2=N2", "Sleep stage 3=N3",
              "Sleep stage 4=N3", "Sleep stage R=R"]
    out = tmp_path / "out"
    rc, stdout, err = prepare(capsys, "--raw_dir", raw, "--out_dir", out, "--annotations",
                              "{subject}*-Hypnogram.edf", "--subject_regex", r"^(SC\d{4})",
                              "--label_names", "W", "N1", "N2", "N3", "R", "--window", 30,
                              "--label_map", *stages, "--val_fraction", 0, "--test_fraction", 0,
                              "--workers", 1)
    assert rc == 0, err
    files = written(out)["train"]
    assert len(files) == 10               # 300 s of Wake (the hypnogram's first 30630 s)
    sample = load_sample(files[0])
    assert sample["y"] == 0 and sample["ch_names"] == ["FPZ", "PZ"]     # Fpz-Cz, Pz-Oz
    assert sample["X"].shape == (2, 30 * 200)
    assert "channels left out: EOG horizontal (not an EEG channel)" in stdout
    # a map that matches nothing: the reason in errors.tsv and one error line
    rc, _, err = prepare(capsys, "--raw_dir", raw, "--out_dir", tmp_path / "none",
                         "--annotations", "{subject}*-Hypnogram.edf", "--subject_regex",
                         r"^(SC\d{4})", "--label_names", "W", "S", "--label_map", "Wake=W",
                         "--workers", 1)
    assert rc == 2 and err.count("error: ") == 1 and "no recording produced samples" in err
    reason = errors_of(tmp_path / "none")["SC4001E0-PSG.edf"]
    assert "no annotation matches --label_map" in reason and "'Sleep stage W'" in reason


def test_in_file_annotations_and_bids_events(tmp_path, capsys):
    import mne
    from mne_bids import BIDSPath, write_raw_bids

    info = mne.create_info(["Fp1", "Cz", "O1"], 250.0, "eeg")
    raws = []
    for s in range(3):
        raw = mne.io.RawArray(eeg_like(3, 20, 250.0, seed=s) * 1e-6, info, verbose="ERROR")
        raw.set_annotations(mne.Annotations([0, 8, 16], [8, 8, 4], ["rest", "move", "junk"]))
        raws.append(raw)
        fif = tmp_path / "fif" / f"s{s}_raw.fif"
        fif.parent.mkdir(exist_ok=True)
        raw.save(fif, verbose="ERROR")
    rc, _, err = prepare(capsys, "--raw_dir", tmp_path / "fif", "--out_dir", tmp_path / "o1",
                         "--annotations", "in-file", "--label_names", "rest", "move",
                         "--label_map", "rest=0", "move=1", "--workers", 1)
    assert rc == 0, err
    ys = [load_sample(f)["y"] for files in written(tmp_path / "o1").values() for f in files]
    assert sorted(ys) == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1]   # 2 windows per 8 s span
    bids_root = tmp_path / "bids"
    for s, raw in enumerate(raws):
        raw.set_annotations(mne.Annotations([0, 8], [8, 8], ["rest", "move"]))
        raw._filenames = [tmp_path / "fif" / f"s{s}_raw.fif"]
        write_raw_bids(raw, BIDSPath(subject=f"{s:02d}", task="motor", root=bids_root),
                       format="EDF", allow_preload=True, overwrite=True, verbose="ERROR")
    rc, _, err = prepare(capsys, "--raw_dir", bids_root, "--out_dir", tmp_path / "o2", "--bids",
                         "--label_names", "rest", "move", "--label_map", "rest=rest",
                         "move=move", "--val_fraction", 0.34, "--test_fraction", 0.34,
                         "--workers", 1)
    assert rc == 0, err
    files = written(tmp_path / "o2")
    assert all(len(f) == 4 for f in files.values())         # one subject per split
    splits = json.loads((tmp_path / "o2" / "splits.json").read_text())["splits"]
    assert sorted(s for v in splits.values() for s in v["subjects"]) == ["00", "01", "02"]
    assert load_sample(files["train"][0])["ch_names"] == ["FP1", "CZ", "O1"]


# ---------------------------------------------------------------------------------------------
# the whole path

def test_end_to_end_csv_labels_to_training_to_inference(tmp_path, capsys, single_thread):
    raw = tmp_path / "raw"
    rows = ["file,label"]
    for s in range(3):
        for label, hz in (("open", 10.0), ("closed", 3.0)):
            name = f"S{s}_{label}.edf"
            t = np.arange(12 * 160) / 160
            data = 30 * np.sin(2 * np.pi * hz * t)[None] + eeg_like(4, 12, 160.0, seed=s)
            write_edf(raw / name, BCI2000_NAMES, 12, sfreq=160.0, data=data)
            rows.append(f"{name},{label}")
    write_edf(raw / "S0_odd.edf", ["E1", "E2"], 12, sfreq=160.0)      # no known channel
    write_edf(raw / "S8_unlisted.edf", BCI2000_NAMES, 12, sfreq=160.0)
    rows += ["S0_odd.edf,open", "S7_gone.edf,closed"]                 # a file that is not there
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    task_file = tmp_path / "eyes.toml"
    task_file.write_text(TASK_TOML)

    rc, out, err = prepare(capsys, "--raw_dir", raw, "--out_dir", tmp_path / "processed",
                           "--task_file", task_file, "--labels", tmp_path / "labels.csv",
                           "--val_fraction", 0.34, "--test_fraction", 0.34, "--workers", 1,
                           "--band", 0.5, 40)
    assert rc == 0, err
    files = written(tmp_path / "processed")
    assert {s: len(f) for s, f in files.items()} == {"train": 6, "val": 6, "test": 6}
    sample = load_sample(files["train"][0])
    assert sample["ch_names"] == ["FP1", "FP2", "C3", "C4"] and sample["X"].shape == (4, 800)
    errors = errors_of(tmp_path / "processed")
    assert "no channel of the vocabulary" in errors["S0_odd.edf"]
    assert "not found" in errors["S7_gone.edf"] and "no label" in errors["S8_unlisted.edf"]

    # a built-in task beside it, 4 channels x 4 s too
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        write_samples(tmp_path / "data" / "Workload" / split, [i % 2 for i in range(n)],
                      channels=["FP1", "FP2", "C3", "C4"])
    lm = write_checkpoints(tmp_path / "ckpts")["lm"]      # a tiny NeuroLM with its encoder
    write_text(tmp_path / "text", n_tokens=2000)
    run = tmp_path / "run"
    train_instruction.main([
        "--preset", "tiny", "--eeg_max_tokens", "16", "--text_max_tokens", "20",
        "--batch_size", "4", "--text_batch_size", "1", "--text_block_size", "16",
        "--num_workers", "0", "--save_every", "0", "--device", "cpu", "--max_steps", "3",
        "--model_path", str(lm),
        "--data_root", str(tmp_path / "data"), "--tasks", "Workload",
        "--task_file", str(task_file), "--text_dir", str(tmp_path / "text"),
        "--out_dir", str(run)])
    # the run carries its tasks' full definitions: results.json and every checkpoint
    eyes = tk.read_task_file(task_file)
    results = json.loads((run / "results.json").read_text())
    assert [t["name"] for t in results["tasks"]] == ["Workload", "EyesTest"]
    assert tk.tasks_from_record(results["tasks"], "results.json")["EyesTest"] == eyes
    for checkpoint in ("best.pt", "last.pt"):
        stored = torch.load(run / checkpoint, weights_only=True)["tasks"]
        assert tk.tasks_from_record(stored, checkpoint) == {"Workload": tk.BUILTIN_TASKS[
            "Workload"], "EyesTest": eyes}
    last = results["evaluations"][-1]["results"]
    for split in ("val", "test"):
        scoring = last["EyesTest"][split]["scoring"]
        assert set(scoring) >= set(tk.BINARY_METRICS) and scoring["n"] == 6
        assert "generation" in last["EyesTest"][split]
    assert "EyesTest" in (run / "report.md").read_text()
    capsys.readouterr()

    # ... so compare, export (with its model card) and inference need no task file
    task_file.unlink()
    assert evaluation.main(["compare", str(run)]) == 0
    out, _ = capsys.readouterr()
    assert "EyesTest  scoring" in out and "roc_auc" in out
    exported = tmp_path / "export"
    assert evaluation.main(["export", str(run / "best.pt"), str(exported)]) == 0
    card = (exported / "README.md").read_text()
    assert "| EyesTest | `Question: Are the eyes closed in this EEG segment? Answer:` |" in card
    assert "| EyesTest | test | scoring | window |" in card
    config = json.loads((exported / "config.json").read_text())
    assert tk.tasks_from_record(config["checkpoint"]["tasks"], "config.json")["EyesTest"] == eyes
    # without --task: the one task the checkpoint defines beyond the built-in ones
    for model_path, which in ((run / "best.pt", []), (exported, ["--task", "EyesTest"])):
        capsys.readouterr()
        rc = simple_inference.main(["--model_path", str(model_path), *which,
                                    "--edf", str(raw / "S0_closed.edf"), "--plot", "none",
                                    "--out_dir", str(tmp_path / "answers" / model_path.name)])
        out, err = capsys.readouterr()
        assert rc == 0, err
        answers_file, = (tmp_path / "answers" / model_path.name).glob("*/answers.json")
        answers = json.loads(answers_file.read_text())
        assert answers["task"] == "EyesTest" and answers["prompt"] == eyes.prompt
        assert answers["channels"] == ["FP1", "FP2", "C3", "C4"] and len(answers["windows"]) == 3
        for record in answers["windows"]:
            probs = [record["prob_open"], record["prob_closed"]]
            assert all(0 <= p <= 1 for p in probs) and math.isclose(sum(probs), 1, abs_tol=1e-5)
        assert "channels 4 used: FP1, FP2, C3, C4" in out
    rc = simple_inference.main(["--model_path", str(run / "best.pt"), "--task", "Nope",
                                "--edf", str(raw / "S0_closed.edf")])
    _, err = capsys.readouterr()     # an unknown task: one line naming those the run knows
    assert rc == 2 and err.count("\n") == 1 and "'Nope'" in err and "EyesTest" in err

    # --eval_only of the run's checkpoint: its own task, its data folder, no task file
    train_instruction.main(["--eval_only", "--model_path", str(run / "best.pt"), "--tasks",
                            "EyesTest", "--eeg_max_tokens", "16", "--text_max_tokens", "20",
                            "--device", "cpu", "--eval_modes", "scoring",
                            "--out_dir", str(tmp_path / "again")])
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert tk.tasks_from_record(again["tasks"], "results.json") == {"EyesTest": eyes}
    assert again["evaluations"][0]["results"]["EyesTest"]["test"]["scoring"]["n"] == 6
    capsys.readouterr()

    # a checkpoint whose stored task was tampered with: one line, no traceback
    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt["tasks"][1]["stride_seconds"] = math.inf
    torch.save(ckpt, tmp_path / "tampered.pt")
    rc = simple_inference.main(["--model_path", str(tmp_path / "tampered.pt"),
                                "--edf", str(raw / "S0_closed.edf")])
    _, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1 and "stride_seconds must be a number" in err

    # a results.json of before runs carried their tasks (names only) still compares
    results["tasks"] = ["Workload", "EyesTest"]
    (run / "results.json").write_text(json.dumps(results))
    assert evaluation.main(["compare", str(run)]) == 0
    assert "EyesTest  scoring" in capsys.readouterr().out


def test_prepare_scripts_and_inference_read_the_built_in_tasks_preprocessing():
    """One declaration (tasks/builtin.py): what the prepare scripts cut and what inference cuts a
    raw recording into are the task's channels, window, stride, band, mains."""
    from dataset_maker import (
        prepare_HMC,
        prepare_SEED,
        prepare_TUAB,
        prepare_TUEV,
        prepare_TUSL,
        prepare_workload,
    )
    from inference.recordings import task_signal
    scripts = {"TUAB": prepare_TUAB, "TUEV": prepare_TUEV, "TUSL": prepare_TUSL,
               "HMC": prepare_HMC, "SEED": prepare_SEED, "Workload": prepare_workload}
    assert set(scripts) == set(tk.BUILTIN_TASKS)
    for name, module in scripts.items():
        task = tk.BUILTIN_TASKS[name]
        assert module.TASK is task and module.WINDOW_SECONDS == task.window_seconds
        assert (module.SIGNAL.channels, module.SIGNAL.mains_hz, module.SIGNAL.band_hz) == (
            task.channels, task.mains_hz, task.band_hz)
        sig = task_signal(task)
        assert (sig.channels, sig.mains_hz, sig.band_hz, sig.window_s, sig.stride_s) == (
            task.channels, task.mains_hz, task.band_hz, task.window_seconds, task.stride_seconds)
    assert prepare_workload.STRIDE_SECONDS == tk.BUILTIN_TASKS["Workload"].stride_seconds == 2
    with pytest.raises(TypeError):          # read-only: no run changes the built-in table
        tk.BUILTIN_TASKS["Mine"] = tk.BUILTIN_TASKS["TUAB"]


# ---------------------------------------------------------------------------------------------
# bad inputs of a task (issue 22): each is one line naming the file, never a traceback or a
# silently skipped step

def task_json(tmp_path, name="bad.json", bom=False, **preprocessing) -> Path:
    fields = {"name": "BadTest", "question": "Is it?", "label_names": ["a", "b"],
              "preprocessing": {"window_seconds": 4, **preprocessing}}
    path = tmp_path / name
    path.write_text(("\ufeff" if bom else "") + json.dumps(fields), encoding="utf-8")
    return path


@pytest.mark.parametrize("field, value, expected", [
    ("stride_seconds", math.inf, "stride_seconds must be a number from 0.1 to 3600 s, got inf"),
    ("stride_seconds", 1e-9, "stride_seconds must be a number from 0.1 to 3600 s, got 1e-09"),
    ("window_seconds", math.inf, "window_seconds must be a number from 1 to 276 s, got inf"),
    ("window_seconds", math.nan, "window_seconds must be a number from 1 to 276 s, got nan"),
    ("window_seconds", 0.5, "window_seconds must be a number from 1 to 276 s"),
    ("mains_hz", math.inf, "mains_hz must be a number from 40 to 70 Hz, got inf"),
    ("mains_hz", 1e6, "mains_hz must be a number from 40 to 70 Hz, got 1000000.0"),
    ("mains_hz", True, "mains_hz must be a number"),
    ("band_hz", [0.5, math.inf], "band_hz must be a number from 0 to 100 Hz, got inf"),
    ("band_hz", [40, 1], "band_hz must have low < high"),
    ("band_hz", "0.5-40", "band_hz must be [low, high] in Hz"),
])
def test_task_file_numbers_are_finite_and_in_range(tmp_path, field, value, expected):
    # json.dumps writes Infinity / NaN, as a hand-written JSON task file may hold them
    path = task_json(tmp_path, **{field: value})
    with pytest.raises(tk.TaskFileError) as err:
        tk.read_task_file(path)
    assert str(err.value) == f"task file {path}: preprocessing.{expected}" or (
        str(err.value).startswith(f"task file {path}: preprocessing.{expected}"))


def test_task_file_in_toml_with_infinity_and_a_json_one_with_a_bom(tmp_path):
    toml = tmp_path / "inf.toml"
    toml.write_text(TASK_TOML.replace("mains_hz = 60", "stride_seconds = inf"))
    with pytest.raises(tk.TaskFileError, match="stride_seconds must be a number.*got inf"):
        tk.read_task_file(toml)
    # a BOM (Windows editors write one) is read as the CSV readers read it
    task = tk.read_task_file(task_json(tmp_path, bom=True, stride_seconds=2))
    assert task.name == "BadTest" and task.stride_seconds == 2


def test_duplicate_channels_and_more_than_26_options_are_refused(tmp_path):
    for channels, shown in ((["Fp1", "C3", "FP1"], "'Fp1' and 'FP1'"),
                            (["T3", "C3", "T7"], "'T3' and 'T7', the same channel (T3)")):
        path = task_json(tmp_path, channels=channels)
        with pytest.raises(tk.TaskFileError, match="list each channel once") as err:
            tk.read_task_file(path)
        assert str(err.value).startswith(f"task file {path}:") and shown in str(err.value)
    names = [f"c{i}" for i in range(27)]
    path = tmp_path / "many.json"
    path.write_text(json.dumps({"name": "ManyTest", "question": "Which?", "label_names": names,
                                "options": [f"option {n}" for n in names],
                                "preprocessing": {"window_seconds": 4}}))
    with pytest.raises(tk.TaskFileError, match="27 options, more than the 26 that lettered "
                                               r"options \(A\) to \(Z\) can name"):
        tk.read_task_file(path)
    path.write_text(path.read_text().replace('"options"', '"answers"'))   # free answers: fine
    assert tk.read_task_file(path).n_classes == 27


def test_a_window_longer_than_a_sequence_holds(tmp_path, capsys):
    """Fixed channels: refused when the task is read. Every channel a recording has ("all"):
    prepare_custom.py shrinks the window to what fits and says so for that recording."""
    channels = ["FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3",
                "T4", "T5", "T6", "FZ", "CZ", "PZ"]
    path = task_json(tmp_path, channels=channels, window_seconds=30)
    with pytest.raises(tk.TaskFileError, match="30 s x 19 channels = 570 EEG tokens, more than "
                                               "the 276 of one sequence.*at most 14 s"):
        tk.read_task_file(path)
    assert tk.fit_window(30, 10, 19) == (14, 10) and tk.fit_window(30, 30, 19) == (14, 14)
    assert tk.fit_window(4, 2, 19) == (4, 2)
    raw = tmp_path / "raw"
    for s in range(2):
        write_edf(raw / f"S{s}_rec.edf", channels, 40, sfreq=100.0, seed=s)
    (tmp_path / "labels.csv").write_text("file,label\nS0_rec.edf,a\nS1_rec.edf,b\n")
    task_file = task_json(tmp_path, name="all.json", window_seconds=30)      # channels "all"
    rc, out, err = prepare(capsys, "--raw_dir", raw, "--out_dir", tmp_path / "out",
                           "--task_file", task_file, "--labels", tmp_path / "labels.csv",
                           "--val_fraction", 0, "--test_fraction", 0, "--workers", 1)
    assert rc == 0, err
    assert "19 channels: windows of 14 s instead of 30 s (one sequence holds 276" in out
    sample = load_sample(written(tmp_path / "out")["train"][0])
    assert sample["X"].shape == (19, 14 * 200)       # nothing cut silently later
    rc, _, err = prepare(capsys, "--raw_dir", raw, "--out_dir", tmp_path / "out2",
                         "--label_names", "a", "b", "--labels", tmp_path / "labels.csv",
                         "--channels", ",".join(channels), "--window", 30)
    assert rc == 2 and "--window 30: 30 s x 19 channels" in err and "Traceback" not in err
    rc, _, err = prepare(capsys, "--raw_dir", raw, "--out_dir", tmp_path / "out3",
                         "--label_names", "a", "b", "--labels", tmp_path / "labels.csv",
                         "--channels", "Fp1,C3,FP1")
    assert rc == 2 and "--channels list 'Fp1' and 'FP1'" in err


def test_label_map_to_infinity_is_one_line(tmp_path, capsys):
    rc, _, err = prepare(capsys, "--raw_dir", tmp_path, "--out_dir", tmp_path / "o",
                         "--label_names", "a", "b", "--annotations", "in-file",
                         "--label_map", "x=inf")
    assert rc == 2 and "label 'inf' is neither a class number" in err and "Traceback" not in err


@pytest.mark.parametrize("tamper, expected", [
    (lambda t: t.update(stride_seconds=math.inf), "stride_seconds must be a number"),
    (lambda t: t.update(answers=["A) "] * 30, label_names=[str(i) for i in range(30)],
                        prompt="Q? Answer: ("), "30 options, more than the 26"),
    (lambda t: t.update(channels=["FP1", "FP1"]), "list each channel once"),
    (lambda t: t.update(colour="red"), r"unknown field\(s\) colour"),
    (lambda t: t.pop("prompt"), r"missing field\(s\) prompt"),
    (lambda t: t.update(answers=[" Yes", " Yes"]), "two answers are read as the same class"),
])
def test_tasks_stored_in_a_run_are_checked_as_a_task_file(tamper, expected):
    entry = tk.BUILTIN_TASKS["Workload"].to_dict()
    tamper(entry)
    with pytest.raises(tk.TaskError, match=expected) as err:
        tk.tasks_from_record([entry], "run/best.pt")
    assert str(err.value).startswith("run/best.pt:") and "\n" not in str(err.value)
    with pytest.raises(tk.TaskError, match="must be a list of task definitions"):
        tk.tasks_from_record({"Workload": entry}, "run/best.pt")
    with pytest.raises(tk.UnknownTaskError, match="'Mine' is named but not defined"):
        tk.tasks_from_record(["TUAB", "Mine"], "run/results.json")
    assert tk.tasks_from_record(None, "old.pt") == dict(tk.BUILTIN_TASKS)   # older checkpoints
