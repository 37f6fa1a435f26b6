"""Synthetic EEGMAT (Workload): a rest and a mental-arithmetic recording per subject."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from dataset_maker import synthetic_signals as sig
from dataset_maker.synthetic import base


def make_workload(root: Path, seed: int, scale: float) -> list[base.Written]:
    """EEGMAT: SubjectNN_1 (rest, 60-90 s) and SubjectNN_2 (mental arithmetic, 62 s)."""
    electrodes = base.EEGMAT_ELECTRODES + ["A1", "A2"]
    written = []
    n_subjects = base.scaled_count(8, scale, 5)
    for k in tqdm(range(n_subjects), desc="Workload", leave=False, disable=None):
        subject = sig.Subject.draw(base.stream(seed, "Workload", k))
        for part, (state, seconds) in enumerate([("rest", None), ("arithmetic", 62)], start=1):
            rng = base.stream(seed, "Workload", k, part)
            seconds = seconds or int(rng.integers(60, 91))
            scalp = base.Scalp(electrodes, base.EEGMAT_HZ, seconds * base.EEGMAT_HZ)
            x = scalp.render(rng, subject, [(0, seconds, base.STATES[state])])
            scalp.blinks(rng, 0, seconds, 12)
            scalp.muscle(rng, x, 0, seconds, 2 if state == "arithmetic" else 1)
            x = scalp.finish(rng, subject, x, base.MAINS_HZ["Workload"])
            signals = [(f"EEG {n}", x[i], "uV") for i, n in enumerate(base.EEGMAT_ELECTRODES)]
            signals += [("EEG A2-A1", x[-1] - x[-2], "uV"),
                        ("ECG ECG", sig.ecg_mv(rng, base.EEGMAT_HZ, scalp.n), "mV")]
            path = root / f"Subject{k:02d}_{part}.edf"
            length_s = base.write_edf(path, signals, base.EEGMAT_HZ, base.start_time(rng))
            written.append(base.Written(path, length_s))
    return written
