"""Synthetic TUAB: a normal and an abnormal (focal slowing) session per subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from dataset_maker import prepare_TUAB
from dataset_maker import synthetic_signals as sig
from dataset_maker.synthetic.base import (
    MAINS_HZ,
    STATES,
    SUBJECT_BASE,
    TUH_ELECTRODES,
    TUH_HZ,
    Written,
    scaled_count,
    scaled_seconds,
    start_time,
    stream,
    tuh_recording,
    tuh_signals,
    tuh_subject_id,
    write_edf,
)


def tuab_plan(scale):
    n = scaled_count(12, scale, 5)
    return n, max(1, round(n / 3)), scaled_seconds(120, scale, 20, step=prepare_TUAB.WINDOW_SECONDS)


def make_tuab(root: Path, seed: int, scale: float) -> list[Written]:
    """Every subject has a normal and an abnormal session, so each split holds both classes."""
    n_subjects, n_eval, seconds = tuab_plan(scale)
    written = []
    for k in tqdm(range(n_subjects), desc="TUAB", leave=False):
        rng = stream(seed, "TUAB", k)
        subject, sid = sig.Subject.draw(rng), tuh_subject_id(SUBJECT_BASE["TUAB"] + k)
        split = "eval" if k >= n_subjects - n_eval else "train"
        for session, label in enumerate(rng.permutation(list(prepare_TUAB.LABEL_OF_FOLDER)),
                                        start=1):
            path = root / split / label / "01_tcp_ar" / f"{sid}_s{session:03d}_t000.edf"
            written.append(write_tuab_recording(path, label, seconds, rng, subject))
    return written


def write_tuab_recording(path: Path, label: str, seconds: float, rng: np.random.Generator,
                         subject: sig.Subject) -> Written:
    """One TUAB-style EDF (23 TCP electrodes and an EKG lead at 250 Hz) of a normal or abnormal
    brain state; also what bench/bench_preprocess.py feeds the prepare script."""
    state = dict(STATES[label])
    if label == "abnormal":  # focal emphasis of the slowing on a random side
        state["tilt"] = {"delta": rng.uniform(-0.6, 0.6)}
    x, ecg = tuh_recording(rng, subject, TUH_HZ, seconds, [(0, seconds, state)],
                            MAINS_HZ["TUAB"])
    return Written(path, write_edf(path, tuh_signals(x, TUH_ELECTRODES, ecg), TUH_HZ,
                                   start_time(rng)))
