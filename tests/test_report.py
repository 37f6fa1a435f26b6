"""Publishable evaluations: predictions CSVs that recompute to the reported metrics, recording-
and subject-level aggregation, bootstrap intervals over subjects, best.pt selection over both
modes, and report.md naming every task."""
import contextlib
import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn import metrics as skm
from test_downstream_support import CHANNELS, PlantedModel

import dataset
import downstream_dataset as dd
import evaluation as ev
import report
import utils
from dataset_maker import common

RUNTIME = SimpleNamespace(device="cpu", autocast=contextlib.nullcontext, is_main=False)


def _write(folder, labels, recordings, subjects, seconds=1):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i, (y, rec, subj) in enumerate(zip(labels, recordings, subjects)):
        X = rng.normal(0, 10, (len(CHANNELS), 200 * seconds)).astype(np.float32)
        X[0, 0] = 100.0 * y                     # the planted model answers y
        common.write_sample(folder / f"{rec}_{i:04d}.pkl", X, CHANNELS, y, recording=rec,
                            subject=subj, window=i, onset_s=2.0 * i)


def _planted(task, **kwargs):
    tokens = dd.task_tokens(task)
    return PlantedModel(tokens.answers, len(tokens.prompt), **kwargs)


def test_sample_files_carry_their_origin_and_old_ones_load(tmp_path):
    _write(tmp_path, [1], ["aaa_s001_t000"], ["aaa"])
    sample = dataset.load_sample(next(tmp_path.glob("*.pkl")))
    assert (sample["recording"], sample["subject"], sample["window"], sample["onset_s"]) == (
        "aaa_s001_t000", "aaa", 0, 0.0)
    common.write_sample(tmp_path / "old.pkl", np.zeros((2, 200)), ["FP1", "FP2"], 0)
    old = dataset.load_sample(tmp_path / "old.pkl")
    assert old["recording"] is None and old["subject"] is None and old["window"] is None


def test_predictions_csv_has_a_row_per_sample_and_recomputes_the_metrics(tmp_path):
    labels = [1, 1, 0, 0, 1, 0]
    recordings = ["r1", "r1", "r2", "r3", "r4", "r5"]
    _write(tmp_path / "data", labels, recordings, ["s1", "s1", "s2", "s3", "s3", "s4"])
    data = dd.InstructionDataset("TUAB", tmp_path / "data", eeg_max_tokens=12)
    model = _planted("TUAB", garbage_rows={0})      # first row of each batch: invalid answer
    results = ev.evaluate_tasks(model, {"TUAB": {"test": data}}, RUNTIME, batch_size=4,
                                n_boot=200)
    report.write_predictions(results, tmp_path)
    reported = results["TUAB"]["test"]
    for mode in ev.EVAL_MODES:
        back = report.read_predictions(report.predictions_path(tmp_path, "TUAB", "test", mode))
        assert len(back["label"]) == len(labels) and back["label"] == labels
        assert back["subject"][:2] == ["s1", "s1"] and back["window"][1] == "1"
        recomputed = ev.get_metrics(back["label"], back["predicted"], back["probs"], "TUAB")
        for key in ("n", "balanced_accuracy", "accuracy", "roc_auc", "invalid_rate"):
            a, b = recomputed[key], reported[mode][key]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-6), key
    assert reported["generation"]["invalid_rate"] == pytest.approx(2 / 6)
    assert reported["scoring"]["recording"]["n"] == 5 and reported["scoring"]["n_subjects"] == 4
    assert reported["data"] == {"samples": 6, "recordings": 5, "subjects": 4}
    counts = np.array(reported["generation"]["confusion"]["counts"])
    assert counts.sum() == 6 and counts[:, -1].sum() == 2       # the invalid column
    assert "predictions" not in json.dumps(ev.publishable(results))


