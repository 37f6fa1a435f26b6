"""Answers out of the tool: annotation files the usual viewers open, the hypnogram summary of a
sleep task, and agreement with labels a recording comes with."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import mne
import numpy as np
import pandas as pd
import pytest
import torch
from inference_fixtures import (
    WORKLOAD_CHANNELS,
    plant_answer,
    tiny_neurolm,
    tiny_vq,
    write_checkpoints,
)
from raw_fixtures import eeg_like

import simple_inference as si
from inference import sleep
from model import neurolm_checkpoint
from model.gpt2_bpe import encode
from tasks import BUILTIN_TASKS as TASKS

SLEEP_EDF = Path(__file__).resolve().parents[2] / "shared" / "data" / "eeg" / "sleep-edfx"


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    return write_checkpoints(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture(scope="module")
def wake_model(tmp_path_factory):
    """A planted LM that answers every HMC prompt '(A)': Wake."""
    task = TASKS["HMC"]
    prompt = encode(task.prompt)
    chain = encode(task.full_text(0))[len(prompt) - 1:]
    model = tiny_neurolm(tiny_vq())
    with torch.no_grad():   # forget the planted Workload answer (its token directions repeat)
        model.GPT2.transformer.wte.weight.zero_()
        model.GPT2.lm_head.weight.zero_()
    plant_answer(model, chain)
    path = tmp_path_factory.mktemp("wake") / "wake.pt"
    torch.save(neurolm_checkpoint(model), path)
    return path


def labelled_recording(path: Path) -> Path:
    """12 s of Workload channels with in-file labels T1 (0-6 s) and T2 (6-12 s) and a BAD_
    stretch."""
    data = eeg_like(len(WORKLOAD_CHANNELS), 12, 200.0, seed=5) * 1e-6
    raw = mne.io.RawArray(data, mne.create_info(WORKLOAD_CHANNELS, 200.0, "eeg"),
                          verbose="ERROR")
    raw.set_annotations(mne.Annotations([0, 6, 9], [6, 6, 0.5], ["T1", "T2", "BAD_pop"]))
    raw.save(path, verbose="ERROR")
    return path


def test_each_annotation_file_reproduces_the_windows(ckpts, tmp_path, capsys):
    rec = labelled_recording(tmp_path / "sub-01_task-rest_eeg.fif")
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(rec), "--task", "Workload",
                  "--plot", "none", "--out_dir", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    folder = tmp_path / "out" / "sub-01_task-rest_eeg"
    windows = pd.read_csv(tmp_path / "out" / "windows.csv", keep_default_na=False)
    assert len(windows) == 5 and set(windows["label_name"]) == {"arithmetic"}
    flagged = windows[windows["qc_flags"] != ""]
    assert list(flagged["window"]) == [3, 4]         # [6, 10) and [8, 12) meet BAD_pop at 9 s
    for name in ("sub-01_task-rest_answers.edf", "sub-01_task-rest_answers-annot.fif"):
        ann = mne.read_annotations(folder / name)
        answers = [i for i, d in enumerate(ann.description) if not d.startswith("BAD_")]
        np.testing.assert_allclose(ann.onset[answers], windows["start_s"], atol=1e-3)
        np.testing.assert_allclose(ann.duration[answers], windows["duration_s"], atol=1e-3)
        assert list(ann.description[answers]) == list(windows["label_name"])
        bad = [i for i, d in enumerate(ann.description) if d.startswith("BAD_")]
        assert list(ann.onset[bad]) == [6.0, 8.0]
        assert set(ann.description[bad]) == {"BAD_qc_bad_annotation"}
    # BIDS derivatives events (MNE reads no .tsv; mne-bids and pandas do)
    events = pd.read_csv(folder / "sub-01_task-rest_desc-neurolm_events.tsv", sep="\t")
    assert list(events.columns[:3]) == ["onset", "duration", "trial_type"]
    assert list(events["onset"]) == list(windows["start_s"])
    assert list(events["trial_type"]) == list(windows["label_name"])


def test_in_file_annotations_with_a_label_map_give_the_agreement(ckpts, tmp_path, capsys):
    rec = labelled_recording(tmp_path / "labelled_raw.fif")
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(rec), "--task", "Workload",
                  "--label_map", "T1=rest,T2=arithmetic", "--plot", "none",
                  "--out_dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    windows = list(csv.DictReader((tmp_path / "out" / "windows.csv").open()))
    # window centres 2, 4, 6, 8, 10 s: T1, T1, T2, T2, T2
    assert [w["known_label"] for w in windows] == ["rest"] * 2 + ["arithmetic"] * 3
    row, = csv.DictReader((tmp_path / "out" / "recordings.csv").open())
    # always "arithmetic": recall 0 and 1, chance-level kappa
    assert (row["agreement_balanced_accuracy"], row["agreement_kappa"],
            row["agreement_n"]) == ("0.5", "0", "5")
    assert "confusion (rows known, columns answered; rest, arithmetic) [[0, 2], [0, 3]]" in out


def test_a_csv_of_labels_and_bad_label_maps(ckpts, tmp_path, capsys):
    rec = labelled_recording(tmp_path / "r_raw.fif")
    labels = tmp_path / "labels.csv"
    labels.write_text("onset,duration,label\n0,12,arithmetic\n")
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(rec), "--task", "Workload",
                  "--labels", str(labels), "--plot", "none", "--out_dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "agree    5 windows: balanced accuracy 1.000, Cohen's kappa n/a" in out
    assert "kappa undefined" in out
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(rec), "--task", "Workload",
                  "--label_map", "T1=sleepy", "--out_dir", str(tmp_path / "out2")])
    err = capsys.readouterr().err
    assert rc == si.USER_ERROR_EXIT and "'sleepy' is not a Workload label" in err
    labels.write_text("onset,duration,label\nsoon,12,rest\n")
    rc = si.main(["--model_path", str(ckpts["lm"]), "--edf", str(rec), "--task", "Workload",
                  "--labels", str(labels), "--out_dir", str(tmp_path / "out3")])
    err = capsys.readouterr().err
    assert rc == si.USER_ERROR_EXIT and "labels.csv" in err and "Traceback" not in err


def test_sleep_statistics_of_a_hypnogram():
    stages = ["W", "W", "N1", "N2", "N2", "W", "N2", "R", "W", "W"]
    table = pd.DataFrame({"start_s": np.arange(10) * 30.0, "label_name": stages})
    stats = sleep.summary(TASKS["HMC"], table, 30.0)
    assert stats["time_in_bed_min"] == 5 and stats["total_sleep_time_min"] == 2.5
    assert stats["sleep_efficiency_pct"] == 50 and stats["sleep_onset_latency_min"] == 1
    assert stats["waso_min"] == 0.5          # the wake epoch between N2s; not the final wake
    assert stats["stages"]["N2"] == {"minutes": 1.5, "percent_of_tst": 60.0,
                                     "percent_of_tib": 30.0}
    assert stats["stages"]["W"]["percent_of_tst"] is None
    awake = sleep.summary(TASKS["HMC"], table.assign(label_name="W"), 30.0)
    assert awake["sleep_onset_latency_min"] is None and "undefined" in awake["note"]
    assert sleep.is_sleep_task(TASKS["HMC"]) and not sleep.is_sleep_task(TASKS["TUEV"])


@pytest.mark.skipif(not (SLEEP_EDF / "short_psg.edf").is_file()
                    or not (SLEEP_EDF / "SC4001EC-Hypnogram.edf").is_file(),
                    reason="../shared/data/eeg/sleep-edfx (Sleep-EDF excerpt and its "
                           "hypnogram) is absent")
def test_sleep_edf_hypnogram_summary_and_agreement_with_its_companion(wake_model, tmp_path,
                                                                      capsys):
    folder = tmp_path / "sleep"
    folder.mkdir()
    # the Sleep-EDF names, under which the hypnogram is found beside its PSG
    shutil.copy(SLEEP_EDF / "short_psg.edf", folder / "SC4001E0-PSG.edf")
    shutil.copy(SLEEP_EDF / "SC4001EC-Hypnogram.edf", folder / "SC4001EC-Hypnogram.edf")
    rc = si.main(["--model_path", str(wake_model), "--edf", str(folder), "--task", "HMC",
                  "--channels", "all", "--out_dir", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    # 300 s of Fpz-Cz / Pz-Oz at 100 Hz: every OOD warning but amplitude, said aloud
    assert "warning  channel coverage: 0 of the 4" in out
    assert "warning  sampling rate: 100 Hz" in out and "warning  bipolar montage: 2" in out
    assert "sleep    TIB 5 min   TST 0 min   efficiency 0 %   onset latency n/a   WASO n/a" \
        in out
    assert "W 5 min (100 %)" in out
    # the hypnogram says Wake for the whole excerpt, as the planted model does
    assert "agree    10 windows: balanced accuracy 1.000" in out
    row, = csv.DictReader((tmp_path / "out" / "recordings.csv").open())
    assert row["file"] == "SC4001E0-PSG.edf" and row["agreement_n"] == "10"
    assert (tmp_path / "out" / "SC4001E0-PSG" / "hypnogram.png").is_file()
