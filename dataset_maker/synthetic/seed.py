"""Synthetic SEED: sessions of 15 film-clip trials (trials.json) per subject."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dataset_maker import prepare_SEED
from dataset_maker import synthetic_signals as sig
from dataset_maker.synthetic import base


def seed_plan(scale):
    """(subjects, sessions per subject, trial seconds floor)."""
    return (base.scaled_count(3, scale, 1), 2 if scale >= 0.5 else 1,
            base.scaled_seconds(16, scale, 8))


def seed_trials(seed: int, scale: float) -> dict:
    """One shortened 15-trial timing for every session (SEED uses one table for all sessions)."""
    rng = base.stream(seed, "SEED", 999)
    trial_floor = seed_plan(scale)[2]
    lengths = trial_floor + rng.integers(0, max(2, trial_floor // 4) + 1, 15)
    gaps = rng.integers(3, 6, 15)
    starts = 4 + np.cumsum(np.r_[0, lengths[:-1] + gaps[:-1]])
    return {"start_s": [int(s) for s in starts], "end_s": [int(s) for s in starts + lengths],
            "labels": list(prepare_SEED.TRIAL_LABELS)}


def make_seed(root: Path, seed: int, scale: float) -> list[base.Written]:
    n_subjects, n_sessions, _ = seed_plan(scale)
    trials = seed_trials(seed, scale)
    seconds = trials["end_s"][-1] + 4
    written = []
    for k in range(n_subjects):
        subject = sig.Subject.draw(base.stream(seed, "SEED", k))
        for session in tqdm(range(n_sessions), desc=f"SEED {k + 1}", leave=False, disable=None):
            rng = base.stream(seed, "SEED", k, session + 1)
            plan, t = [], 0
            for a, b, label in zip(trials["start_s"], trials["end_s"], trials["labels"]):
                plan += [(t, a, base.STATES["neutral"]),
                         (a, b, base.STATES[prepare_SEED.TRIAL_LABEL_NAMES[label]])]
                t = b
            plan.append((t, seconds, base.STATES["neutral"]))
            scalp = base.Scalp(base.SEED_CHANNELS, base.SEED_HZ, seconds * base.SEED_HZ)
            x = scalp.render(rng, subject, plan)
            scalp.blinks(rng, 0, seconds, 12)
            scalp.saccades(rng, 0, seconds, 6)
            scalp.muscle(rng, x, 0, seconds, 1)
            x = scalp.finish(rng, subject, x, base.MAINS_HZ["SEED"])
            signals = [(n, x[i], "uV") for i, n in enumerate(base.SEED_CHANNELS)]
            signals += [("VEO", scalp.veog + 3 * rng.standard_normal(scalp.n), "uV"),
                        ("HEO", scalp.heog + 3 * rng.standard_normal(scalp.n), "uV")]
            start = dt.datetime(2013, 10, 27) + dt.timedelta(days=7 * session + 30 * k, hours=14)
            path = root / f"{k + 1}_{start:%Y%m%d}.edf"
            written.append(base.Written(path, base.write_edf(path, signals, base.SEED_HZ, start)))
    base.write_text(root / "trials.json", json.dumps(trials, indent=1) + "\n")
    return written