def test_old_samples_give_empty_origin_columns_and_no_recording_level(tmp_path):
    paths = [tmp_path / "data" / f"s{i}.pkl" for i in range(4)]
    paths[0].parent.mkdir()
    for i, path in enumerate(paths):
        X = np.zeros((len(CHANNELS), 200), dtype=np.float32)
        X[0, 0] = 100.0 * (i % 2)
        common.write_sample(path, X, CHANNELS, i % 2)
    data = dd.InstructionDataset("TUAB", tmp_path / "data", eeg_max_tokens=12)
    results = ev.evaluate_tasks(_planted("TUAB"), {"TUAB": {"val": data}}, RUNTIME, 4,
                                modes=("scoring",), n_boot=50)
    report.write_predictions(results, tmp_path)
    back = report.read_predictions(report.predictions_path(tmp_path, "TUAB", "val", "scoring"))
    assert back["recording"] == [""] * 4 and back["subject"] == [""] * 4
    scoring = results["TUAB"]["val"]["scoring"]
    assert scoring["recording"] is None and scoring["ci_unit"] == "window"
    assert any("recording" in note for note in scoring["notes"])


def test_recording_level_aggregation_by_hand():
    labels = [1, 1, 1, 0, 0]
    groups = ["a", "a", "a", "b", "b"]
    probs = [[0.9, 0.1], [0.2, 0.8], [0.2, 0.8], [0.4, 0.6], [0.9, 0.1]]
    names, y, pred, mean = ev.aggregate(labels, None, probs, groups, 2)
    assert names == ["a", "b"] and y == [1, 0] and pred == [1, 0]
    np.testing.assert_allclose(mean, [[13 / 30, 17 / 30], [0.65, 0.35]])
    # generation: majority of the valid answers; a tie goes to the lower label
    _, _, votes, _ = ev.aggregate(labels, [1, None, 0, 1, 0], None, groups, 2)
    assert votes == [0, 0]
    _, _, votes, _ = ev.aggregate([1, 1], [None, None], None, ["a", "a"], 2)
    assert votes == [ev.INVALID]
    assert ev.aggregate([0, 1], [0, 1], None, ["a", "a"], 2) is None     # mixed labels


def _noisy(n_subjects, per_subject, rng):
    y = rng.integers(0, 3, n_subjects * per_subject)
    pred = np.where(rng.random(y.size) < 0.7, y, rng.integers(0, 3, y.size))
    subjects = np.repeat(np.arange(n_subjects), per_subject)
    return y.tolist(), pred.tolist(), subjects.tolist()


def test_bootstrap_intervals_hold_the_estimate_and_shrink_with_more_subjects():
    rng = np.random.default_rng(1)
    widths = []
    for n_subjects in (8, 80):
        y, pred, subjects = _noisy(n_subjects, 10, rng)
        point = ev.get_metrics(y, pred, None, "SEED")
        ci = ev.bootstrap_intervals(y, pred, None, subjects, "SEED", n_boot=500)
        for name in ("balanced_accuracy", "cohen_kappa", "f1_weighted", "accuracy"):
            assert ci[name][0] <= point[name] <= ci[name][1], (name, ci[name], point[name])
        widths.append(ci["balanced_accuracy"][1] - ci["balanced_accuracy"][0])
    assert widths[1] < widths[0] / 2


def test_confusion_metrics_and_weighted_aucs_equal_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 5, 200)
    pred = [None if r < 0.1 else int(p) for r, p in zip(rng.random(200), rng.integers(0, 5, 200))]
    fast = ev.confusion_metrics(ev.confusion_matrix(y, pred, 5))
    slow = ev.get_metrics(y, pred, None, "HMC")
    for name in ("balanced_accuracy", "accuracy", "cohen_kappa", "f1_weighted"):
        assert float(fast[name]) == pytest.approx(slow[name], abs=1e-12), name
    yb, score = rng.integers(0, 2, 80), np.round(rng.random(80), 1)     # ties included
    weights = rng.integers(0, 3, (4, 80))
    roc, pr = ev.weighted_aucs(yb, score, weights)
    for w, r, p in zip(weights, roc, pr):
        assert r == pytest.approx(skm.roc_auc_score(yb, score, sample_weight=w))
        assert p == pytest.approx(skm.average_precision_score(yb, score, sample_weight=w))


