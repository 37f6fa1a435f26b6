"""The answers as annotations the usual tools open: an EDF+ annotation file (EDFbrowser, any
clinical viewer, mne.read_annotations), BIDS-derivatives *_events.tsv, and MNE's own
annotations (.fif, for raw.set_annotations and raw.plot()).

One annotation per answered window: onset and duration of the window, its answer as the
description ("<label> (uncertain)" under --abstain); QC-flagged windows also get a
"BAD_qc_<flags>" annotation, which MNE's epoching rejects by default.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from utils import atomic_write

UNCERTAIN_SUFFIX = " (uncertain)"
BAD_QC_PREFIX = "BAD_qc_"
NO_ANSWER = "no answer"


def answer_annotations(table):
    """mne.Annotations of a windows DataFrame (onsets from the recording's start)."""
    import mne
    onsets, durations, texts = [], [], []
    for row in table.itertuples(index=False):
        answered = not all(np.isnan(v) for k, v in row._asdict().items()
                           if k.startswith("prob_"))
        if answered:
            text = row.label_name or NO_ANSWER
            onsets.append(row.start_s)
            durations.append(row.duration_s)
            texts.append(text + (UNCERTAIN_SUFFIX if row.uncertain else ""))
        if row.qc_flags:
            onsets.append(row.start_s)
            durations.append(row.duration_s)
            texts.append(BAD_QC_PREFIX + row.qc_flags.replace(";", "_"))
    return mne.Annotations(onsets, durations, texts)


def bids_stem(name: str) -> str:
    """'sub-01_task-rest_eeg.edf' -> 'sub-01_task-rest' (the entities a derivative keeps)."""
    stem = name.split(".")[0]
    return stem[:-4] if stem.endswith("_eeg") else stem


def write_edf_annotations(path: Path, annotations) -> Path:
    """An EDF+ file holding only annotations, as Sleep-EDF's hypnograms are."""
    import edfio

    items = [edfio.EdfAnnotation(float(o), float(d) if d > 0 else None, str(t))
             for o, d, t in zip(annotations.onset, annotations.duration,
                                annotations.description)]
    return atomic_write(path, edfio.Edf([], annotations=items).write)


def write_events_tsv(path: Path, table) -> Path:
    """BIDS events: onset, duration, trial_type (the answer), then the answer's probability,
    whether it is uncertain and its QC flags (BIDS allows extra columns)."""
    prob_columns = [c for c in table.columns if c.startswith("prob_")]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f, delimiter="\t", lineterminator="\n")
            out.writerow(["onset", "duration", "trial_type", "probability", "uncertain",
                          "qc_flags"])
            for row in table.itertuples(index=False):
                probs = [getattr(row, c) for c in prob_columns]
                if all(np.isnan(probs)):
                    label, p = "n/a", "n/a"
                else:
                    label, p = row.label_name or NO_ANSWER, f"{np.nanmax(probs):.4f}"
                out.writerow([f"{row.start_s:g}", f"{row.duration_s:g}", label, p,
                              "1" if row.uncertain else "0", row.qc_flags or "n/a"])
    return atomic_write(path, write)


def write_all(folder: Path, name: str, result) -> list[str]:
    """The three annotation files of a recording; their names."""
    annotations = answer_annotations(result.windows)
    stem = bids_stem(name)
    edf = f"{stem}_answers.edf"
    tsv = f"{stem}_desc-neurolm_events.tsv"
    fif = f"{stem}_answers-annot.fif"
    write_edf_annotations(folder / edf, annotations)
    write_events_tsv(folder / tsv, result.windows)
    write_annotations_fif(folder / fif, annotations)
    return [edf, tsv, fif]


def write_annotations_fif(path: Path, annotations) -> Path:
    def write(tmp: Path) -> None:
        named = tmp.with_name(tmp.name + "-annot.fif")   # MNE insists on the -annot.fif ending
        annotations.save(named, overwrite=True, verbose="ERROR")
        named.replace(tmp)
    return atomic_write(path, write)
