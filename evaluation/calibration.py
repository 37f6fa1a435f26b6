"""Temperature scaling of the option-scoring probabilities (Guo et al., 2017): one temperature T
per task, fitted on the validation split by minimising the negative log-likelihood of
softmax(log-likelihoods / T), and applied when it does not raise the validation ECE;
calibrated probabilities are softmax(log-likelihoods / T).

Expected calibration error (ECE): top-label, N_BINS equal-width confidence bins, the
sample-weighted mean |accuracy - confidence| over the bins. The test split is scored with the
validation temperature (never fitted on test). numpy / scipy only.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

N_BINS = 10
T_RANGE = (0.05, 20.0)      # beyond it the fit only chases a handful of samples
CALIBRATION_SPLIT = "val"


def calibrated_probs(log_likelihoods, temperature: float = 1.0) -> np.ndarray:
    """(n, K) softmax(log_likelihoods / temperature)."""
    z = np.asarray(log_likelihoods, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def nll(log_likelihoods, labels, temperature: float) -> float:
    """Mean negative log-probability of the true class under softmax(l / T)."""
    z = np.asarray(log_likelihoods, dtype=np.float64) / temperature
    top = z.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), np.asarray(labels)]))


def fit_temperature(log_likelihoods, labels) -> float:
    """The T in T_RANGE that minimises the NLL of the labels (searched over log T)."""
    lo, hi = (math.log(t) for t in T_RANGE)
    fit = minimize_scalar(lambda s: nll(log_likelihoods, labels, math.exp(s)),
                          bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(math.exp(fit.x))


def reliability_bins(probs, labels, n_bins: int = N_BINS) -> dict:
    """Per equal-width confidence bin: mean confidence, accuracy (None when empty), count."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    which = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    out = {"edges": np.linspace(0, 1, n_bins + 1).tolist(), "confidence": [], "accuracy": [],
           "count": []}
    for b in range(n_bins):
        members = which == b
        n = int(members.sum())
        out["count"].append(n)
        out["confidence"].append(float(confidence[members].mean()) if n else None)
        out["accuracy"].append(float(correct[members].mean()) if n else None)
    return out


def expected_calibration_error(probs, labels, n_bins: int = N_BINS) -> float:
    """Top-label ECE: sum over bins of (share of samples) * |accuracy - mean confidence|."""
    bins = reliability_bins(probs, labels, n_bins)
    total = sum(bins["count"])
    if not total:
        return math.nan
    return float(sum(n / total * abs(a - c) for n, a, c in
                     zip(bins["count"], bins["accuracy"], bins["confidence"]) if n))


def calibrate_task(splits: dict) -> dict | None:
    """{"temperature" (the one applied), "fitted_temperature", "applied", "ece_before",
    "ece_after", "n", "split", "test": {...}, "reliability": {split: {"before", "after"}}} of
    one task from evaluate_tasks' entry {split: {"predictions": {"label", "log_likelihoods"}}};
    None without validation scores. The fitted temperature is applied only when it does not
    raise the validation ECE (else T = 1, and the report says so)."""
    val = (splits.get(CALIBRATION_SPLIT) or {}).get("predictions") or {}
    if not val.get("log_likelihoods"):
        return None
    fitted = fit_temperature(val["log_likelihoods"], val["label"])
    before = expected_calibration_error(calibrated_probs(val["log_likelihoods"]), val["label"])
    after = expected_calibration_error(calibrated_probs(val["log_likelihoods"], fitted),
                                       val["label"])
    # NLL and ECE can disagree (a model biased towards one class, few samples): a temperature
    # that worsens the validation ECE it is judged by is reported, not applied
    temperature = fitted if after <= before else 1.0
    out = {"temperature": temperature, "fitted_temperature": fitted,
           "applied": temperature == fitted, "n": len(val["label"]),
           "split": CALIBRATION_SPLIT, "n_bins": N_BINS, "reliability": {}}
    for split, entry in splits.items():
        pred = (entry or {}).get("predictions") or {}
        if not pred.get("log_likelihoods"):
            continue
        before = calibrated_probs(pred["log_likelihoods"])
        after = calibrated_probs(pred["log_likelihoods"], temperature)
        scores = {"ece_before": expected_calibration_error(before, pred["label"]),
                  "ece_after": expected_calibration_error(after, pred["label"]),
                  "n": len(pred["label"])}
        if split == CALIBRATION_SPLIT:
            out.update(ece_before=scores["ece_before"], ece_after=scores["ece_after"])
        else:
            out[split] = scores
        out["reliability"][split] = {"before": reliability_bins(before, pred["label"]),
                                     "after": reliability_bins(after, pred["label"])}
    return out


def calibrate(results: dict) -> dict:
    """{task: calibrate_task(...)} for every task of evaluate_tasks' results that has
    validation scores."""
    out = {}
    for name, splits in results.items():
        fitted = calibrate_task(splits)
        if fitted is not None:
            out[name] = fitted
    return out


def checkpoint_calibration(calibration: dict, iter_num: int | None = None) -> dict:
    """What a checkpoint carries under "calibration": {task: {"temperature", "ece_before",
    "ece_after", "n"}} (+ "iter_num": the step whose validation it was fitted on)."""
    return {name: {"temperature": c["temperature"], "ece_before": c["ece_before"],
                   "ece_after": c["ece_after"], "n": c["n"], "iter_num": iter_num}
            for name, c in calibration.items()}
