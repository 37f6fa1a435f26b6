"""evaluation: metrics against hand-computed values; evaluate_task with a planted model (option
scoring and greedy answers themselves: tests/test_answering.py)."""
import json
import math

import numpy as np
import pytest
import torch
from test_downstream_support import PlantedModel, write_samples
from torch.utils.data import DataLoader

import downstream_dataset as dd
import evaluation as ev

# ----------------------------------------------------------------------------- metrics

def test_binary_metrics_by_hand():
    y_true = [0, 0, 1, 1, 1]
    y_pred = [0, 1, 1, 1, 0]
    positive = [0.1, 0.6, 0.8, 0.7, 0.4]
    m = ev.get_metrics(y_true, y_pred, positive, "TUAB")
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["roc_auc"] == pytest.approx(5 / 6)          # 5 of 6 positive/negative pairs ordered
    assert m["pr_auc"] == pytest.approx((1 + 1 + 3 / 4) / 3)   # precision at each positive
    assert m["invalid_rate"] == 0 and m["n"] == 5 and m["notes"] == []
    probs = np.stack([1 - np.array(positive), positive], axis=1)   # (B, 2) gives the same
    assert ev.get_metrics(y_true, y_pred, probs, "TUAB")["roc_auc"] == pytest.approx(5 / 6)


