"""Knowing what the model knows: the training profile a checkpoint stores per task, and the
warnings a recording earns when it lies outside it (--strict refuses such recordings).

Profile (checkpoint key "training_profile", one entry per task):
    {"channels": [...], "sfreq": 200, "band_hz": [lo, hi],
     "amplitude_uv": {channel: {"median_abs": .., "p99_abs": ..}}, "n_windows": int}
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset import SAMPLING_RATE
from utils import UserError

from .recordings import BAND_HZ, Recording

TRAINING_PROFILE_KEY = "training_profile"   # the checkpoint key
MIN_COVERAGE = 0.5          # of the task's channels; below it the answer rests on a few sites
AMPLITUDE_FACTOR = 10.0     # an order of magnitude: volts read as microvolts, or the reverse
# Band-passed scalp EEG: a median |x| of a few to a few tens of microvolts; what an old
# checkpoint without a profile is compared to.
TYPICAL_MEDIAN_ABS_UV = 10.0
PROFILE_WINDOWS = 2000      # windows read per task to build a profile (bounded time)


class OutOfDistribution(UserError):
    """--strict: the recording lies outside what the task was trained on."""


def training_profile(windows_by_task: dict, max_windows: int = PROFILE_WINDOWS,
                     bands: dict | None = None) -> dict:
    """The profile of each task from its training windows.

    windows_by_task: task name -> iterable of (X (C, T) microvolts at 200 Hz, channel names);
    bands: task name -> the band its windows were filtered to (default: spec section 1's).
    Per channel, the median and 99th percentile of |x| over at most max_windows windows.
    """
    profile = {}
    for name, windows in windows_by_task.items():
        values: dict[str, list[np.ndarray]] = {}
        order: list[str] = []
        n = 0
        for X, ch_names in windows:
            if n >= max_windows:
                break
            X = np.abs(np.asarray(X, dtype=np.float32))
            for row, ch in zip(X, ch_names):
                if ch not in values:
                    values[ch] = []
                    order.append(ch)
                values[ch].append(row[:: max(1, row.size // 200)])   # 200 values a window
            n += 1
        amplitude = {ch: {"median_abs": float(np.median(np.concatenate(values[ch]))),
                          "p99_abs": float(np.percentile(np.concatenate(values[ch]), 99))}
                     for ch in order}
        profile[name] = {"channels": order, "sfreq": SAMPLING_RATE,
                         "band_hz": list((bands or {}).get(name, BAND_HZ)),
                         "amplitude_uv": amplitude, "n_windows": n}
    return profile


def profile_of_folders(folders: dict, tasks: dict | None = None,
                       max_windows: int = PROFILE_WINDOWS) -> dict:
    """training_profile of each task's processed folder (its train/*.pkl), reading at most
    max_windows sample files spread evenly over the sorted list; tasks (name -> Task) give the
    bands."""
    from dataset import load_sample, sample_files

    def windows(folder: Path):
        files = sample_files(Path(folder) / "train")
        for path in files[::max(1, len(files) // max_windows)][:max_windows]:
            sample = load_sample(path)
            yield sample["X"], sample["ch_names"]
    bands = {name: tuple(task.band_hz) for name, task in (tasks or {}).items()}
    return training_profile({name: windows(folder) for name, folder in folders.items()},
                            max_windows, bands)


def recording_warnings(rec: Recording, task_name: str, profile: dict | None,
                       probe_uv: np.ndarray) -> list[str]:
    """What is outside the task's training profile (profile None: the task's own channels and
    typical scalp amplitudes stand in for it). probe_uv: preprocessed (C, T) microvolts of the
    recording's first block."""
    warnings = []
    profile = profile or {}
    trained = list(profile.get("channels") or rec.signal.task_channels or [])
    if trained:
        used = set(rec.ch_names)
        covered = [c for c in trained if c in used]
        if len(covered) < MIN_COVERAGE * len(trained):
            warnings.append(f"channel coverage: {len(covered)} of the {len(trained)} channels "
                            f"task {task_name} was trained on ({', '.join(covered) or 'none'})")
    band = profile.get("band_hz") or list(rec.signal.band_hz)
    if rec.sfreq / 2 < band[1]:
        warnings.append(f"sampling rate: {rec.sfreq:g} Hz cannot carry the trained "
                        f"{band[0]:g}-{band[1]:g} Hz band (Nyquist {rec.sfreq / 2:g} Hz): no "
                        f"{band[1]:g} Hz low-pass"
                        + ("" if rec.notch_hz else f", no {rec.signal.mains_hz:g} Hz notch"))
    ratio = amplitude_ratio(rec.ch_names, probe_uv, profile.get("amplitude_uv") or {})
    if ratio is not None and not 1 / AMPLITUDE_FACTOR <= ratio <= AMPLITUDE_FACTOR:
        hint = ("microvolt numbers stored as volts?" if ratio > 1
                else "volts stored where microvolts belong?")
        warnings.append(f"amplitude: {ratio:.3g} times the training amplitude ({hint})")
    if rec.stand_ins:
        shown = ", ".join(f"{raw!r} as {electrode}" for raw, electrode in rec.stand_ins[:6])
        more = f" and {len(rec.stand_ins) - 6} more" if len(rec.stand_ins) > 6 else ""
        warnings.append(f"bipolar montage: {len(rec.stand_ins)} derivation(s) between two scalp "
                        f"electrodes read as their active electrode ({shown}{more}); the model "
                        "learned those electrodes against a reference")
    return warnings


def amplitude_ratio(ch_names, probe_uv: np.ndarray, trained: dict) -> float | None:
    """Median over channels of the recording's median |x| over the training one's."""
    ratios = []
    for ch, row in zip(ch_names, probe_uv):
        level = float(np.median(np.abs(row)))
        reference = (trained.get(ch) or {}).get("median_abs", TYPICAL_MEDIAN_ABS_UV)
        if level > 0 and reference > 0:
            ratios.append(level / reference)
    return float(np.median(ratios)) if ratios else None


def refuse(name: str, warnings: list[str]) -> None:
    """--strict: one line naming the file and what is outside the training profile."""
    if warnings:
        raise OutOfDistribution(f"{name}: refused (--strict): {'; '.join(warnings)}")
