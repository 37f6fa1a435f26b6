"""Window metrics, confusion matrices, aggregation to recordings / subjects and bootstrap
intervals: numpy and scikit-learn only (no model, no torch).

Predictions None or INVALID are generation answers that match no option: they count as wrong and
are never mapped to a class.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn import metrics as skm

from tasks import Task, get_task

INVALID = -1   # a generated answer that matches no option; never a class
MIN_PER_CLASS_RANKING = 2    # ROC AUC / PR AUC from one sample of a class rank a single pair

def get_metrics(y_true, y_pred, probs, task: Task | str) -> dict:
    """Metrics of one task with scikit-learn.

    binary: balanced_accuracy, roc_auc and pr_auc (from probs[:, 1]; NaN without probs),
    accuracy; multi-class: balanced_accuracy, cohen_kappa, f1_weighted, accuracy. Predictions
    None or -1 are invalid answers: they count as wrong and their share is ``invalid_rate``.
    Undefined values (e.g. one class present) are NaN, explained in ``notes``.
    """
    task = get_task(task)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray([INVALID if p is None else int(p) for p in y_pred], dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred {len(y_pred)}")
    notes: list[str] = []
    out: dict = {"n": int(len(y_true))}
    if len(y_true) == 0:
        notes.append("no samples")
        out.update({name: math.nan for name in task.metrics})
        out.update(invalid_rate=math.nan, notes=notes)
        return out
    present = np.unique(y_true)
    if len(present) < 2:
        notes.append(f"only class {present.tolist()} present in y_true")
    # balanced accuracy of a constant or random answer: the mean recall over the classes present
    out["chance_balanced_accuracy"] = 1.0 / len(present)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # balanced accuracy = mean recall over the classes present; invalid predictions are
        # simply not a correct class, so they lower the recall of their true class
        out["balanced_accuracy"] = float(skm.recall_score(
            y_true, y_pred, labels=present, average="macro", zero_division=0))
        out["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
        if task.is_binary:
            out.update(_binary_scores(y_true, probs, notes))
        else:
            out["cohen_kappa"] = _nan_if_undefined(
                float(skm.cohen_kappa_score(y_true, y_pred)), "cohen_kappa", notes)
            out["f1_weighted"] = float(skm.f1_score(
                y_true, y_pred, labels=present, average="weighted", zero_division=0))
    out["invalid_rate"] = float(np.mean(y_pred == INVALID))
    out["notes"] = notes
    return out


def _nan_if_undefined(value: float, name: str, notes: list[str]) -> float:
    if not math.isfinite(value):
        notes.append(f"{name} undefined (constant labels or predictions)")
        return math.nan
    return value


def _binary_scores(y_true: np.ndarray, probs, notes: list[str]) -> dict:
    if probs is None:
        notes.append("roc_auc and pr_auc need class probabilities (option scoring)")
        return {"roc_auc": math.nan, "pr_auc": math.nan}
    positive = np.asarray(probs, dtype=np.float64)
    if positive.ndim == 2:
        positive = positive[:, 1]
    if len(np.unique(y_true)) < 2:
        notes.append("roc_auc and pr_auc undefined with one class present")
        return {"roc_auc": math.nan, "pr_auc": math.nan}
    n_pos, n_neg = int((y_true == 1).sum()), int((y_true != 1).sum())
    if min(n_pos, n_neg) < MIN_PER_CLASS_RANKING:
        notes.append(f"roc_auc and pr_auc undefined from {n_pos} positive and {n_neg} negative "
                     f"(need {MIN_PER_CLASS_RANKING} of each)")
        return {"roc_auc": math.nan, "pr_auc": math.nan}
    return {"roc_auc": float(skm.roc_auc_score(y_true, positive)),
            "pr_auc": float(skm.average_precision_score(y_true, positive))}


# ----------------------------------------------------------------------------- publishable metrics

LEVELS = ("window", "recording", "subject")
N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
BOOTSTRAP_SEED = 0
MIN_UNITS = 2             # fewer resampling units: no interval ("n/a (1 subject)")
FEW_UNITS = 5             # fewer: the interval is shown with a warning that it is unreliable
MIN_DEFINED_SHARE = 0.9   # a metric defined in fewer resamples has no interval


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(K, K + 1) counts: rows true class, columns predicted class, the last column invalid
    answers (generation mode)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    cols = np.asarray([n_classes if p is None or p == INVALID else int(p) for p in y_pred],
                      dtype=np.int64)
    out = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    np.add.at(out, (y_true, cols), 1)
    return out


def confusion_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """get_metrics' confusion-based metrics from (..., K, K + 1) confusion matrices, vectorised
    over the leading axes (the bootstrap's resamples): balanced_accuracy (mean recall over the
    classes present), accuracy, cohen_kappa, f1_weighted (over the classes present)."""
    counts = np.asarray(counts, dtype=np.float64)
    k = counts.shape[-1] - 1
    rows = counts.sum(-1)
    n = rows.sum(-1)
    diag = np.diagonal(counts[..., :k], axis1=-2, axis2=-1)
    cols = counts[..., :k].sum(-2)
    present = rows > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(present, diag / np.where(present, rows, 1), 0.0)
        precision = np.where(cols > 0, diag / np.where(cols > 0, cols, 1), 0.0)
        f1 = np.where(precision + recall > 0,
                      2 * precision * recall / np.where(precision + recall > 0,
                                                        precision + recall, 1), 0.0)
        accuracy = diag.sum(-1) / n
        expected = (rows * cols).sum(-1) / n ** 2
        kappa = np.where(expected < 1, (accuracy - expected) / (1 - expected), np.nan)
        return {"balanced_accuracy": (recall * present).sum(-1) / present.sum(-1),
                "accuracy": accuracy, "cohen_kappa": kappa,
                "f1_weighted": (f1 * rows).sum(-1) / n}


def aggregate(labels, predicted, probs, groups, n_classes: int):
    """Window predictions -> one prediction per group (recording or subject): the mean of the
    windows' class probabilities (scoring, `probs` given), else the majority of the valid
    answers (generation; a tie goes to the lower label, no valid answer is invalid).

    Returns (group names, labels, predictions, probs or None), or None when a group's windows
    carry different labels or a window has no group (the sample file does not say)."""
    groups = list(groups)
    if not groups or any(g in ("", None) for g in groups):
        return None
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    members: list[list[int]] = [[] for _ in names]
    for i, g in enumerate(groups):
        members[index[g]].append(i)
    labels = np.asarray(labels)
    if any(len(set(labels[m].tolist())) > 1 for m in members):
        return None
    y = [int(labels[m[0]]) for m in members]
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        mean = np.stack([probs[m].mean(axis=0) for m in members])
        return names, y, mean.argmax(axis=1).tolist(), mean
    votes = []
    for m in members:
        valid = [int(predicted[i]) for i in m if predicted[i] is not None
                 and predicted[i] != INVALID]
        counts = np.bincount(valid, minlength=n_classes) if valid else None
        votes.append(INVALID if counts is None else int(counts.argmax()))
    return names, y, votes, None


def weighted_aucs(y_true, score, weights) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision (sklearn's roc_auc_score / average_precision_score with
    sample_weight) for every row of `weights` (R, n) at once; NaN where a class weighs 0."""
    y = np.asarray(y_true) == 1
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="stable")              # descending: thresholds
    ranked = score[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])   # groups of tied scores
    w = np.asarray(weights, dtype=np.float64)[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)     # (R, distinct scores)
    neg = np.add.reduceat(w * ~y[order], starts, axis=1)
    total_pos, total_neg = pos.sum(1), neg.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a positive beats the negatives of lower scores, and half of those tied with it
        neg_below = total_neg[:, None] - np.cumsum(neg, axis=1)
        roc = (pos * (neg_below + 0.5 * neg)).sum(1) / (total_pos * total_neg)
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        pr = (pos / total_pos[:, None] * precision).sum(1)
    defined = (total_pos > 0) & (total_neg > 0)
    return np.where(defined, roc, np.nan), np.where(defined, pr, np.nan)


