"""What every synthetic dataset maker shares: per-recording random streams, sizes, subject ids,
the EDF writer, the brain states' rhythm amplitudes and the scalp that renders them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import edfio
import numpy as np
from tqdm import tqdm

from dataset_maker import (
    PREPARE_SCRIPTS,
    prepare_HMC,
    prepare_SEED,
    prepare_TUH_pretrain,
    prepare_workload,
    tuh,
)
from dataset_maker import synthetic_signals as sig
from dataset_maker.files import atomic_write
from tasks import BUILTIN_TASKS

DATASETS = tuple(PREPARE_SCRIPTS)

# The dataset facts (channels, labels, mains, windows) are the tasks' (tasks/builtin.py) and the
# prepare scripts'; this module only adds what a recording needs besides them.
MAINS_HZ = {name: BUILTIN_TASKS[name].mains_hz for name in DATASETS if name in BUILTIN_TASKS}
MAINS_HZ["TUH_pretrain"] = prepare_TUH_pretrain.SIGNAL.mains_hz

# Native sampling rates: TUH 250 Hz (one pretraining file at 256 and one at 400), HMC 256 Hz,
# EEGMAT 500 Hz. SEED is recorded at 1000 Hz; 500 Hz here halves its size (66 channels) and
# still exercises resampling.
TUH_HZ, HMC_HZ, SEED_HZ = 250, 256, 500
EEGMAT_HZ = int(prepare_workload.SIGNAL.expected_sfreq)

TUH_ELECTRODES = list(tuh.TUH_CHANNELS)  # FP1 ... PZ T1 T2, the TCP "-REF" channels
TCP_CHANNELS = 22  # TUEV .rec channel numbers index the 22-channel bipolar (TCP) montage
HMC_EEG = [f"EEG {c}-{ref}" for c, ref in prepare_HMC.REFERENCES.items()]
SEED_CHANNELS = [*prepare_SEED.CHANNELS, "M1", "M2"]  # the recordings also hold the mastoids
EEGMAT_ELECTRODES = [c.capitalize() for c in prepare_workload.CHANNELS]  # EEGMAT spells Fp1, Fz
EVENT_SECONDS = 1  # a TUEV annotation marks one second
EPOCH_SECONDS = prepare_HMC.WINDOW_SECONDS  # one scored sleep epoch

# Rhythm amplitudes (microvolts RMS) of each brain state; see synthetic_signals.RHYTHMS.
STATES = {
    "normal": dict(bg=9, delta=4, theta=4, alpha=18, beta=5, gamma=1.5),
    "abnormal": dict(bg=12, delta=38, theta=16, alpha=4, beta=3, gamma=1),
    "slowing": dict(bg=11, delta=45, theta=9, alpha=6, beta=3, gamma=1),
    "seizure_bg": dict(bg=9, delta=6, theta=6, alpha=5, beta=4, gamma=2),
    "rest": dict(bg=9, delta=4, theta=4, fm_theta=3, alpha=20, beta=5, gamma=1.5),
    "arithmetic": dict(bg=9, delta=4, theta=5, fm_theta=18, alpha=6, beta=10, gamma=4),
    # SEED's positive and negative differ in the balance of fast (beta, gamma) and slow (theta)
    # activity and in its side; the contrast is wide because a tiny frozen tokenizer keeps these
    # classes' differences worst of all tasks (README: "What to expect")
    "positive": dict(bg=8, delta=4, theta=4, alpha=7, beta=16, gamma=14,
                     tilt=dict(alpha=0.7, beta=-0.6, gamma=-0.5)),
    "neutral": dict(bg=8, delta=4, theta=4, alpha=20, beta=5, gamma=2),
    "negative": dict(bg=8, delta=8, theta=10, fm_theta=20, alpha=7, beta=5, gamma=2,
                     tilt=dict(alpha=-0.7, beta=0.6)),
    "W": dict(bg=8, delta=4, theta=4, alpha=20, beta=10, gamma=3),
    "N1": dict(bg=9, delta=8, theta=22, alpha=4, beta=4, gamma=1),
    "N2": dict(bg=10, delta=18, theta=10, alpha=3, beta=3, gamma=1),
    "N3": dict(bg=12, delta=70, theta=8, alpha=2, beta=2, gamma=0.5),
    "R": dict(bg=8, delta=6, theta=10, alpha=6, beta=7, gamma=2),
}
CHIN_EMG_UV = {"W": 25, "N1": 12, "N2": 8, "N3": 6, "R": 2}  # muscle tone falls with depth


@dataclass
class Written:
    path: Path
    seconds: float


def stream(seed: int, dataset: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, DATASETS.index(dataset), *keys])


def scaled_count(base: int, scale: float, floor: int) -> int:
    return max(floor, int(round(base * scale)))


def scaled_seconds(base: float, scale: float, floor: float, step: int = 1) -> int:
    return int(max(floor, step * round(base * scale / step)))


def tuh_subject_id(number: int) -> str:
    """TUH-style 8-letter subject id: 0 -> aaaaaaaa, 1 -> aaaaaaab, ..."""
    letters = []
    for _ in range(8):
        number, rest = divmod(number, 26)
        letters.append(chr(ord("a") + rest))
    return "".join(reversed(letters))


# Disjoint blocks of subject numbers per TUH dataset; the pretraining corpus reuses a few
# downstream subjects, as the real TUEG contains TUAB/TUEV/TUSL patients.
SUBJECT_BASE = {"TUAB": 1000, "TUEV": 2000, "TUSL": 3000, "TUH_pretrain": 4000}


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="ascii"))


def _physical_range(data: np.ndarray, step: float) -> tuple[float, float]:
    # Symmetric, rounded range with headroom, like clinical amplifiers' fixed ranges.
    peak = float(np.max(np.abs(data))) * 1.25 + step
    bound = step * np.ceil(peak / step)
    return -bound, bound


def write_edf(path: Path, signals: list[tuple[str, np.ndarray, str]], fs: float,
              start: dt.datetime) -> float:
    """Write (label, data, unit) signals of equal length as EDF with 1 s records; returns
    seconds."""
    signals_out = []
    for label, data, unit in signals:
        step = 100.0 if unit == "uV" else 1.0
        signals_out.append(edfio.EdfSignal(
            np.asarray(data, dtype=np.float64), fs, label=label, physical_dimension=unit,
            physical_range=_physical_range(data, step),
            transducer_type="AgAgCl electrode" if label.startswith("EEG") else ""))
    edf = edfio.Edf(signals_out, patient=edfio.Patient(code="X"),
                    recording=edfio.Recording(startdate=start.date()), starttime=start.time(),
                    data_record_duration=1)
    atomic_write(path, lambda tmp: edf.write(tmp))
    return signals[0][1].shape[-1] / fs


def start_time(rng: np.random.Generator) -> dt.datetime:
    return dt.datetime(2010, 1, 1, 8, 0, 0) + dt.timedelta(
        days=int(rng.integers(0, 3000)), seconds=int(rng.integers(0, 36000)))


class Scalp:
    """Electrode geometry of one recording and the helpers that add activity to it."""

    def __init__(self, electrodes: list[str], fs: float, n_samples: int):
        self.names, self.fs, self.n = list(electrodes), fs, n_samples
        self.xyz = sig.electrode_xyz(self.names)
        self.maps = sig.scalp_maps(self.xyz)
        self.veog = np.zeros(n_samples)  # eye sources, seen by EOG channels and frontal EEG
        self.heog = np.zeros(n_samples)

    def render(self, rng, subject, plan: list[tuple[float, float, dict]]) -> np.ndarray:
        segments = [sig.Segment(int(a * self.fs), int(b * self.fs), state) for a, b, state in plan]
        return sig.render_segments(rng, self.xyz, self.fs, self.n, segments, subject)

    def lateral(self, side: float, sharpness: float = 0.2) -> np.ndarray:
        return sig.sigmoid(side * self.xyz[:, 0] / sharpness)

    def blinks(self, rng, start_s, stop_s, per_min, amp=(80, 160)):
        for onset in poisson_times(rng, start_s, stop_s, per_min):
            sig.add_transient(self.veog[None], self.fs, onset, sig.blink(self.fs),
                              [rng.uniform(*amp)])

    def saccades(self, rng, start_s, stop_s, per_min, amp=(60, 150), hold=(0.3, 1.2)):
        for onset in poisson_times(rng, start_s, stop_s, per_min):
            wave = sig.saccade(self.fs, rng.uniform(*hold))
            sig.add_transient(self.heog[None], self.fs, onset, wave,
                              [rng.choice([-1, 1]) * rng.uniform(*amp)])

    def muscle(self, rng, x, start_s, stop_s, per_min, amp=(20, 60)):
        for onset in poisson_times(rng, start_s, stop_s, per_min):
            dur = rng.uniform(0.5, 2.0)
            burst = sig.band_noise(rng, self.fs, len(self.names), dur, 20, 100)
            sig.add_transient(x, self.fs, onset, burst, self.maps["temporal"] * rng.uniform(*amp))

    def finish(self, rng, subject, x, mains_hz) -> np.ndarray:
        """Add eye activity seen through the scalp and the power-line hum."""
        eye_maps = np.stack([self.maps["eye_vertical"], self.maps["eye_horizontal"]], axis=1)
        x += eye_maps @ np.stack([self.veog, self.heog])
        x += sig.mains(rng, self.fs, len(self.names), self.n, mains_hz, subject.mains_uv)
        return x


def poisson_times(rng, start_s, stop_s, per_min):
    n = rng.poisson(max(stop_s - start_s, 0) * per_min / 60.0)
    return np.sort(rng.uniform(start_s, stop_s, n))


def add_periodic(scalp, rng, x, start_s, dur, amp, gains, period_range, kind):
    if kind == "spike_wave":
        rate, n = rng.uniform(2.7, 3.5), int(dur * scalp.fs)
        wave = np.tile(sig.spike_and_wave(scalp.fs, rate), int(np.ceil(dur * rate)) + 1)[:n]
        wave = wave * np.sin(np.pi * np.arange(n) / n) ** 0.3  # soft onset and offset
    else:
        wave = sig.periodic_discharges(scalp.fs, dur, rng.uniform(*period_range), rng)
    sig.add_transient(x, scalp.fs, start_s, wave, gains * amp)


def tuh_signals(scalp_x, names, ecg_uv, suffix="-REF", with_t1t2=True):
    """TUH channel set: the 21 10-20 electrodes, an EKG lead, then T1/T2 (file order of TUH)."""
    out = [(f"EEG {n}{suffix}", scalp_x[i], "uV") for i, n in enumerate(names)
           if n not in ("T1", "T2")]
    out.append((f"EEG EKG1{suffix}", ecg_uv, "uV"))
    if with_t1t2:
        out += [(f"EEG {n}{suffix}", scalp_x[names.index(n)], "uV") for n in ("T1", "T2")]
    return out


def tuh_subjects(seed: int, dataset: str, n: int):
    """(k, rng, subject, TUH id) of each of the n subjects of a TUH dataset, each subject on
    its own random stream."""
    for k in tqdm(range(n), desc=dataset, leave=False, disable=None):
        rng = stream(seed, dataset, k)
        yield k, rng, sig.Subject.draw(rng), tuh_subject_id(SUBJECT_BASE[dataset] + k)


def write_tuh_recording(path: Path, rng, subject, dataset: str, seconds, plan, fs=TUH_HZ,
                        suffix="-REF", with_t1t2=True, blinks_per_min=8, muscle_per_min=2,
                        extra=None) -> Written:
    """Render a TUH-style referential recording (the electrodes, an EKG lead, T1/T2 unless
    left out) and write it as EDF; `extra(scalp, x)` adds task-specific transients."""
    scalp = Scalp(TUH_ELECTRODES, fs, int(seconds * fs))
    x = scalp.render(rng, subject, plan)
    if blinks_per_min:
        scalp.blinks(rng, 0, seconds, blinks_per_min)
    if muscle_per_min:
        scalp.muscle(rng, x, 0, seconds, muscle_per_min)
    if extra is not None:
        extra(scalp, x)
    x = scalp.finish(rng, subject, x, MAINS_HZ[dataset])
    ecg = 1000.0 * sig.ecg_mv(rng, fs, scalp.n)  # mV -> uV
    signals = tuh_signals(x, TUH_ELECTRODES, ecg, suffix, with_t1t2)
    return Written(path, write_edf(path, signals, fs, start_time(rng)))


def add_spindles_and_k(scalp, rng, x, start_s, stop_s, subject):
    fs, central = scalp.fs, scalp.maps["central"]
    for onset in poisson_times(rng, start_s, stop_s - 1.5, 9):
        wave = sig.spindle(fs, subject.spindle_hz + rng.uniform(-0.5, 0.5), rng.uniform(0.8, 1.5))
        sig.add_transient(x, fs, onset, wave, central * rng.uniform(35, 55))
    for onset in poisson_times(rng, start_s, stop_s - 1.5, 3):
        sig.add_transient(x, fs, onset, sig.k_complex(fs),
                          scalp.maps["frontocentral"] * rng.uniform(100, 160))
