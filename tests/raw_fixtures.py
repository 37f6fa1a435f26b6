"""Tiny raw recordings in each dataset's layout (docs/INTERFACES.md, "Raw layouts") for the
prepare-script tests: short, few channels where the dataset allows, fixed seeds."""

from __future__ import annotations

import json
from pathlib import Path

import edfio
import numpy as np

TUH_NAMES = [f"EEG {c}-REF" for c in
             "FP1 FP2 F3 F4 C3 C4 P3 P4 O1 O2 F7 F8 T3 T4 T5 T6 A1 A2 FZ CZ PZ T1 T2".split()]
AMPLITUDE_UV = 20.0
PHYSICAL_RANGE_UV = (-1000.0, 1000.0)


def eeg_like(n_channels: int, seconds: float, sfreq: float, seed: int) -> np.ndarray:
    """(C, T) microvolts: smoothed noise plus a 10 Hz rhythm, about AMPLITUDE_UV rms."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sfreq))
    noise = rng.standard_normal((n_channels, n + 8))
    smooth = np.stack([np.convolve(row, np.ones(8) / 8, mode="valid")[:n] for row in noise])
    t = np.arange(n) / sfreq
    alpha = np.sin(2 * np.pi * 10 * t + rng.uniform(0, 2 * np.pi, (n_channels, 1)))
    signal = smooth / smooth.std() + alpha
    return AMPLITUDE_UV * signal / signal.std()


def write_edf(path, names, seconds, sfreq=250.0, seed=0, data=None, rates=None, units=None):
    """EDF with one signal per name; `rates` gives per-channel rates (a mixed-rate file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rates = rates or [sfreq] * len(names)
    signals = []
    for i, (name, rate) in enumerate(zip(names, rates)):
        row = data[i] if data is not None else eeg_like(1, seconds, rate, seed * 1000 + i)[0]
        signals.append(edfio.EdfSignal(np.asarray(row, float), rate, label=name,
                                       physical_dimension=(units or {}).get(name, "uV"),
                                       physical_range=PHYSICAL_RANGE_UV))
    edfio.Edf(signals, data_record_duration=1.0).write(path)
    return path


def write_tuh_edf(path, seconds, sfreq=250.0, seed=0, names=TUH_NAMES, extra=("EEG EKG1-REF",)):
    return write_edf(path, list(names) + list(extra), seconds, sfreq, seed)


# ----------------------------------------------------------------------------- per dataset


def make_workload(raw: Path, n_subjects=3, seconds=64, sfreq=500.0):
    names = [f"EEG {c}"
             for c in "Fp1 Fp2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 Fz Cz Pz".split()]
    names += ["EEG A2-A1", "ECG ECG"]
    for s in range(n_subjects):
        for task in (1, 2):
            write_edf(raw / f"Subject{s:02d}_{task}.edf", names, seconds, sfreq, seed=10 * s + task)


def make_tuab(raw: Path, seconds=25, sfreq=250.0):
    """Two subjects per class in train, one per class in eval: 2 windows of 10 s each."""
    files = []
    for folder, subjects in (("train", "abcd"), ("eval", "ef")):
        for i, s in enumerate(subjects):
            label = "abnormal" if i % 2 else "normal"
            name = f"{s * 8}_s001_t000.edf"
            files.append(write_tuh_edf(raw / folder / label / "01_tcp_ar" / name, seconds, sfreq,
                                       seed=ord(s)))
    return files


def make_tuev(raw: Path, seconds=20, sfreq=250.0):
    """Events: one in the middle, one at 0.5 s (edge), one at seconds - 1 (edge)."""
    for folder, subjects in (("train", "abcd"), ("eval", "ef")):
        for i, s in enumerate(subjects):
            edf = write_tuh_edf(raw / folder / (s * 8) / f"{s * 8}_00000001.edf", seconds, sfreq,
                                seed=ord(s))
            rows = [(3, 8.0, 9.0, 1 + i % 6), (0, 0.5, 1.5, 6),
                    (5, seconds - 1.0, float(seconds), 4)]
            edf.with_suffix(".rec").write_text("".join(f"{c},{a},{b},{y}\n" for c, a, b, y in rows))


TUEV_LABELS_OF_FIRST_EVENT = {0: 0, 1: 1, 2: 2, 3: 3}


def make_tusl(raw: Path, n_subjects=5, seconds=40, sfreq=250.0):
    """Segments: bckg 0-20 s (2 windows), seiz 20-35 s (1 window), slow 35-40 s (none)."""
    for k in range(n_subjects):
        subject = f"{chr(97 + k) * 8}"
        edf = write_tuh_edf(raw / subject / "s001_2010" / "01_tcp_ar" / f"{subject}_s001_t000.edf",
                            seconds, sfreq, seed=k)
        rows = [(0, 20, "bckg"), (20, 35, "seiz"), (35, seconds, "slow")]
        text = "version = tse_v1.0.0\n\n" + "".join(f"{a:.4f} {b:.4f} {y} 1.0000\n"
                                                    for a, b, y in rows)
        edf.with_suffix(".tse_agg").write_text(text)


HMC_NAMES = ["EEG F4-M1", "EEG C4-M1", "EEG O2-M1", "EEG C3-M2", "EOG E1-M2", "EMG chin", "ECG"]
HMC_STAGES = ["W", "N1", "N2", "N3", "R"]


def hmc_scoring(stages, epoch=30):
    lines = ["Date, Time, Recording onset, Duration, Annotation, Linked channel",
             "2001-01-01, 22:00:00, 0.0, 0.0, Lights off, "]
    for i, stage in enumerate(stages):
        lines.append(f"2001-01-01, 22:00:00, {i * epoch:.1f}, {epoch:.1f}, Sleep stage {stage}, ")
    # not 30 s: ignored
    lines.append(f"2001-01-01, 22:00:00, {len(stages) * epoch:.1f}, 15.0, Sleep stage W, ")
    return "\n".join(lines) + "\n"


def make_hmc(raw: Path, n_subjects=6, sfreq=256.0):
    for k in range(1, n_subjects + 1):
        stages = HMC_STAGES[k % 5:] + HMC_STAGES[: k % 5]
        write_edf(raw / f"SN{k:03d}.edf", HMC_NAMES, 30 * len(stages), sfreq, seed=k)
        (raw / f"SN{k:03d}_sleepscoring.txt").write_text(hmc_scoring(stages))


SEED_NAMES = """FP1 FPZ FP2 AF3 AF4 F7 F5 F3 F1 FZ F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCZ FC2 FC4 FC6
FT8 T7 C5 C3 C1 CZ C2 C4 C6 T8 M1 TP7 CP5 CP3 CP1 CPZ CP2 CP4 CP6 TP8 M2 P7 P5 P3 P1 PZ P2 P4 P6
P8 PO7 PO5 PO3 POZ PO4 PO6 PO8 CB1 O1 OZ O2 CB2 HEO VEO""".split()


def make_seed(raw: Path, subjects=("1", "2"), trial_seconds=8, gap=2, sfreq=250.0):
    """Short sessions with a trials.json: 15 trials of `trial_seconds` -> 2 windows of 4 s each."""
    starts = [gap + i * (trial_seconds + gap) for i in range(15)]
    ends = [s + trial_seconds for s in starts]
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "trials.json").write_text(json.dumps({"start_s": starts, "end_s": ends}))
    for s in subjects:
        write_edf(raw / f"{s}_20140101.edf", SEED_NAMES, ends[-1] + gap, sfreq, seed=int(s))


def make_tuh_pretrain(raw: Path, subjects=("aaaaaaaa", "bbbbbbbb", "cccccccc", "dddddddd"),
                      seconds=70, sfreq=250.0):
    """Four subjects with 23 channels (44 s windows) -> one window each after dropping 10 s."""
    for i, s in enumerate(subjects):
        write_tuh_edf(raw / "edf" / "000" / s / "s001_2015" / "01_tcp_ar" / f"{s}_s001_t000.edf",
                      seconds, sfreq, seed=i)
