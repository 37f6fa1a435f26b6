"""Agreement with labels a recording comes with: a companion hypnogram (Sleep-EDF's
*-Hypnogram.edf beside *-PSG.edf), the file's own annotations (--label_map), an annotation
file MNE reads, or a CSV / BIDS events.tsv of onset, duration and label. Per recording:
balanced accuracy, Cohen's kappa and the confusion matrix over the windows both scored and
labelled, as sleep tools report them."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tasks import Task
from utils import UserError

# How sleep stages are spelled in hypnograms (Sleep-EDF, HMC, AASM letters), by the stage of
# a staging task they mean; R&K stage 4 is AASM N3.
STAGE_SPELLINGS = {
    "wake": ("sleep stage w", "w", "wake", "stage w"),
    "nrem-1": ("sleep stage 1", "sleep stage n1", "n1", "stage 1", "s1"),
    "nrem-2": ("sleep stage 2", "sleep stage n2", "n2", "stage 2", "s2"),
    "nrem-3": ("sleep stage 3", "sleep stage 4", "sleep stage n3", "n3", "n4", "stage 3",
               "stage 4", "s3", "s4"),
    "rem": ("sleep stage r", "r", "rem", "stage r"),
}


def parse_label_map(text: str | None, task: Task) -> dict:
    """'--label_map "Sleep stage W=Wake,T1=arithmetic"' -> {description: label index}."""
    if not text:
        return {}
    out = {}
    for item in text.split(","):
        source, sep, label = item.partition("=")
        if not sep or not source.strip() or not label.strip():
            raise UserError(f"--label_map {item!r}: expected DESCRIPTION=LABEL")
        names = {n.lower(): i for i, n in enumerate(task.label_names)}
        if label.strip().lower() not in names:
            raise UserError(f"--label_map {item!r}: {label.strip()!r} is not a {task.name} "
                            f"label ({', '.join(task.label_names)})")
        out[source.strip().lower()] = names[label.strip().lower()]
    return out


def default_label_map(task: Task) -> dict:
    """The task's own label names, and the usual spellings of sleep stages for a staging
    task."""
    out = {name.lower(): i for i, name in enumerate(task.label_names)}
    for i, name in enumerate(task.label_names):
        stage = stage_of(name)
        for spelling in STAGE_SPELLINGS.get(stage, ()) if stage else ():
            out.setdefault(spelling, i)
    return out


def stage_of(name: str) -> str | None:
    """The sleep stage a class name spells ('W', 'N1', 'NREM-1', 'REM' ...), or None."""
    name = name.strip().lower()
    return next((stage for stage, spellings in STAGE_SPELLINGS.items()
                 if name == stage or name in spellings), None)


def companion(path) -> Path | None:
    """Sleep-EDF's hypnogram of a PSG file: same subject and night (first 6 characters),
    '*-Hypnogram.edf' (SC4001E0-PSG.edf -> SC4001EC-Hypnogram.edf)."""
    path = Path(path)
    if not path.name.upper().endswith("-PSG.EDF"):
        return None
    found = sorted(path.parent.glob(f"{path.name[:6]}*-Hypnogram.edf"))
    return found[0] if found else None


def read_labels(path):
    """mne.Annotations of a label file: CSV / TSV with onset, duration and label (or
    description / trial_type / stage) columns, or any annotation file MNE reads."""
    import mne
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--labels {path}: no such file")
    if path.suffix.lower() in (".csv", ".tsv"):
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv"
                                       else ","))
        column = next((c for c in ("label", "description", "trial_type", "stage")
                       if rows and c in rows[0]), None)
        if column is None or "onset" not in rows[0]:
            raise UserError(f"--labels {path}: needs columns onset, duration and label")
        try:
            onsets = [float(r["onset"]) for r in rows]
            durations = [float(r.get("duration") or 0) for r in rows]
        except ValueError as err:
            raise UserError(f"--labels {path}: {err}") from None
        if not all(np.isfinite(onsets + durations)) or min(durations + [0]) < 0:
            raise UserError(f"--labels {path}: onsets and durations must be finite, "
                            "durations not negative")
        return mne.Annotations(onsets, durations, [r[column] for r in rows])
    try:
        return mne.read_annotations(path)
    except Exception as err:  # noqa: BLE001 - every reader's failure is one line naming the file
        raise UserError(f"--labels {path}: not an annotation file MNE reads "
                        f"({type(err).__name__}: {err})") from None


def window_truth(annotations, table, label_map: dict) -> np.ndarray:
    """The known label of each window (-1 when none): the mapped annotation covering the
    window's centre."""
    truth = np.full(len(table), -1)
    centres = (table["start_s"] + table["duration_s"] / 2).to_numpy()
    for onset, duration, text in zip(annotations.onset, annotations.duration,
                                     annotations.description):
        label = label_map.get(str(text).strip().lower())
        if label is None or duration <= 0:
            continue
        truth[(centres >= onset) & (centres < onset + duration)] = label
    return truth


def agreement(task: Task, truth: np.ndarray, table) -> dict:
    """Balanced accuracy, Cohen's kappa and confusion matrix (rows: known labels, columns:
    answers, in the task's label order) over the windows both labelled and answered."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    names = {n: i for i, n in enumerate(task.label_names)}
    predicted = np.array([names.get(n, -1) for n in table["label_name"].fillna("")])
    both = (truth >= 0) & (predicted >= 0)
    out = {"n": int(both.sum()), "labelled": int((truth >= 0).sum()),
           "labels": list(task.label_names), "balanced_accuracy": None, "kappa": None}
    if not both.any():
        out["note"] = "no window is both labelled and answered"
        return out
    y, p = truth[both], predicted[both]
    matrix = confusion_matrix(y, p, labels=range(task.n_classes))
    out["confusion_matrix"] = matrix.tolist()
    present = np.unique(y)
    # balanced accuracy (sklearn's definition): mean recall over the classes in the labels
    out["balanced_accuracy"] = float(np.mean(matrix.diagonal()[present]
                                             / matrix.sum(axis=1)[present]))
    if len(present) < 2 and len(np.unique(p)) < 2:
        out["note"] = ("kappa undefined: one class in both labels and answers (no chance "
                       "agreement to correct)")
    else:
        out["kappa"] = float(cohen_kappa_score(y, p, labels=range(task.n_classes)))
    if len(present) < 2:
        out["note"] = (out.get("note", "") + "; " if out.get("note") else "") + \
            f"the labels hold one class only ({task.label_names[present[0]]}): balanced " \
            "accuracy is that class's recall"
    return out


def format_agreement(stats: dict) -> str:
    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"
    line = (f"agree    {stats['n']} windows: balanced accuracy "
            f"{fmt(stats['balanced_accuracy'])}, Cohen's kappa {fmt(stats['kappa'])}")
    if stats.get("confusion_matrix"):
        line += f", confusion (rows known, columns answered; {', '.join(stats['labels'])}) " \
            f"{stats['confusion_matrix']}"
    return line + (f"\n         {stats['note']}" if stats.get("note") else "")