def _evaluation(scoring_bacc, generation_bacc, invalid):
    m = lambda b, inv: {"n": 10, "balanced_accuracy": b, "invalid_rate": inv}   # noqa: E731
    return {"TUAB": {"val": {"scoring": m(scoring_bacc, 0.0),
                             "generation": m(generation_bacc, invalid)}}}


def test_best_needs_valid_answers_and_ties_go_to_the_later_checkpoint(tmp_path):
    book = ev.ResultsBook(tmp_path, ["TUAB"], None)
    assert book.add(0, 63, _evaluation(0.99, 0.0, 1.0))     # the only one so far
    assert book.data["best"]["eligible"] is False
    assert book.add(1, 108, _evaluation(0.9, 0.9, 0.0))     # lower score, but it answers
    assert not book.add(2, 150, _evaluation(0.9, 0.8, 0.0))
    assert book.add(3, 200, _evaluation(0.9, 0.9, 0.1))     # a tie: the later wins
    saved = json.loads((tmp_path / ev.RESULTS_NAME).read_text())
    best = saved["best"]
    assert best["iter_num"] == 200 and best["score"] == pytest.approx(0.9)
    assert "step 200" in best["reason"] and "tied with step(s) 108" in best["reason"]
    assert best["eligible"] and saved["evaluations"][0]["selection"]["invalid_rate"] == 1.0


def test_report_names_every_task(tmp_path):
    rng = np.random.default_rng(3)
    results = {}
    for name, task in dd.TASKS.items():
        n = 40
        y = rng.integers(0, task.n_classes, n).tolist()
        probs = rng.dirichlet(np.ones(task.n_classes), n)
        predictions = {"label": y, "scoring": probs.argmax(1).tolist(), "probs": probs.tolist(),
                       "generation": y, "generated_text": ["x"] * n,
                       "subject": [f"s{i % 8}" for i in range(n)],
                       "recording": [f"r{i % 8}" for i in range(n)]}
        entry = {mode: ev.analyse_mode(predictions, mode, name, n_boot=50)
                 for mode in ev.EVAL_MODES}
        results[name] = {"test": entry}
    record = {"tasks": list(results), "selection": ev.SELECTION_RULE, "checkpoint": "x.pt",
              "config": {"seed": 0},
              "evaluations": [{"epoch": None, "iter_num": 5, "results": results}]}
    report.plot_confusions(results, tmp_path)
    text = report.write_report(tmp_path, record).read_text()
    for name in dd.TASKS:
        assert f"| {name} | test | generation | window |" in text
        assert f"![{name} test](confusion/{name}_test.png)" in text
    assert "[" in text and "x.pt" in text and (tmp_path / report.REPORT_HTML_NAME).is_file()


# ----------------------------------------------------------------------------- no overclaiming

def _predictions(labels, subjects, recordings=None, probs=None):
    probs = probs if probs is not None else [[1 - 0.8 * y, 0.8 * y + 0.1] for y in labels]
    return {"label": labels, "scoring": np.argmax(probs, axis=1).tolist(), "probs": probs,
            "generation": labels, "generated_text": ["x"] * len(labels), "subject": subjects,
            "recording": recordings or [f"{s}_r{i}" for i, s in enumerate(subjects)]}


def _report(tmp_path, predictions, task="TUAB"):
    entry = {mode: ev.analyse_mode(predictions, mode, task, n_boot=200)
             for mode in ev.EVAL_MODES}
    record = {"tasks": [task], "selection": ev.SELECTION_RULE, "checkpoint": "x.pt",
              "evaluations": [{"epoch": None, "iter_num": 1, "results": {task: {"test": entry}}}]}
    return entry, report.write_report(tmp_path, record).read_text()


