"""Synthetic TUH pretraining corpus: mixed states, rates and channel sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from dataset_maker import synthetic_signals as sig
from dataset_maker.synthetic import base
from dataset_maker.synthetic.tuab import tuab_plan
from dataset_maker.synthetic.tuev import tuev_plan


def pretrain_plan(scale):
    return base.scaled_count(10, scale, 4), base.scaled_seconds(150, scale, 70, step=10)


def make_tuh_pretrain(root: Path, seed: int, scale: float) -> list[base.Written]:
    """A mixed corpus (awake, drowsy, slowing, light sleep) with varied rates and channel sets;
    the first recordings belong to downstream subjects (what --exclude_subjects must drop), and
    one extra recording (a later session of the last subject) uses the linked-ear (-LE) montage,
    which must be skipped."""
    n_recordings, base_seconds = pretrain_plan(scale)
    reused = [base.tuh_subject_id(base.SUBJECT_BASE["TUAB"] + tuab_plan(scale)[0] - 1),
              base.tuh_subject_id(base.SUBJECT_BASE["TUEV"] + tuev_plan(scale)[0] - 1),
              base.tuh_subject_id(base.SUBJECT_BASE["TUSL"])]
    rates = [base.TUH_HZ, base.TUH_HZ, 256, base.TUH_HZ, 400]
    written = []
    for k in tqdm(range(n_recordings + 1), desc="TUH_pretrain", leave=False, disable=None):
        rng = base.stream(seed, "TUH_pretrain", k)
        subject = sig.Subject.draw(rng)
        is_le = k == n_recordings  # a later session of the previous subject, linked-ear montage
        number = k - 1 if is_le else k
        sid = (reused[number] if number < len(reused)
               else base.tuh_subject_id(base.SUBJECT_BASE["TUH_pretrain"] + number))
        fs = rates[k % len(rates)]
        seconds = base_seconds + 10 * int(rng.integers(0, 4))
        cuts = np.r_[0, np.sort(rng.choice(np.arange(20, seconds - 10, 10), 3, replace=False)),
                     seconds]
        kinds = rng.choice(["normal", "N1", "abnormal", "N2"], len(cuts) - 1)
        states = [base.STATES[s] for s in kinds]
        plan = list(zip(cuts[:-1], cuts[1:], states))

        def spindles(scalp, x):
            for a, b, state in plan:
                if state is base.STATES["N2"]:
                    base.add_spindles_and_k(scalp, rng, x, a, b, subject)

        with_t1t2 = k % 4 != 3  # older TUH files lack T1/T2
        montage, suffix = ("02_tcp_le", "-LE") if is_le else ("01_tcp_ar", "-REF")
        path = (root / "edf" / f"{k // 100:03d}" / sid / f"s{k + 1:03d}_2015" / montage
                / f"{sid}_s{k + 1:03d}_t000.edf")
        written.append(base.write_tuh_recording(path, rng, subject, "TUH_pretrain", seconds, plan,
                                                fs, suffix, with_t1t2, extra=spindles))
    return written
