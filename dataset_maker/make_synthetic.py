"""Synthetic raw EEG in the layouts and file formats of the seven NeuroLM datasets.

The embedded default data of the project: with no access to TUH, HMC, SEED or EEGMAT, this writes
small look-alike raw trees (EDF files, .rec, .tse_agg, _sleepscoring.txt, trials.json) that the
prepare scripts read exactly as they read the real datasets (docs/INTERFACES.md, "Raw layouts").
Labels are made learnable: each class has its own strong, consistent spectral/topographic
signature (slowing for abnormal, frontal theta for workload, stage rhythms for sleep, ...),
varied a little per subject.

    python dataset_maker/make_synthetic.py --out_dir data/raw --seed 0 [--scale 1.0]

Deterministic: the same seed and scale give the same bytes. Every recording draws from its own
random stream, so --datasets picks a subset without changing what the others contain.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import edfio  # noqa: E402

from dataset_maker import (  # noqa: E402
    PREPARE_SCRIPTS,
    common,
    prepare_HMC,
    prepare_module,
    prepare_SEED,
    prepare_TUAB,
    prepare_TUEV,
    prepare_TUSL,
    prepare_workload,
    tuh,
)
from dataset_maker import synthetic_signals as sig  # noqa: E402

DATASETS = tuple(PREPARE_SCRIPTS)

# The dataset facts (channels, labels, mains, windows) are the prepare scripts'; this module
# only adds what a recording needs besides them.
MAINS_HZ = {name: prepare_module(name).SIGNAL.mains_hz for name in DATASETS}

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


# --------------------------------------------------------------------------------------------
# Plumbing: random streams, sizes, subject ids, writers.
# --------------------------------------------------------------------------------------------

def _rng(seed: int, dataset: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, DATASETS.index(dataset), *keys])


def _count(base: int, scale: float, floor: int) -> int:
    return max(floor, int(round(base * scale)))


def _seconds(base: float, scale: float, floor: float, step: int = 1) -> int:
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
_SUBJECT_BASE = {"TUAB": 1000, "TUEV": 2000, "TUSL": 3000, "TUH_pretrain": 4000}


def write_text(path: Path, text: str) -> None:
    common.atomic_write(path, lambda tmp: tmp.write_text(text, encoding="ascii"))


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
    common.atomic_write(path, lambda tmp: edf.write(tmp))
    return signals[0][1].shape[-1] / fs


def _start_time(rng: np.random.Generator) -> dt.datetime:
    return dt.datetime(2010, 1, 1, 8, 0, 0) + dt.timedelta(
        days=int(rng.integers(0, 3000)), seconds=int(rng.integers(0, 36000)))


# --------------------------------------------------------------------------------------------
# Shared signal recipes.
# --------------------------------------------------------------------------------------------

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
        for onset in _poisson_times(rng, start_s, stop_s, per_min):
            sig.add_transient(self.veog[None], self.fs, onset, sig.blink(self.fs),
                              [rng.uniform(*amp)])

    def saccades(self, rng, start_s, stop_s, per_min, amp=(60, 150), hold=(0.3, 1.2)):
        for onset in _poisson_times(rng, start_s, stop_s, per_min):
            wave = sig.saccade(self.fs, rng.uniform(*hold))
            sig.add_transient(self.heog[None], self.fs, onset, wave,
                              [rng.choice([-1, 1]) * rng.uniform(*amp)])

    def muscle(self, rng, x, start_s, stop_s, per_min, amp=(20, 60)):
        for onset in _poisson_times(rng, start_s, stop_s, per_min):
            dur = rng.uniform(0.5, 2.0)
            burst = sig.band_noise(rng, self.fs, len(self.names), dur, 20, 100)
            sig.add_transient(x, self.fs, onset, burst, self.maps["temporal"] * rng.uniform(*amp))

    def finish(self, rng, subject, x, mains_hz) -> np.ndarray:
        """Add eye activity seen through the scalp and the power-line hum."""
        eye_maps = np.stack([self.maps["eye_vertical"], self.maps["eye_horizontal"]], axis=1)
        x += eye_maps @ np.stack([self.veog, self.heog])
        x += sig.mains(rng, self.fs, len(self.names), self.n, mains_hz, subject.mains_uv)
        return x


def _poisson_times(rng, start_s, stop_s, per_min):
    n = rng.poisson(max(stop_s - start_s, 0) * per_min / 60.0)
    return np.sort(rng.uniform(start_s, stop_s, n))


def _add_periodic(scalp, rng, x, start_s, dur, amp, gains, period_range, kind):
    if kind == "spike_wave":
        rate, n = rng.uniform(2.7, 3.5), int(dur * scalp.fs)
        wave = np.tile(sig.spike_and_wave(scalp.fs, rate), int(np.ceil(dur * rate)) + 1)[:n]
        wave = wave * np.sin(np.pi * np.arange(n) / n) ** 0.3  # soft onset and offset
    else:
        wave = sig.periodic_discharges(scalp.fs, dur, rng.uniform(*period_range), rng)
    sig.add_transient(x, scalp.fs, start_s, wave, gains * amp)


def _tuh_signals(scalp_x, names, ecg_uv, suffix="-REF", with_t1t2=True):
    """TUH channel set: the 21 10-20 electrodes, an EKG lead, then T1/T2 (file order of TUH)."""
    out = [(f"EEG {n}{suffix}", scalp_x[i], "uV") for i, n in enumerate(names)
           if n not in ("T1", "T2")]
    out.append((f"EEG EKG1{suffix}", ecg_uv, "uV"))
    if with_t1t2:
        out += [(f"EEG {n}{suffix}", scalp_x[names.index(n)], "uV") for n in ("T1", "T2")]
    return out


def _tuh_recording(rng, subject, fs, seconds, plan, mains_hz, electrodes=TUH_ELECTRODES,
                   blinks_per_min=8, muscle_per_min=2, extra=None):
    """Render a TUH-style referential recording; `extra(scalp, x)` adds task-specific transients."""
    scalp = Scalp(electrodes, fs, int(seconds * fs))
    x = scalp.render(rng, subject, plan)
    if blinks_per_min:
        scalp.blinks(rng, 0, seconds, blinks_per_min)
    if muscle_per_min:
        scalp.muscle(rng, x, 0, seconds, muscle_per_min)
    if extra is not None:
        extra(scalp, x)
    # mV -> uV
    return scalp.finish(rng, subject, x, mains_hz), 1000.0 * sig.ecg_mv(rng, fs, scalp.n)


# --------------------------------------------------------------------------------------------
# The seven datasets. Each returns the files it wrote.
# --------------------------------------------------------------------------------------------

def tuab_plan(scale):
    n = _count(12, scale, 5)
    return n, max(1, round(n / 3)), _seconds(120, scale, 20, step=prepare_TUAB.WINDOW_SECONDS)


def make_tuab(root: Path, seed: int, scale: float) -> list[Written]:
    """Every subject has a normal and an abnormal session, so each split holds both classes."""
    n_subjects, n_eval, seconds = tuab_plan(scale)
    written = []
    for k in tqdm(range(n_subjects), desc="TUAB", leave=False):
        rng = _rng(seed, "TUAB", k)
        subject, sid = sig.Subject.draw(rng), tuh_subject_id(_SUBJECT_BASE["TUAB"] + k)
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
    x, ecg = _tuh_recording(rng, subject, TUH_HZ, seconds, [(0, seconds, state)],
                            MAINS_HZ["TUAB"])
    return Written(path, write_edf(path, _tuh_signals(x, TUH_ELECTRODES, ecg), TUH_HZ,
                                   _start_time(rng)))


# TCP channel numbers over the left (-1) and right (1) hemisphere.
_TCP_SIDE = {-1: [0, 1, 2, 3, 8, 9, 14, 15, 16, 17], 1: [4, 5, 6, 7, 12, 13, 18, 19, 20, 21]}


def tuev_plan(scale):
    n = _count(12, scale, 5)
    return n, max(1, round(n / 3)), _count(3, scale, 1)


def _tuev_event(scalp, rng, x, label, onset):
    """Draw one event episode around the annotated second [onset, onset + 1); returns .rec rows'
    channel numbers (where the event shows)."""
    fs = scalp.fs
    if label == 1:  # spike-and-wave: 3 Hz complexes, frontal-dominant, generalised
        _add_periodic(scalp, rng, x, onset - 1.2, 3.4, rng.uniform(150, 230),
                      scalp.maps["broad"] * (0.7 + 0.3 * scalp.maps["frontocentral"]), None,
                      "spike_wave")
        return list(rng.choice([0, 4, 14, 18, 10, 11], 2, replace=False))
    if label == 2:  # generalised periodic discharges ~1 Hz
        _add_periodic(scalp, rng, x, onset - 1.8, 4.6, rng.uniform(120, 200), scalp.maps["broad"],
                      (0.8, 1.1), "periodic")
        return list(rng.choice(TCP_CHANNELS, 2, replace=False))
    if label == 3:  # lateralised periodic discharges on one hemisphere
        side = rng.choice([-1, 1])
        _add_periodic(scalp, rng, x, onset - 1.8, 4.6, rng.uniform(130, 220),
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
        return list(rng.choice(TCP_CHANNELS, 1))
    return list(rng.choice(TCP_CHANNELS, int(rng.integers(1, 3)), replace=False))  # background


def make_tuev(root: Path, seed: int, scale: float) -> list[Written]:
    """Events of all six classes in every subject, 8-10 s apart so the 5 s windows never overlap."""
    n_subjects, n_eval, per_class = tuev_plan(scale)
    written = []
    for k in tqdm(range(n_subjects), desc="TUEV", leave=False):
        rng = _rng(seed, "TUEV", k)
        subject, sid = sig.Subject.draw(rng), tuh_subject_id(_SUBJECT_BASE["TUEV"] + k)
        labels = rng.permutation(np.repeat(np.arange(1, prepare_TUEV.N_LABELS + 1), per_class))
        onsets = 5.0 + np.cumsum(np.r_[0, rng.integers(8, 11, len(labels) - 1)])
        seconds = int(onsets[-1] + 6)
        rows = []

        def events(scalp, x):
            for label, onset in zip(labels, onsets):
                for channel in sorted(_tuev_event(scalp, rng, x, int(label), float(onset))):
                    rows.append(f"{channel},{onset:.4f},{onset + EVENT_SECONDS:.4f},{label}")

        x, ecg = _tuh_recording(rng, subject, TUH_HZ, seconds, [(0, seconds, STATES["normal"])],
                                MAINS_HZ["TUEV"], blinks_per_min=0, muscle_per_min=0, extra=events)
        split = "eval" if k >= n_subjects - n_eval else "train"
        name = f"{sid}_00000001"
        path = root / split / sid / f"{name}.edf"
        written.append(Written(path, write_edf(
            path, _tuh_signals(x, TUH_ELECTRODES, ecg), TUH_HZ, _start_time(rng))))
        write_text(path.with_suffix(".rec"), "\n".join(rows) + "\n")
    return written


def tusl_plan(scale):
    window = prepare_TUSL.WINDOW_SECONDS
    return _count(9, scale, 5), _count(3, scale, 1), _seconds(30, scale, window, step=window)


def make_tusl(root: Path, seed: int, scale: float) -> list[Written]:
    """Blocks of background, seizure and slowing (multiples of the 10 s window) in every
    subject."""
    n_subjects, blocks_per_class, block_s = tusl_plan(scale)
    written = []
    for k in tqdm(range(n_subjects), desc="TUSL", leave=False):
        rng = _rng(seed, "TUSL", k)
        subject, sid = sig.Subject.draw(rng), tuh_subject_id(_SUBJECT_BASE["TUSL"] + k)
        labels = rng.permutation(np.repeat(list(prepare_TUSL.LABELS), blocks_per_class))
        lengths = block_s + prepare_TUSL.WINDOW_SECONDS * rng.integers(0, 2, len(labels))
        edges = np.r_[0, np.cumsum(lengths)]
        seconds = int(edges[-1])
        state_of = {"bckg": "normal", "seiz": "seizure_bg", "slow": "slowing"}
        plan = [(a, b, STATES[state_of[lab]]) for a, b, lab in zip(edges[:-1], edges[1:], labels)]

        def seizures(scalp, x):
            for a, b, lab in zip(edges[:-1], edges[1:], labels):
                if lab != "seiz":
                    continue
                focal = rng.random() < 0.5
                gains = scalp.lateral(rng.choice([-1, 1]), 0.3) if focal else scalp.maps["broad"]
                wave = sig.seizure_rhythm(scalp.fs, b - a, rng.uniform(6.5, 8.0),
                                          rng.uniform(3.0, 4.5))
                sig.add_transient(x, scalp.fs, a, wave, gains * rng.uniform(120, 200))

        x, ecg = _tuh_recording(rng, subject, TUH_HZ, seconds, plan, MAINS_HZ["TUSL"],
                                extra=seizures)
        name = f"{sid}_s001_t000"
        path = root / sid / "s001_2012" / "01_tcp_ar" / f"{name}.edf"
        written.append(Written(path, write_edf(
            path, _tuh_signals(x, TUH_ELECTRODES, ecg), TUH_HZ, _start_time(rng))))
        rows = [f"{a:.4f} {b:.4f} {lab} 1.0000" for a, b, lab in zip(edges[:-1], edges[1:], labels)]
        write_text(path.with_suffix(".tse_agg"),
                   "version = tse_v1.0.0\n\n" + "\n".join(rows) + "\n")
    return written


def pretrain_plan(scale):
    return _count(10, scale, 4), _seconds(150, scale, 70, step=10)


def make_tuh_pretrain(root: Path, seed: int, scale: float) -> list[Written]:
    """A mixed corpus (awake, drowsy, slowing, light sleep) with varied rates and channel sets;
    the first recordings belong to downstream subjects (what --exclude_subjects must drop), and
    one extra recording (a later session of the last subject) uses the linked-ear (-LE) montage,
    which must be skipped."""
    n_recordings, base_seconds = pretrain_plan(scale)
    reused = [tuh_subject_id(_SUBJECT_BASE["TUAB"] + tuab_plan(scale)[0] - 1),
              tuh_subject_id(_SUBJECT_BASE["TUEV"] + tuev_plan(scale)[0] - 1),
              tuh_subject_id(_SUBJECT_BASE["TUSL"])]
    rates = [TUH_HZ, TUH_HZ, 256, TUH_HZ, 400]
    written = []
    for k in tqdm(range(n_recordings + 1), desc="TUH_pretrain", leave=False):
        rng = _rng(seed, "TUH_pretrain", k)
        subject = sig.Subject.draw(rng)
        is_le = k == n_recordings  # a later session of the previous subject, linked-ear montage
        number = k - 1 if is_le else k
        sid = (reused[number] if number < len(reused)
               else tuh_subject_id(_SUBJECT_BASE["TUH_pretrain"] + number))
        fs = rates[k % len(rates)]
        seconds = base_seconds + 10 * int(rng.integers(0, 4))
        cuts = np.r_[0, np.sort(rng.choice(np.arange(20, seconds - 10, 10), 3, replace=False)),
                     seconds]
        states = [STATES[s] for s in rng.choice(["normal", "N1", "abnormal", "N2"], len(cuts) - 1)]
        plan = list(zip(cuts[:-1], cuts[1:], states))

        def spindles(scalp, x):
            for a, b, state in plan:
                if state is STATES["N2"]:
                    _add_spindles_and_k(scalp, rng, x, a, b, subject)

        x, ecg = _tuh_recording(rng, subject, fs, seconds, plan, MAINS_HZ["TUH_pretrain"],
                                extra=spindles)
        with_t1t2 = k % 4 != 3  # older TUH files lack T1/T2
        montage, suffix = ("02_tcp_le", "-LE") if is_le else ("01_tcp_ar", "-REF")
        path = (root / "edf" / f"{k // 100:03d}" / sid / f"s{k + 1:03d}_2015" / montage
                / f"{sid}_s{k + 1:03d}_t000.edf")
        written.append(Written(path, write_edf(
            path, _tuh_signals(x, TUH_ELECTRODES, ecg, suffix, with_t1t2), fs, _start_time(rng))))
    return written


def _add_spindles_and_k(scalp, rng, x, start_s, stop_s, subject):
    fs, central = scalp.fs, scalp.maps["central"]
    for onset in _poisson_times(rng, start_s, stop_s - 1.5, 9):
        wave = sig.spindle(fs, subject.spindle_hz + rng.uniform(-0.5, 0.5), rng.uniform(0.8, 1.5))
        sig.add_transient(x, fs, onset, wave, central * rng.uniform(35, 55))
    for onset in _poisson_times(rng, start_s, stop_s - 1.5, 3):
        sig.add_transient(x, fs, onset, sig.k_complex(fs),
                          scalp.maps["frontocentral"] * rng.uniform(100, 160))


def hmc_plan(scale):
    # Stage blocks (in 30 s epochs) of one night's cycle; every stage appears more than once.
    cycle = [("W", 5), ("N1", 3), ("N2", 6), ("N3", 6), ("N2", 3), ("R", 5), ("N1", 2), ("N2", 4),
             ("N3", 3), ("R", 4), ("W", 3)]
    return _count(8, scale, 5), [(stage, max(1, int(round(n * scale)))) for stage, n in cycle]


def _hmc_transients(scalp, rng, x, stage, a, b, subject):
    fs = scalp.fs
    if stage == "W":
        scalp.blinks(rng, a, b, 15)
        scalp.saccades(rng, a, b, 10)
    elif stage == "N1":  # slow rolling eye movements, vertex sharp waves
        for onset in _poisson_times(rng, a, b - 4, 4):
            sig.add_transient(scalp.heog[None], fs, onset, sig.slow_eye_roll(fs, 4.0),
                              [rng.uniform(60, 120)])
        for onset in _poisson_times(rng, a, b - 1, 5):
            sig.add_transient(x, fs, onset, sig.sharp_wave(fs, 0.1),
                              scalp.maps["central"] * rng.uniform(60, 100))
    elif stage == "N2":
        _add_spindles_and_k(scalp, rng, x, a, b, subject)
    elif stage == "R":  # sawtooth waves and bursts of rapid eye movements
        for onset in _poisson_times(rng, a, b - 3, 6):
            wave = sig.sawtooth_train(fs, rng.uniform(2.2, 3.2), rng.uniform(2.0, 3.0))
            sig.add_transient(x, fs, onset, wave, scalp.maps["central"] * rng.uniform(40, 60))
        scalp.saccades(rng, a, b, 40, amp=(80, 180), hold=(0.15, 0.4))


def make_hmc(root: Path, seed: int, scale: float) -> list[Written]:
    n_subjects, cycle = hmc_plan(scale)
    electrodes = ["F4", "C4", "O2", "C3", "M1", "M2"]
    written = []
    for k in tqdm(range(n_subjects), desc="HMC", leave=False):
        rng = _rng(seed, "HMC", k)
        subject = sig.Subject.draw(rng)
        stages = [stage for stage, n in cycle for _ in range(n + int(rng.integers(0, 2)))]
        epoch = EPOCH_SECONDS
        seconds = epoch * len(stages)
        scalp = Scalp(electrodes, HMC_HZ, seconds * HMC_HZ)
        x = scalp.render(rng, subject, [(epoch * i, epoch * (i + 1), STATES[s])
                                        for i, s in enumerate(stages)])
        emg = np.zeros(scalp.n)
        for i, stage in enumerate(stages):
            _hmc_transients(scalp, rng, x, stage, epoch * i, epoch * (i + 1), subject)
            tone = sig.band_noise(rng, HMC_HZ, 1, float(epoch), 15, 100, taper=False)[0]
            emg[epoch * i * HMC_HZ: epoch * (i + 1) * HMC_HZ] = CHIN_EMG_UV[stage] * tone
        x = scalp.finish(rng, subject, x, MAINS_HZ["HMC"])
        e = {n: x[i] for i, n in enumerate(electrodes)}
        noise = lambda: 3 * rng.standard_normal(scalp.n)  # noqa: E731
        signals = [("EEG F4-M1", e["F4"] - e["M1"], "uV"), ("EEG C4-M1", e["C4"] - e["M1"], "uV"),
                   ("EEG O2-M1", e["O2"] - e["M1"], "uV"), ("EEG C3-M2", e["C3"] - e["M2"], "uV"),
                   ("EMG chin", emg, "uV"),
                   ("EOG E1-M2", 0.6 * scalp.veog - scalp.heog + noise(), "uV"),
                   ("EOG E2-M2", 0.6 * scalp.veog + scalp.heog + noise(), "uV"),
                   ("ECG", sig.ecg_mv(rng, HMC_HZ, scalp.n), "mV")]
        start = _start_time(rng).replace(hour=22)
        path = root / f"SN{k + 1:03d}.edf"
        written.append(Written(path, write_edf(path, signals, HMC_HZ, start)))
        write_text(root / f"SN{k + 1:03d}_sleepscoring.txt", _sleep_scoring(stages, start))
    return written


def _sleep_scoring(stages: list[str], start: dt.datetime) -> str:
    def row(onset, duration, text):
        when = start + dt.timedelta(seconds=onset)
        return f"{when:%Y-%m-%d}, {when:%H:%M:%S}, {onset}, {duration}, {text}, "

    rows = ["Date, Time, Recording onset, Duration, Annotation, Linked channel",
            row(0, 0, "Lights off")]
    epoch, prefix = EPOCH_SECONDS, prepare_HMC.STAGE_PREFIX
    rows += [row(epoch * i, epoch, f"{prefix}{s}") for i, s in enumerate(stages)]
    rows.append(row(epoch * len(stages), 0, "Lights on"))
    return "\n".join(rows) + "\n"


def seed_plan(scale):
    """(subjects, sessions per subject, trial seconds floor)."""
    return _count(3, scale, 1), 2 if scale >= 0.5 else 1, _seconds(16, scale, 8)


def seed_trials(seed: int, scale: float) -> dict:
    """One shortened 15-trial timing for every session (SEED uses one table for all sessions)."""
    rng = _rng(seed, "SEED", 999)
    trial_floor = seed_plan(scale)[2]
    lengths = trial_floor + rng.integers(0, max(2, trial_floor // 4) + 1, 15)
    gaps = rng.integers(3, 6, 15)
    starts = 4 + np.cumsum(np.r_[0, lengths[:-1] + gaps[:-1]])
    return {"start_s": [int(s) for s in starts], "end_s": [int(s) for s in starts + lengths],
            "labels": list(prepare_SEED.TRIAL_LABELS)}


def make_seed(root: Path, seed: int, scale: float) -> list[Written]:
    n_subjects, n_sessions, _ = seed_plan(scale)
    trials = seed_trials(seed, scale)
    seconds = trials["end_s"][-1] + 4
    written = []
    for k in range(n_subjects):
        subject = sig.Subject.draw(_rng(seed, "SEED", k))
        for session in tqdm(range(n_sessions), desc=f"SEED {k + 1}", leave=False):
            rng = _rng(seed, "SEED", k, session + 1)
            plan, t = [], 0
            for a, b, label in zip(trials["start_s"], trials["end_s"], trials["labels"]):
                plan += [(t, a, STATES["neutral"]),
                         (a, b, STATES[prepare_SEED.TRIAL_LABEL_NAMES[label]])]
                t = b
            plan.append((t, seconds, STATES["neutral"]))
            scalp = Scalp(SEED_CHANNELS, SEED_HZ, seconds * SEED_HZ)
            x = scalp.render(rng, subject, plan)
            scalp.blinks(rng, 0, seconds, 12)
            scalp.saccades(rng, 0, seconds, 6)
            scalp.muscle(rng, x, 0, seconds, 1)
            x = scalp.finish(rng, subject, x, MAINS_HZ["SEED"])
            signals = [(n, x[i], "uV") for i, n in enumerate(SEED_CHANNELS)]
            signals += [("VEO", scalp.veog + 3 * rng.standard_normal(scalp.n), "uV"),
                        ("HEO", scalp.heog + 3 * rng.standard_normal(scalp.n), "uV")]
            start = dt.datetime(2013, 10, 27) + dt.timedelta(days=7 * session + 30 * k, hours=14)
            path = root / f"{k + 1}_{start:%Y%m%d}.edf"
            written.append(Written(path, write_edf(path, signals, SEED_HZ, start)))
    write_text(root / "trials.json", json.dumps(trials, indent=1) + "\n")
    return written


def make_workload(root: Path, seed: int, scale: float) -> list[Written]:
    """EEGMAT: SubjectNN_1 (rest, 60-90 s) and SubjectNN_2 (mental arithmetic, 62 s)."""
    electrodes = EEGMAT_ELECTRODES + ["A1", "A2"]
    written = []
    for k in tqdm(range(_count(8, scale, 5)), desc="Workload", leave=False):
        subject = sig.Subject.draw(_rng(seed, "Workload", k))
        for part, (state, seconds) in enumerate([("rest", None), ("arithmetic", 62)], start=1):
            rng = _rng(seed, "Workload", k, part)
            seconds = seconds or int(rng.integers(60, 91))
            scalp = Scalp(electrodes, EEGMAT_HZ, seconds * EEGMAT_HZ)
            x = scalp.render(rng, subject, [(0, seconds, STATES[state])])
            scalp.blinks(rng, 0, seconds, 12)
            scalp.muscle(rng, x, 0, seconds, 2 if state == "arithmetic" else 1)
            x = scalp.finish(rng, subject, x, MAINS_HZ["Workload"])
            signals = [(f"EEG {n}", x[i], "uV") for i, n in enumerate(EEGMAT_ELECTRODES)]
            signals += [("EEG A2-A1", x[-1] - x[-2], "uV"),
                        ("ECG ECG", sig.ecg_mv(rng, EEGMAT_HZ, scalp.n), "mV")]
            path = root / f"Subject{k:02d}_{part}.edf"
            written.append(Written(path, write_edf(path, signals, EEGMAT_HZ, _start_time(rng))))
    return written


MAKERS = {"TUH_pretrain": make_tuh_pretrain, "TUAB": make_tuab, "TUEV": make_tuev,
          "TUSL": make_tusl, "HMC": make_hmc, "SEED": make_seed, "Workload": make_workload}


def make_synthetic(out_dir, seed: int = 0, scale: float = 1.0,
                   datasets=None) -> dict[str, list[Written]]:
    """Write the raw trees of the chosen datasets under out_dir/<name>; returns the EDF files."""
    if scale <= 0:
        raise ValueError(f"--scale must be positive, got {scale}")
    unknown = set(datasets or ()) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown dataset(s) {sorted(unknown)}; choose from {list(DATASETS)}")
    out_dir = Path(out_dir)
    return {name: MAKERS[name](out_dir / name, seed, scale) for name in (datasets or DATASETS)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", required=True, help="writes OUT_DIR/<dataset>/... raw trees")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> same bytes")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies subject counts and recording lengths (small floors keep "
                             "every class in every split)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    args = parser.parse_args(argv)
    written = make_synthetic(args.out_dir, args.seed, args.scale, args.datasets)
    total_h = 0.0
    for name, files in written.items():
        hours = sum(w.seconds for w in files) / 3600
        total_h += hours
        print(f"{name:13s} {len(files):3d} EDF files {hours:6.2f} h  "
              f"-> {Path(args.out_dir) / name}")
    print(f"{'total':13s} {sum(map(len, written.values())):3d} EDF files {total_h:6.2f} h")


if __name__ == "__main__":
    main()
