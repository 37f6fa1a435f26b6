"""The report's tables as lists of strings: numbers, intervals and the metrics rows."""
from __future__ import annotations

import math

from downstream_dataset import TASKS
from report.predictions import LEVELS, MODES


def num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def with_ci(m: dict, name: str) -> str:
    value = num(m.get(name))
    low, high = (m.get("ci") or {}).get(name, (None, None))
    if value == "–" or low is None or not math.isfinite(low):
        return value
    return f"{value} [{low:.2f}, {high:.2f}]"


def metrics_rows(results: dict, splits=("test", "val")) -> tuple[list[str], list[list[str]]]:
    """The report's metrics table: one row per task, split, mode and level."""
    header = ["task", "split", "mode", "level", "n", "subjects", "balanced acc. [95 % CI]",
              "other metrics [95 % CI]", "invalid"]
    rows = []
    for task, by_split in results.items():
        others = [k for k in TASKS[task].metrics if k != "balanced_accuracy"]
        for split in splits:
            for mode in MODES:
                window = by_split.get(split, {}).get(mode)
                if not isinstance(window, dict):
                    continue
                for level in LEVELS:
                    m = window if level == "window" else window.get(level)
                    if not m:
                        continue
                    rows.append([task, split, mode, level, str(m["n"]),
                                 str(m.get("n_subjects") or "–"),
                                 with_ci(m, "balanced_accuracy"),
                                 "; ".join(f"{k} {with_ci(m, k)}" for k in others),
                                 num(m.get("invalid_rate"), 2) if mode == "generation"
                                 else ""])
    return header, rows
