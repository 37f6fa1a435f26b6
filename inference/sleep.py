"""Hypnogram statistics of a sleep-staging task, and time per class of any task.

The definitions are those of the AASM manual as YASA's sleep_statistics computes them: time in
bed (TIB) is the scored span, total sleep time (TST) the epochs of any sleep stage, sleep
efficiency TST / TIB, sleep-onset latency the time to the first sleep epoch, WASO the wake
between sleep onset and the last sleep epoch. Windows left unanswered (QC skip) or whose answer
matches no stage are unscored: neither sleep nor wake.
"""
from __future__ import annotations

import numpy as np

from tasks import Task

from .agreement import stage_of


def is_sleep_task(task: Task) -> bool:
    """A staging task: its classes are Wake, some NREM stages and REM (any usual spelling)."""
    stages = [stage_of(n) for n in task.label_names]
    return "wake" in stages and "rem" in stages and len(stages) >= 3


def epoch_stages(table) -> list[str]:
    """The stage of each window in order ('' when unscored)."""
    return [str(s) for s in table.sort_values("start_s")["label_name"].fillna("")]


def class_time(task: Task, table, stride_s: float) -> dict:
    """{class: {"minutes", "percent"}} of the answered windows; each window stands for its
    stride (overlapping windows are not counted twice)."""
    labels = table["label_name"].fillna("")
    answered = int((labels != "").sum())
    out = {}
    for name in task.label_names:
        n = int((labels == name).sum())
        out[name] = {"minutes": round(n * stride_s / 60, 3),
                     "percent": round(100 * n / answered, 2) if answered else None}
    return out


def summary(task: Task, table, epoch_s: float) -> dict:
    """Sleep statistics of a hypnogram (one stage per window of epoch_s seconds)."""
    stages = epoch_stages(table)
    wake = next(n for n in task.label_names if stage_of(n) == "wake")
    scored = np.array([s != "" for s in stages])
    asleep = np.array([s not in ("", wake) for s in stages])
    minutes = epoch_s / 60
    tib = len(stages) * minutes
    tst = float(asleep.sum() * minutes)
    out = {"epoch_seconds": epoch_s, "time_in_bed_min": round(tib, 2),
           "scored_min": round(float(scored.sum() * minutes), 2),
           "total_sleep_time_min": round(tst, 2),
           "sleep_efficiency_pct": round(100 * tst / tib, 2) if tib else None}
    if asleep.any():
        onset, last = int(np.argmax(asleep)), int(len(asleep) - 1 - np.argmax(asleep[::-1]))
        period = stages[onset:last + 1]
        out["sleep_onset_latency_min"] = round(onset * minutes, 2)
        out["waso_min"] = round(sum(s == wake for s in period) * minutes, 2)
    else:
        out["sleep_onset_latency_min"] = None   # never asleep: undefined, not zero
        out["waso_min"] = None
        out["note"] = "no sleep epoch: sleep-onset latency and WASO are undefined"
    out["stages"] = {}
    for name in task.label_names:
        n = sum(s == name for s in stages)
        out["stages"][name] = {
            "minutes": round(n * minutes, 2),
            "percent_of_tst": (round(100 * n * minutes / tst, 2) if tst and name != wake
                               else None),
            "percent_of_tib": round(100 * n * minutes / tib, 2) if tib else None}
    return out


def format_summary(stats: dict) -> list[str]:
    """Console lines of a sleep summary."""
    def fmt(v, unit=" min"):
        return "n/a" if v is None else f"{v:g}{unit}"
    lines = [f"sleep    TIB {fmt(stats['time_in_bed_min'])}   TST "
             f"{fmt(stats['total_sleep_time_min'])}   efficiency "
             f"{fmt(stats['sleep_efficiency_pct'], ' %')}   onset latency "
             f"{fmt(stats['sleep_onset_latency_min'])}   WASO {fmt(stats['waso_min'])}"]
    stages = "   ".join(f"{name} {fmt(v['minutes'])} ({fmt(v['percent_of_tib'], ' %')})"
                        for name, v in stats["stages"].items())
    lines.append(f"stages   {stages}")
    if stats.get("note"):
        lines.append(f"         {stats['note']}")
    return lines
