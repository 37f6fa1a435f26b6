"""Synthetic TUEV: six kinds of annotated events (.rec rows on TCP channels) per subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_maker import prepare_TUEV
from dataset_maker import synthetic_signals as sig
from dataset_maker.synthetic import base

# TCP channel numbers over the left (-1) and right (1) hemisphere.
_TCP_SIDE = {-1: [0, 1, 2, 3, 8, 9, 14, 15, 16, 17], 1: [4, 5, 6, 7, 12, 13, 18, 19, 20, 21]}


def tuev_plan(scale):
    n = base.scaled_count(12, scale, 5)
    return n, max(1, round(n / 3)), base.scaled_count(3, scale, 1)


def _tuev_event(scalp, rng, x, label, onset):
    """Draw one event episode around the annotated second [onset, onset + 1); returns .rec rows'
    channel numbers (where the event shows)."""
    fs = scalp.fs
    if label == 1:  # spike-and-wave: 3 Hz complexes, frontal-dominant, generalised
        base.add_periodic(scalp, rng, x, onset - 1.2, 3.4, rng.uniform(150, 230),
                          scalp.maps["broad"] * (0.7 + 0.3 * scalp.maps["frontocentral"]),
                          None, "spike_wave")
        return list(rng.choice([0, 4, 14, 18, 10, 11], 2, replace=False))
    if label == 2:  # generalised periodic discharges ~1 Hz
        base.add_periodic(scalp, rng, x, onset - 1.8, 4.6, rng.uniform(120, 200),
                          scalp.maps["broad"], (0.8, 1.1), "periodic")
        return list(rng.choice(base.TCP_CHANNELS, 2, replace=False))
    if label == 3:  # lateralised periodic discharges on one hemisphere
        side = rng.choice([-1, 1])
        base.add_periodic(scalp, rng, x, onset - 1.8, 4.6, rng.uniform(130, 220),
                          scalp.lateral(side, 0.15), (1.1, 1.5), "periodic")
        return list(rng.choice(_TCP_SIDE[side], 2, replace=False))
    if label == 4:  # eye movements: lateral saccades back and forth, plus a blink
        t = onset - 1.3
        for _ in range(int(rng.integers(2, 4))):
            hold = rng.uniform(0.4, 0.9)
            sig.add_transient(scalp.heog[None], fs, t, sig.saccade(fs, hold),
                              [rng.choice([-1, 1]) * rng.uniform(150, 250)])
            t += hold + rng.uniform(0.2, 0.4)
        sig.add_transient(scalp.veog[None], fs, onset + rng.uniform(-1, 1), sig.blink(fs),
                          [rng.uniform(100, 180)])
        return [0, 4]
    if label == 5:  # artefact: muscle burst plus an electrode pop
        burst = sig.band_noise(rng, fs, len(scalp.names), 3.0, 20, 100)
        sig.add_transient(x, fs, onset - 1.0, burst, scalp.maps["temporal"] * rng.uniform(50, 90))
        pop = np.exp(-np.arange(int(1.5 * fs)) / (0.25 * fs))
        gains = np.zeros(len(scalp.names))
        gains[rng.integers(len(scalp.names))] = rng.choice([-1, 1]) * rng.uniform(150, 300)
        sig.add_transient(x, fs, onset + rng.uniform(-0.5, 0.5), pop, gains)
        return list(rng.choice(base.TCP_CHANNELS, 1))
    return list(rng.choice(base.TCP_CHANNELS, int(rng.integers(1, 3)), replace=False))  # background


def make_tuev(root: Path, seed: int, scale: float) -> list[base.Written]:
    """Events of all six classes in every subject, 8-10 s apart so the 5 s windows never overlap."""
    n_subjects, n_eval, per_class = tuev_plan(scale)
    written = []
    for k, rng, subject, sid in base.tuh_subjects(seed, "TUEV", n_subjects):
        labels = rng.permutation(np.repeat(np.arange(1, prepare_TUEV.N_LABELS + 1), per_class))
        onsets = 5.0 + np.cumsum(np.r_[0, rng.integers(8, 11, len(labels) - 1)])
        seconds = int(onsets[-1] + 6)
        rows = []

        def events(scalp, x):
            for label, onset in zip(labels, onsets):
                for channel in sorted(_tuev_event(scalp, rng, x, int(label), float(onset))):
                    rows.append(f"{channel},{onset:.4f},{onset + base.EVENT_SECONDS:.4f},{label}")

        split = "eval" if k >= n_subjects - n_eval else "train"
        path = root / split / sid / f"{sid}_00000001.edf"
        written.append(base.write_tuh_recording(
            path, rng, subject, "TUEV", seconds, [(0, seconds, base.STATES["normal"])],
            blinks_per_min=0, muscle_per_min=0, extra=events))
        base.write_text(path.with_suffix(".rec"), "\n".join(rows) + "\n")
    return written
