"""Temperature scaling: the fit recovers a planted temperature, lowers the ECE of miscalibrated
scores on validation, is stored in best.pt / every later checkpoint and read back, and the
report shows ECE before / after with a reliability diagram."""
import contextlib
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_downstream_support import PlantedModel, write_samples

import downstream_dataset as dd
import evaluation as ev
import report
import utils
from evaluation import calibration as cal

RUNTIME = SimpleNamespace(device="cpu", autocast=contextlib.nullcontext, is_main=True,
                          print=lambda *a: None, barrier=lambda: None)


def _scores(n, k, scale, seed):
    """Labels drawn from softmax(z), and log-likelihoods scale * z: overconfident when
    scale > 1, underconfident when scale < 1; the right temperature is `scale`."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, k))
    p = cal.calibrated_probs(z)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return scale * z, labels


@pytest.mark.parametrize("scale", [4.0, 0.4])
def test_fit_recovers_the_planted_temperature_and_lowers_ece(scale):
    loglik, labels = _scores(4000, 3, scale, seed=1)
    t = cal.fit_temperature(loglik, labels)
    assert t == pytest.approx(scale, rel=0.1)
    before = cal.expected_calibration_error(cal.calibrated_probs(loglik), labels)
    after = cal.expected_calibration_error(cal.calibrated_probs(loglik, t), labels)
    assert after <= before and after < 0.03 < before
    assert cal.nll(loglik, labels, t) < cal.nll(loglik, labels, 1.0)


def test_ece_and_reliability_bins_by_hand():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.35, 0.65], [0.45, 0.55]])
    labels = [0, 1, 1, 0]
    bins = cal.reliability_bins(probs, labels, n_bins=10)
    assert bins["count"][9] == 2 and bins["accuracy"][9] == 0.5
    assert bins["count"][6] == 1 and bins["count"][5] == 1 and bins["accuracy"][5] == 0.0
    # 2/4 * |0.5 - 0.95| + 1/4 * |1 - 0.65| + 1/4 * |0 - 0.55|
    assert cal.expected_calibration_error(probs, labels, 10) == pytest.approx(
        0.5 * 0.45 + 0.25 * 0.35 + 0.25 * 0.55)


def test_calibrate_fits_on_validation_and_scores_test_with_that_temperature():
    val, val_y = _scores(600, 2, 3.0, seed=2)
    test, test_y = _scores(400, 2, 3.0, seed=3)
    results = {"TUAB": {"val": {"predictions": {"label": val_y.tolist(),
                                                "log_likelihoods": val.tolist()}},
                        "test": {"predictions": {"label": test_y.tolist(),
                                                 "log_likelihoods": test.tolist()}}}}
    out = cal.calibrate(results)["TUAB"]
    assert out["temperature"] == pytest.approx(cal.fit_temperature(val, val_y))
    assert out["n"] == 600 and out["ece_after"] <= out["ece_before"]
    expected = cal.expected_calibration_error(cal.calibrated_probs(test, out["temperature"]),
                                              test_y)
    assert out["test"]["ece_after"] == pytest.approx(expected)
    assert set(out["reliability"]) == {"val", "test"}
    assert cal.calibrate({"TUAB": {"test": results["TUAB"]["test"]}}) == {}   # no validation


def test_training_evaluation_stores_the_temperature_in_best_pt_and_later_checkpoints(tmp_path):
    task = "TUAB"
    tokens = dd.task_tokens(task)
    sets = {}
    for split, seed in (("val", 0), ("test", 1)):
        write_samples(tmp_path / split, [i % 2 for i in range(8)], seconds=1, seed=seed)
        sets[split] = dd.InstructionDataset(task, tmp_path / split, eeg_max_tokens=12)
    model = PlantedModel(tokens.answers, len(tokens.prompt), bonus=3.0)  # always right
    out = tmp_path / "run"
    out.mkdir()
    evaluate = ev.TrainingEvaluation(model, {task: sets}, RUNTIME, out, [task])
    assert evaluate.checkpoint_entries() == {}
    at = SimpleNamespace(epoch=0, iter_num=3, total_steps=3, resumed_from=None, is_last=True,
                         state=lambda: {"iter_num": 3, "model": {}})
    evaluate(at)

    saved = utils.load_checkpoint(out / ev.BEST_NAME)["calibration"][task]
    record = json.loads((out / ev.RESULTS_NAME).read_text())["evaluations"][-1]["calibration"]
    assert saved["temperature"] == pytest.approx(record[task]["temperature"])
    assert saved["temperature"] < 1     # sharper: the planted model is always right
    assert saved["n"] == 8 and saved["iter_num"] == 3
    assert saved["ece_after"] <= saved["ece_before"]
    assert evaluate.checkpoint_entries()["calibration"][task] == saved   # last.pt, ckpt-N
    text = (out / report.REPORT_NAME).read_text()
    assert "## Calibration" in text and f"![{task} reliability](calibration/{task}.png)" in text
    assert (out / "calibration" / f"{task}.png").is_file()
    assert math.isfinite(saved["ece_before"])


def test_a_temperature_that_raises_the_validation_ece_is_not_applied():
    # NLL and ECE disagree on these 10 scores: the NLL fit (T ~ 0.42) raises the ECE
    y = [0, 1] * 5
    second = [-0.13, 0.41, -0.13, -0.65, 0.15, 0.22, -0.57, 0.29, -0.12, 0.15]
    loglik = [[0.0, v] for v in second]
    fitted = cal.fit_temperature(loglik, y)
    assert cal.expected_calibration_error(cal.calibrated_probs(loglik, fitted), y) > \
        cal.expected_calibration_error(cal.calibrated_probs(loglik), y)
    out = cal.calibrate({"TUAB": {"val": {"predictions": {"label": y,
                                                          "log_likelihoods": loglik}}}})["TUAB"]
    assert out["temperature"] == 1.0 and not out["applied"]
    assert out["fitted_temperature"] == pytest.approx(fitted)
    assert out["ece_after"] == out["ece_before"]
    block = report.document.calibration_blocks(Path("."), {"TUAB": out})
    assert "not applied" in json.dumps(block)
