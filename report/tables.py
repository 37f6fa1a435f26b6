"""The report's tables as lists of strings: numbers, intervals that say what they rest on, the
metrics rows, per-class confusion tables, and the notes that say why a value or row is missing.

Reads results.json's layout only (tasks named in it need not be known here), tolerating older
records without the interval fields.
"""
from __future__ import annotations

import math

import numpy as np

from report.predictions import LEVELS, MODES

# the metrics besides balanced accuracy, in the order a row shows those it has
OTHER_METRICS = ("roc_auc", "pr_auc", "cohen_kappa", "f1_weighted", "accuracy")
NOT_AVAILABLE = "n/a"


def num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def counted(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def with_ci(m: dict, name: str) -> str:
    """`value [low, high]`, `value [n/a (why)]`, or `n/a` for a value undefined for its n (the
    row's notes say why). Bounds have the value's digits, so a narrow interval never reads as
    an exact one."""
    value = m.get(name)
    if value is None or not math.isfinite(value):
        return NOT_AVAILABLE
    text = num(value)
    if m.get("ci_note"):
        return f"{text} [{NOT_AVAILABLE} ({m['ci_note']})]"
    low, high = (m.get("ci") or {}).get(name) or (None, None)
    if low is None or not math.isfinite(low):
        why = (m.get("ci_missing") or {}).get(name)
        return f"{text} [{NOT_AVAILABLE} ({why})]" if why else f"{text} [{NOT_AVAILABLE}]"
    return f"{text} [{low:.3f}, {high:.3f}]"


def resampled_over(m: dict) -> str:
    """What an interval resamples and how many: `12 subjects`, `3 subjects (unreliable: < 5)`."""
    unit, n = m.get("ci_unit"), m.get("ci_n")
    if unit is None or n is None:         # a record from before the interval fields
        n, unit = m.get("n_subjects"), "subject"
        if n is None:
            return "–"
    text = counted(int(n), unit)
    return f"{text} (unreliable: < 5)" if m.get("ci_warning") else text


def chance(m: dict) -> str:
    """Balanced accuracy of a constant or random answer: 1 / the classes present."""
    value = m.get("chance_balanced_accuracy")
    if value is None and (m.get("confusion") or {}).get("counts"):
        present = int((np.asarray(m["confusion"]["counts"]).sum(axis=1) > 0).sum())
        value = 1.0 / present if present else None
    return num(value)


def metric_rows(results: dict, splits=("test", "val")):
    """(task, split, mode, level, metrics) of every row the report shows, in its order."""
    for task, by_split in results.items():
        for split in splits:
            for mode in MODES:
                window = (by_split.get(split) or {}).get(mode)
                if not isinstance(window, dict):
                    continue
                for level in LEVELS:
                    m = window if level == "window" else window.get(level)
                    if isinstance(m, dict):
                        yield task, split, mode, level, m


def metrics_rows(results: dict, splits=("test", "val")) -> tuple[list[str], list[list[str]]]:
    """The report's metrics table: one row per task, split, mode and level."""
    header = ["task", "split", "mode", "level", "n", "CI resamples", "chance",
              "balanced acc. [95 % CI]", "other metrics [95 % CI]", "invalid"]
    rows = []
    for task, split, mode, level, m in metric_rows(results, splits):
        others = [k for k in OTHER_METRICS if k in m]
        rows.append([task, split, mode, level, str(m.get("n", "–")), resampled_over(m),
                     chance(m), with_ci(m, "balanced_accuracy"),
                     "; ".join(f"{k} {with_ci(m, k)}" for k in others),
                     num(m.get("invalid_rate"), 2) if mode == "generation" else ""])
    return header, rows


def notes_lines(results: dict, splits=("test", "val")) -> list[str]:
    """One line per row with something to say: why a value or a level is missing, and which
    intervals rest on too few units."""
    lines = []
    for task, split, mode, level, m in metric_rows(results, splits):
        said = [*dict.fromkeys(m.get("notes") or [])]
        if m.get("ci_note"):
            said.append(f"no interval: {m['ci_note']} (at least 2 are needed to resample)")
        elif m.get("ci_warning"):
            said.append(m["ci_warning"])
        if said:
            lines.append(f"{task} {split} {mode} {level}: " + "; ".join(said))
    return lines


def per_class_table(conf: dict) -> tuple[list[str], list[list[str]]]:
    """A confusion matrix as a table: rows true class, cells the share of that class (row-
    normalised, %), the invalid column only when some answer was invalid, then per class its
    n, sensitivity (recall), specificity and PPV (precision); n/a where undefined."""
    counts = np.asarray(conf["counts"], dtype=np.int64)
    classes = list(conf["classes"])
    columns = list(conf["predicted"])
    k = len(classes)
    if counts.shape[1] > k and counts[:, k:].sum() == 0:
        counts, columns = counts[:, :k], columns[:k]
    rows_n = counts.sum(axis=1)
    total = int(rows_n.sum())
    predicted_as = counts[:, :k].sum(axis=0)
    header = ["true \\ predicted", *columns, "n", "sensitivity", "specificity", "PPV"]
    rows = []
    for i, name in enumerate(classes):
        hit, negatives = counts[i, i], total - rows_n[i]
        false_pos = predicted_as[i] - hit
        share = [f"{100 * c / rows_n[i]:.0f} %" if rows_n[i] else NOT_AVAILABLE
                 for c in counts[i]]
        rows.append([name, *share, str(int(rows_n[i])),
                     num(hit / rows_n[i]) if rows_n[i] else NOT_AVAILABLE,
                     num(1 - false_pos / negatives) if negatives else NOT_AVAILABLE,
                     num(hit / predicted_as[i]) if predicted_as[i] else NOT_AVAILABLE])
    return header, rows