def resampled_metrics(y_true, y_pred, probs, units, task: Task | str,
                      n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED) -> dict:
    """{metric: (n_boot,) values} of the task's metrics and the invalid rate over bootstrap
    resamples of whole `units` (subjects) with replacement; NaN where a resample leaves the
    metric undefined (e.g. one class)."""
    task = get_task(task)
    y_true = np.asarray(y_true, dtype=np.int64)
    names, unit_of = np.unique(np.asarray([str(u) for u in units]), return_inverse=True)
    n_units, k = len(names), task.n_classes
    per_unit = np.zeros((n_units, k, k + 1), dtype=np.int64)
    pred_col = np.asarray([k if p is None or p == INVALID else int(p) for p in y_pred])
    np.add.at(per_unit, (unit_of, y_true, pred_col), 1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    weights = np.bincount((draws + n_units * np.arange(n_boot)[:, None]).ravel(),
                          minlength=n_boot * n_units).reshape(n_boot, n_units)
    resampled = np.einsum("bs,skl->bkl", weights, per_unit)
    values = confusion_metrics(resampled)
    values["invalid_rate"] = resampled[..., k].sum(-1) / resampled.sum((-2, -1))
    if task.is_binary and probs is not None:
        positive = np.asarray(probs, dtype=np.float64)
        positive = positive[:, 1] if positive.ndim == 2 else positive
        chunk = max(1, 2_000_000 // max(1, len(y_true)))       # bounds the (boots, n) arrays
        parts = [weighted_aucs(y_true, positive, weights[lo:lo + chunk, unit_of])
                 for lo in range(0, n_boot, chunk)]
        values.update(roc_auc=np.concatenate([p[0] for p in parts]),
                      pr_auc=np.concatenate([p[1] for p in parts]))
    return {name: values.get(name, np.full(n_boot, np.nan))
            for name in (*task.metrics, "invalid_rate")}


def percentile_intervals(values: dict, level: float = CI_LEVEL) -> tuple[dict, dict]:
    """({metric: [low, high]}, {metric: why it has none}) from resampled_metrics. A metric
    that fewer than MIN_DEFINED_SHARE of the resamples define gets NaN bounds: an interval over
    the resamples that happen to define it would be conditioned on them."""
    tail = 100 * (1 - level) / 2
    intervals, missing = {}, {}
    for name, v in values.items():
        defined = v[np.isfinite(v)]
        share = defined.size / max(1, v.size)
        if share < MIN_DEFINED_SHARE:
            intervals[name] = [math.nan, math.nan]
            missing[name] = f"defined in {100 * share:.0f} % of resamples"
        else:
            intervals[name] = [float(np.percentile(defined, tail)),
                               float(np.percentile(defined, 100 - tail))]
    return intervals, missing


def bootstrap_intervals(y_true, y_pred, probs, units, task: Task | str,
                        n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                        level: float = CI_LEVEL) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of the task's metrics and the invalid rate, resampling
    whole `units` (subjects) with replacement: windows of one subject are not independent.
    {metric: [low, high]}; NaN bounds where too few resamples define the metric."""
    values = resampled_metrics(y_true, y_pred, probs, units, task, n_boot, seed)
    return percentile_intervals(values, level)[0]


def counted(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def interval_fields(y_true, y_pred, probs, units, unit: str, task: Task | str,
                    n_boot: int = N_BOOTSTRAP) -> dict:
    """What a row of metrics says about its intervals: `ci` {metric: [low, high]}, `ci_unit`
    (what is resampled: subject, recording or window) and `ci_n` (how many), `ci_note` (why
    there is no interval at all: fewer than MIN_UNITS units), `ci_warning` (fewer than
    FEW_UNITS: unreliable) and `ci_missing` {metric: why that metric has none}."""
    task = get_task(task)
    n_units = len({str(u) for u in units})
    out = {"ci_unit": unit, "ci_n": n_units, "ci_note": None, "ci_warning": None,
           "ci_missing": {}}
    if n_units < MIN_UNITS:
        out["ci"] = {name: [math.nan, math.nan] for name in (*task.metrics, "invalid_rate")}
        out["ci_note"] = counted(n_units, unit)
        return out
    values = resampled_metrics(y_true, y_pred, probs, units, task, n_boot)
    out["ci"], out["ci_missing"] = percentile_intervals(values)
    if n_units < FEW_UNITS:
        out["ci_warning"] = (f"only {counted(n_units, unit)}: the interval is unreliable "
                             f"(under {FEW_UNITS})")
    return out


def missing_level_reason(level: str, groups: list) -> str:
    """Why a recording- or subject-level row is absent (aggregate gave None)."""
    if not groups or any(g in ("", None) for g in groups):
        return f"no {level}-level metrics: the sample files do not name the {level}"
    return (f"no {level}-level metrics: a {level} holds windows of several labels (e.g. the "
            f"stages of one night), so it has no single label to score")


def analyse_mode(predictions: dict, mode: str, task: Task | str,
                 n_boot: int = N_BOOTSTRAP) -> dict:
    """One mode's publishable metrics from evaluate_task's predictions: the window-level
    get_metrics plus `interval_fields` (bootstrap over subjects, else windows), `n_subjects`,
    `confusion`; and `recording` / `subject` levels (windows aggregated, see `aggregate`; None
    with a note saying why when the sample files do not say or a recording / subject holds
    several labels), each with its own interval fields."""
    task = get_task(task)
    labels, predicted = predictions["label"], predictions[mode]
    probs = np.asarray(predictions["probs"]) if mode == "scoring" else None
    subjects = predictions.get("subject") or [""] * len(labels)
    known = all(subjects)
    units = subjects if known else [str(i) for i in range(len(labels))]
    out = get_metrics(labels, predicted, probs, task)
    if not labels:
        return out
    out.update(interval_fields(labels, predicted, probs, units,
                               "subject" if known else "window", task, n_boot))
    out["n_subjects"] = len(set(subjects)) if known else None
    out["confusion"] = {"classes": list(task.label_names),
                        "predicted": [*task.label_names, "invalid"],
                        "counts": confusion_matrix(labels, predicted, task.n_classes).tolist()}
    subject_of = dict(zip(predictions.get("recording") or [], subjects))
    for level in LEVELS[1:]:
        groups = predictions.get(level) or []
        grouped = aggregate(labels, predicted, probs, groups, task.n_classes)
        if grouped is None:
            out[level] = None
            out["notes"].append(missing_level_reason(level, groups))
            continue
        names, y, pred, level_probs = grouped
        metrics = get_metrics(y, pred, level_probs, task)
        if level == "subject" or not known:
            level_units, unit = names, level
        else:
            level_units, unit = [subject_of[r] for r in names], "subject"
        metrics.update(interval_fields(y, pred, level_probs, level_units, unit, task, n_boot))
        metrics["n_subjects"] = len(set(level_units)) if known or level == "subject" else None
        out[level] = metrics
    return out
