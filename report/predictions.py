"""The per-sample predictions CSVs: predictions/<task>_<split>_<mode>.csv, one row per evaluated
sample (PREDICTION_COLUMNS, then prob_<class> per class in scoring mode)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import utils
from tasks import BUILTIN_TASKS, get_task

MODES = ("generation", "scoring")
LEVELS = ("window", "recording", "subject")
PREDICTIONS_DIR = "predictions"
PREDICTION_COLUMNS = ("file", "recording", "subject", "window", "onset_s", "true", "true_name",
                      "predicted", "predicted_name", "generated_text")



def predictions_path(out_dir, task: str, split: str, mode: str) -> Path:
    return Path(out_dir) / PREDICTIONS_DIR / f"{task}_{split}_{mode}.csv"


def _blank(value):
    """Unknown origin fields ("" / -1 / NaN) as empty cells."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int) and value < 0:
        return ""
    return value


def write_predictions(results: dict, out_dir, tasks: dict | None = None) -> list[Path]:
    """predictions/<task>_<split>_<mode>.csv from evaluation.evaluate_tasks' results (their
    "predictions" entries); a blank `predicted` is an invalid generated answer. `tasks`: the
    run's tasks by name (default the built-in ones)."""
    written = []
    for task, splits in results.items():
        names = get_task(task, tasks or BUILTIN_TASKS).label_names
        for split, entry in splits.items():
            pred = entry.get("predictions")
            if not pred:
                continue
            for mode in MODES:
                if mode not in pred:
                    continue
                probs = pred.get("probs") if mode == "scoring" else None
                header = [*PREDICTION_COLUMNS, *(f"prob_{n}" for n in names)] if probs \
                    else list(PREDICTION_COLUMNS)
                buffer = io.StringIO()
                writer = csv.writer(buffer, lineterminator="\n")
                writer.writerow(header)
                for i, label in enumerate(pred["label"]):
                    p = pred[mode][i]
                    valid = p is not None and p >= 0
                    text = pred["generated_text"][i] if mode == "generation" else ""
                    row = [_blank(pred[k][i]) for k in ("file", "recording", "subject",
                                                        "window", "onset_s")]
                    row += [label, names[label], p if valid else "",
                            names[p] if valid else "", text]
                    if probs:
                        row += [f"{q:.6g}" for q in probs[i]]
                    writer.writerow(row)
                path = predictions_path(out_dir, task, split, mode)
                path.parent.mkdir(parents=True, exist_ok=True)
                payload = buffer.getvalue()
                utils.atomic_write(path, lambda tmp: tmp.write_text(payload, encoding="utf-8"))
                written.append(path)
    return written


def read_predictions(path) -> dict:
    """A predictions CSV back as {"label", "predicted" (None = invalid), "probs" (or None),
    and every other column as a list of strings}."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    prob_cols = [c for c in (rows[0] if rows else {}) if c.startswith("prob_")]
    out = {c: [r[c] for r in rows] for c in PREDICTION_COLUMNS}
    out["label"] = [int(r["true"]) for r in rows]
    out["predicted"] = [int(r["predicted"]) if r["predicted"] else None for r in rows]
    out["probs"] = ([[float(r[c]) for c in prob_cols] for r in rows] if prob_cols else None)
    return out