def test_multiclass_metrics_by_hand():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    m = ev.get_metrics(y_true, y_pred, None, "SEED")
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # p_o = 4/6, p_e = (2*2 + 2*3 + 2*1) / 36 = 1/3
    assert m["cohen_kappa"] == pytest.approx((2 / 3 - 1 / 3) / (1 - 1 / 3))
    # F1 per class 1/2, 4/5, 2/3 with equal support
    assert m["f1_weighted"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert set(dd.MULTICLASS_METRICS) <= set(m)


def test_invalid_answers_count_as_wrong_never_as_a_class():
    m = ev.get_metrics([0, 1, 1, 0], [0, None, 1, None], None, "TUAB")
    assert m["balanced_accuracy"] == pytest.approx(0.5)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["invalid_rate"] == pytest.approx(0.5)
    assert math.isnan(m["roc_auc"]) and any("probabilities" in n for n in m["notes"])
    # kappa with an invalid answer: p_o = 2/4, p_e = (2*1 + 1*1 + 1*1) / 16 = 1/4
    m = ev.get_metrics([0, 1, 2, 0], [0, None, 2, 1], None, "TUSL")
    assert m["cohen_kappa"] == pytest.approx((1 / 2 - 1 / 4) / (1 - 1 / 4))
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert m["invalid_rate"] == pytest.approx(1 / 4)


def test_degenerate_inputs_give_nan_and_a_note():
    m = ev.get_metrics([1, 1, 1], [1, 0, 1], [0.9, 0.2, 0.8], "Workload")
    assert m["balanced_accuracy"] == pytest.approx(2 / 3)
    assert math.isnan(m["roc_auc"]) and math.isnan(m["pr_auc"])
    assert any("one class" in n for n in m["notes"])
    m = ev.get_metrics([2, 2], [2, 2], None, "HMC")
    assert math.isnan(m["cohen_kappa"]) and m["accuracy"] == 1.0
    m = ev.get_metrics([], [], None, "TUEV")
    assert m["n"] == 0 and math.isnan(m["balanced_accuracy"])
    with pytest.raises(ValueError, match="3 labels"):
        ev.get_metrics([0, 1, 0], [0, 1], None, "TUAB")


# ----------------------------------------------------------------------------- option scoring

# short EEG padding keeps the planted models' full-length logits small
SHORT_EEG = 12


def _batch(tmp_path, task, labels, seconds=1):
    write_samples(tmp_path, labels, seconds=seconds)
    dataset = dd.InstructionDataset(task, tmp_path, eeg_max_tokens=SHORT_EEG)
    return dataset, next(iter(DataLoader(dataset, batch_size=len(labels))))


def _planted(task, **kwargs):
    tokens = dd.task_tokens(task)
    return PlantedModel(tokens.answers, len(tokens.prompt), **kwargs)


# ----------------------------------------------------------------------------- one task

def test_evaluate_task_reports_both_modes(tmp_path):
    labels = [0, 1, 1, 0, 1]
    write_samples(tmp_path, labels)
    dataset = dd.InstructionDataset("TUAB", tmp_path, eeg_max_tokens=SHORT_EEG)
    model = _planted("TUAB", garbage_rows={0})      # first row of every batch: garbage
    model.train()
    out = ev.evaluate_task(model, dataset, "TUAB", batch_size=2, device="cpu", progress=False)
    assert model.training                           # mode restored
    scoring, generation = out["scoring"], out["generation"]
    assert scoring["balanced_accuracy"] == 1.0 and scoring["roc_auc"] == 1.0
    assert scoring["invalid_rate"] == 0.0
    # rows 0, 2, 4 are first in their batch of 2: invalid, never a class
    assert generation["invalid_rate"] == pytest.approx(3 / 5)
    assert out["predictions"]["generation"] == [None, 1, None, 0, None]
    assert out["predictions"]["scoring"] == labels == out["predictions"]["label"]
    assert np.allclose(np.sum(out["predictions"]["probs"], axis=1), 1.0)
    only = ev.evaluate_task(model, dataset, "TUAB", 8, "cpu", modes=("scoring",), progress=False)
    assert set(only) == {"scoring", "predictions"}
    with pytest.raises(ValueError, match="beam"):
        ev.evaluate_task(model, dataset, "TUAB", 8, "cpu", modes=("beam",))


# ----------------------------------------------------------------------------- the command line

GOOD_METRICS = {"n": 4, "balanced_accuracy": 0.75, "accuracy": 0.75, "roc_auc": None,
                "invalid_rate": 0.0, "ci": {"balanced_accuracy": [0.5, 1.0]}, "notes": []}


def _run(tmp_path, content, name="run"):
    run = tmp_path / name
    run.mkdir()
    path = run / "results.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return run


def _evaluation(results):
    return {"evaluations": [{"epoch": 0, "iter_num": 3, "results": results}]}


BROKEN = {
    "not json": b"{\"evaluations\": [",
    "not text": b"\xff\xfe\x00garbage",
    "a list": [1, 2],
    "no evaluation": {"evaluations": []},
    "evaluation not an object": {"evaluations": [7]},
    "results not an object": _evaluation([1]),
    "split not an object": _evaluation({"TUAB": {"test": 3}}),
    "metric a text": _evaluation({"TUAB": {"test": {"scoring": {**GOOD_METRICS,
                                                                "balanced_accuracy": "high"}}}}),
    "bad interval": _evaluation({"TUAB": {"test": {"scoring": {**GOOD_METRICS,
                                                               "ci": {"accuracy": [1, 2, 3]}}}}}),
    "bad data": _evaluation({"TUAB": {"test": {"data": [1], "scoring": GOOD_METRICS}}}),
    "bad best": {**_evaluation({}), "best": "step 3"},
    "bad level": _evaluation({"TUAB": {"test": {"scoring": {**GOOD_METRICS, "subject": 5}}}}),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_compare_never_ends_in_a_traceback(tmp_path, capsys, case):
    run = _run(tmp_path, BROKEN[case])
    assert ev.main(["compare", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "results.json" in err, err


def test_compare_and_the_model_card_read_tasks_unknown_to_this_process(tmp_path, capsys):
    """A run trained on a task file: its task is not built in, its results still compare."""
    results = {"MyTask": {"test": {"data": {"samples": 4, "subjects": 2},
                                   "scoring": {**GOOD_METRICS, "cohen_kappa": 0.5},
                                   "generation": GOOD_METRICS}}}
    runs = [_run(tmp_path, _evaluation(results), name) for name in ("a", "b")]
    assert ev.main(["compare", *map(str, runs)]) == 0
    table = capsys.readouterr().out
    assert "MyTask" in table and "cohen_kappa 0.500 ± 0.000" in table
    card, problem = ev.model_card({"kind": "LM", "source": "x.pt", "checkpoint": {}}, runs[0])
    assert problem is None and "| MyTask | test | scoring | window |" in card


def test_export_with_a_broken_results_json_still_writes_weights_and_card(tmp_path, capsys):
    from model import neurolm_checkpoint
    from model.model import GPTConfig
    from model.model_neural_transformer import NTConfig
    from model.model_neurolm import NeuroLM

    lm = NeuroLM(GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16),
                 NTConfig(n_layer=1, n_head=2, n_embd=16, out_chans=4), n_eeg_codes=8)
    run = _run(tmp_path, BROKEN["metric a text"])
    torch.save(neurolm_checkpoint(lm, iter_num=3), run / "best.pt")
    assert ev.main(["export", str(run / "best.pt"), str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "warning: no metrics in the model card" in err and "Traceback" not in err
    card = (tmp_path / "out" / "README.md").read_text()
    assert "No test metrics" in card and (tmp_path / "out" / "model.safetensors").is_file()
    (tmp_path / "file").write_text("x")
    assert ev.main(["export", str(run / "best.pt"), str(tmp_path / "file" / "out")]) == 2
    assert ev.main(["export", str(tmp_path / "missing.pt"), str(tmp_path / "o2")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2
