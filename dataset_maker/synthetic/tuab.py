"""Synthetic TUAB: a normal and an abnormal (focal slowing) session per subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_maker import prepare_TUAB
from dataset_maker import synthetic_signals as sig
from dataset_maker.synthetic import base


def tuab_plan(scale):
    n = base.scaled_count(12, scale, 5)
    step = prepare_TUAB.WINDOW_SECONDS
    return n, max(1, round(n / 3)), base.scaled_seconds(120, scale, 20, step=step)


def make_tuab(root: Path, seed: int, scale: float) -> list[base.Written]:
    """Every subject has a normal and an abnormal session, so each split holds both classes."""
    n_subjects, n_eval, seconds = tuab_plan(scale)
    written = []
    for k, rng, subject, sid in base.tuh_subjects(seed, "TUAB", n_subjects):
        split = "eval" if k >= n_subjects - n_eval else "train"
        for session, label in enumerate(rng.permutation(list(prepare_TUAB.LABEL_OF_FOLDER)),
                                        start=1):
            path = root / split / label / "01_tcp_ar" / f"{sid}_s{session:03d}_t000.edf"
            written.append(write_tuab_recording(path, label, seconds, rng, subject))
    return written


def write_tuab_recording(path: Path, label: str, seconds: float, rng: np.random.Generator,
                         subject: sig.Subject) -> base.Written:
    """One TUAB-style EDF (23 TCP electrodes and an EKG lead at 250 Hz) of a normal or abnormal
    brain state; also what bench/bench_preprocess.py feeds the prepare script."""
    state = dict(base.STATES[label])
    if label == "abnormal":  # focal emphasis of the slowing on a random side
        state["tilt"] = {"delta": rng.uniform(-0.6, 0.6)}
    return base.write_tuh_recording(path, rng, subject, "TUAB", seconds, [(0, seconds, state)])
