"""Synthetic HMC: one night of scored sleep stages (_sleepscoring.txt) per subject."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dataset_maker import prepare_HMC
from dataset_maker import synthetic_signals as sig
from dataset_maker.synthetic import base


def hmc_plan(scale):
    # Stage blocks (in 30 s epochs) of one night's cycle; every stage appears more than once.
    cycle = [("W", 5), ("N1", 3), ("N2", 6), ("N3", 6), ("N2", 3), ("R", 5), ("N1", 2), ("N2", 4),
             ("N3", 3), ("R", 4), ("W", 3)]
    return (base.scaled_count(8, scale, 5),
            [(stage, max(1, int(round(n * scale)))) for stage, n in cycle])


def _hmc_transients(scalp, rng, x, stage, a, b, subject):
    fs = scalp.fs
    if stage == "W":
        scalp.blinks(rng, a, b, 15)
        scalp.saccades(rng, a, b, 10)
    elif stage == "N1":  # slow rolling eye movements, vertex sharp waves
        for onset in base.poisson_times(rng, a, b - 4, 4):
            sig.add_transient(scalp.heog[None], fs, onset, sig.slow_eye_roll(fs, 4.0),
                              [rng.uniform(60, 120)])
        for onset in base.poisson_times(rng, a, b - 1, 5):
            sig.add_transient(x, fs, onset, sig.sharp_wave(fs, 0.1),
                              scalp.maps["central"] * rng.uniform(60, 100))
    elif stage == "N2":
        base.add_spindles_and_k(scalp, rng, x, a, b, subject)
    elif stage == "R":  # sawtooth waves and bursts of rapid eye movements
        for onset in base.poisson_times(rng, a, b - 3, 6):
            wave = sig.sawtooth_train(fs, rng.uniform(2.2, 3.2), rng.uniform(2.0, 3.0))
            sig.add_transient(x, fs, onset, wave, scalp.maps["central"] * rng.uniform(40, 60))
        scalp.saccades(rng, a, b, 40, amp=(80, 180), hold=(0.15, 0.4))


def make_hmc(root: Path, seed: int, scale: float) -> list[base.Written]:
    n_subjects, cycle = hmc_plan(scale)
    electrodes = ["F4", "C4", "O2", "C3", "M1", "M2"]
    written = []
    for k in tqdm(range(n_subjects), desc="HMC", leave=False, disable=None):
        rng = base.stream(seed, "HMC", k)
        subject = sig.Subject.draw(rng)
        stages = [stage for stage, n in cycle for _ in range(n + int(rng.integers(0, 2)))]
        epoch = base.EPOCH_SECONDS
        seconds = epoch * len(stages)
        scalp = base.Scalp(electrodes, base.HMC_HZ, seconds * base.HMC_HZ)
        x = scalp.render(rng, subject, [(epoch * i, epoch * (i + 1), base.STATES[s])
                                        for i, s in enumerate(stages)])
        emg = np.zeros(scalp.n)
        for i, stage in enumerate(stages):
            _hmc_transients(scalp, rng, x, stage, epoch * i, epoch * (i + 1), subject)
            tone = sig.band_noise(rng, base.HMC_HZ, 1, float(epoch), 15, 100, taper=False)[0]
            fs = base.HMC_HZ
            emg[epoch * i * fs: epoch * (i + 1) * fs] = base.CHIN_EMG_UV[stage] * tone
        x = scalp.finish(rng, subject, x, base.MAINS_HZ["HMC"])
        e = {n: x[i] for i, n in enumerate(electrodes)}
        noise = lambda: 3 * rng.standard_normal(scalp.n)  # noqa: E731
        signals = [("EEG F4-M1", e["F4"] - e["M1"], "uV"), ("EEG C4-M1", e["C4"] - e["M1"], "uV"),
                   ("EEG O2-M1", e["O2"] - e["M1"], "uV"), ("EEG C3-M2", e["C3"] - e["M2"], "uV"),
                   ("EMG chin", emg, "uV"),
                   ("EOG E1-M2", 0.6 * scalp.veog - scalp.heog + noise(), "uV"),
                   ("EOG E2-M2", 0.6 * scalp.veog + scalp.heog + noise(), "uV"),
                   ("ECG", sig.ecg_mv(rng, base.HMC_HZ, scalp.n), "mV")]
        start = base.start_time(rng).replace(hour=22)
        path = root / f"SN{k + 1:03d}.edf"
        written.append(base.Written(path, base.write_edf(path, signals, base.HMC_HZ, start)))
        base.write_text(root / f"SN{k + 1:03d}_sleepscoring.txt", _sleep_scoring(stages, start))
    return written


def _sleep_scoring(stages: list[str], start: dt.datetime) -> str:
    def row(onset, duration, text):
        when = start + dt.timedelta(seconds=onset)
        return f"{when:%Y-%m-%d}, {when:%H:%M:%S}, {onset}, {duration}, {text}, "

    rows = ["Date, Time, Recording onset, Duration, Annotation, Linked channel",
            row(0, 0, "Lights off")]
    epoch, prefix = base.EPOCH_SECONDS, prepare_HMC.STAGE_PREFIX
    rows += [row(epoch * i, epoch, f"{prefix}{s}") for i, s in enumerate(stages)]
    rows.append(row(epoch * len(stages), 0, "Lights on"))
    return "\n".join(rows) + "\n"
