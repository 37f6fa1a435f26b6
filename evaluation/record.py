"""Reading a run's results.json for `compare`, `export` and the model card: every part they use
is checked first, so a file in any state (hand-edited, truncated, from another version) gives
one ResultsError naming the file and the part, never a traceback further on."""
from __future__ import annotations

import json
import math
from pathlib import Path

from evaluation.run import EVAL_MODES
from evaluation.selection import RESULTS_NAME

LEVEL_KEYS = ("recording", "subject")
TEXT_FIELDS = ("ci_unit", "ci_note", "ci_warning")


class ResultsError(ValueError):
    """A results.json that is missing or not in the form a training run writes."""


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_metrics(m, where: str) -> None:
    if not isinstance(m, dict):
        raise ResultsError(f"{where} is {type(m).__name__}, not an object of metrics")
    for key, value in m.items():
        if key in LEVEL_KEYS:
            if value is not None:
                _check_metrics(value, f"{where}.{key}")
        elif key == "ci":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ResultsError(f"{where}.ci is not an object")
            for name, bounds in value.items():
                if bounds is not None and not (isinstance(bounds, list) and len(bounds) == 2
                                               and all(map(_is_number, bounds))):
                    raise ResultsError(f"{where}.ci.{name} is not [low, high]")
        elif key == "notes":
            if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
                raise ResultsError(f"{where}.notes is not a list of texts")
        elif key == "ci_missing":
            if value is not None and not isinstance(value, dict):
                raise ResultsError(f"{where}.ci_missing is not an object")
        elif key in TEXT_FIELDS:
            if value is not None and not isinstance(value, str):
                raise ResultsError(f"{where}.{key} is not a text")
        elif key not in ("confusion",) and not _is_number(value):
            raise ResultsError(f"{where}.{key} is {value!r}, not a number")
    if not isinstance(m.get("n", 0), int):
        raise ResultsError(f"{where}.n is not a whole number")


def check_results(results, where: str) -> None:
    """{task: {split: {mode: metrics, "data": {...}, "examples": [...]}}}."""
    if not isinstance(results, dict):
        raise ResultsError(f"{where} is not an object of tasks")
    for task, splits in results.items():
        if not isinstance(splits, dict):
            raise ResultsError(f"{where}.{task} is not an object of splits")
        for split, entry in splits.items():
            at = f"{where}.{task}.{split}"
            if not isinstance(entry, dict):
                raise ResultsError(f"{at} is not an object")
            for mode in EVAL_MODES:
                if mode in entry:
                    _check_metrics(entry[mode], f"{at}.{mode}")
            data = entry.get("data", {})
            if not isinstance(data, dict) or not all(map(_is_number, data.values())):
                raise ResultsError(f"{at}.data is not an object of counts")


def read_run(run) -> tuple[dict, dict]:
    """(results.json record, the evaluation it stands for: best.pt's, else the last) of a run
    folder or a results.json path, checked."""
    path = Path(run)
    path = path / RESULTS_NAME if path.is_dir() else path
    if not path.is_file():
        raise ResultsError(f"{run}: no {RESULTS_NAME} (a train_instruction.py --out_dir)")
    try:    # undecodable bytes and bad JSON are ValueErrors
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError(f"a {type(record).__name__}, not an object")
    except (OSError, ValueError) as err:
        raise ResultsError(f"{path}: not a results.json of train_instruction.py ({err})") from None
    evaluations = record.get("evaluations")
    if not isinstance(evaluations, list) or not evaluations:
        raise ResultsError(f"{path}: holds no evaluation")
    for i, e in enumerate(evaluations):
        if not isinstance(e, dict) or not _is_number(e.get("iter_num")):
            raise ResultsError(f"{path}: evaluations[{i}] has no step (iter_num)")
        check_results(e.get("results"), f"{path}: evaluations[{i}].results")
    best = record.get("best")
    if best is not None and not (isinstance(best, dict) and _is_number(best.get("iter_num"))):
        raise ResultsError(f"{path}: best has no step (iter_num)")
    chosen = next((e for e in evaluations if best and e["iter_num"] == best["iter_num"]),
                  evaluations[-1])
    return record, chosen


def finite(values) -> list[float]:
    """The finite numbers among values (None and NaN are values a run could not compute)."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]