def test_one_subject_gives_no_zero_width_interval(tmp_path):
    labels = [0, 1] * 10
    entry, text = _report(tmp_path, _predictions(labels, ["only"] * 20))
    window = entry["scoring"]
    assert window["ci_note"] == "1 subject" and window["ci_n"] == 1
    assert all(math.isnan(lo) for lo, _ in window["ci"].values())
    assert "1.000 [n/a (1 subject)]" in text and "| 1 subject |" in text
    intervals = re.findall(r"\[(-?\d\.\d+), (-?\d\.\d+)\]", text)
    assert not [i for i in intervals if i[0] == i[1]], intervals
    assert "no interval: 1 subject" in text


def test_few_subjects_warn_and_undefined_metrics_say_why(tmp_path):
    labels = [0, 0, 1, 1, 0, 1, 1, 0]
    subjects = ["a", "a", "b", "b", "c", "c", "d", "d"]
    recordings = ["a1", "a1", "b1", "b1", "c1", "c1", "d1", "d1"]
    predictions = _predictions(labels, subjects, recordings)
    entry, text = _report(tmp_path, predictions)
    window = entry["scoring"]
    assert window["ci_unit"] == "subject" and window["ci_n"] == 4
    assert "unreliable" in window["ci_warning"]
    assert "4 subjects (unreliable: < 5)" in text
    # recordings hold several labels: the report says why there is no recording level
    assert entry["scoring"]["recording"] is None
    assert "scoring window: " in text and "holds windows of several labels" in text
    # two recordings, one of each class: AUROC is not defined for that n
    two = _predictions([0, 1], ["s1", "s2"], ["r1", "r2"], probs=[[0.3, 0.7], [0.6, 0.4]])
    recording = ev.analyse_mode(two, "scoring", "TUAB", n_boot=50)["recording"]
    assert math.isnan(recording["roc_auc"]) and any("need 2 of each" in n
                                                     for n in recording["notes"])
    assert report.tables.with_ci(recording, "roc_auc") == "n/a"


def test_metrics_table_has_chance_and_per_class_confusion(tmp_path):
    labels = [0, 0, 1, 1, 2, 2, 2, 0]
    predictions = {"label": labels, "generation": [0, 1, 1, None, 2, 2, 0, 0],
                   "generated_text": ["x"] * 8, "subject": [f"s{i}" for i in range(8)],
                   "recording": [f"r{i}" for i in range(8)]}
    entry = {"generation": ev.analyse_mode(predictions, "generation", "SEED", n_boot=100)}
    header, rows = report.metrics_rows({"SEED": {"test": entry}})
    assert header[6] == "chance" and rows[0][6] == "0.333"
    assert rows[0][5] == "8 subjects"
    header, rows = report.tables.per_class_table(entry["generation"]["confusion"])
    assert header[4] == "invalid"                       # generation gave an invalid answer
    # class 1: 1 of 2 right (sensitivity 0.5); of the 6 others, one called 1 (specificity 5/6);
    # 2 calls of class 1, one right (PPV 0.5)
    assert rows[1] == ["neutral", "0 %", "50 %", "0 %", "50 %", "2", "0.500", "0.833", "0.500"]
    assert rows[0][1:4] == ["67 %", "33 %", "0 %"]
    header, _ = report.tables.per_class_table(
        ev.analyse_mode({**predictions, "generation": labels}, "generation", "SEED",
                        n_boot=10)["confusion"])
    assert "invalid" not in header


def test_validation_plot_numbers_epochs_as_the_console(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(utils, "save_figure", lambda fig, png: figures.append(fig))
    evaluations = [{"epoch": e, "results": {"TUAB": {"val": {"scoring": {
        "balanced_accuracy": 0.5 + 0.1 * e}}}}} for e in (0, 4, 8)]
    ev.plot_validation(evaluations, tmp_path / "val.png")
    ax = figures[0].axes[0]
    assert ax.lines[0].get_xdata().tolist() == [0, 4, 8]
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 8]
    assert ticks and all(float(t).is_integer() for t in ticks)
