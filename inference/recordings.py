"""Raw recordings in, windows out: finding them, opening them with MNE, and streaming the
task's preprocessing block by block so memory does not grow with the recording.

A block is read with `pad` seconds of real signal on both sides (the 0.1 Hz high-pass is a 33 s
FIR filter), band-passed, notched and resampled to 200 Hz there, and the padding dropped: the
windows equal those of filtering the whole recording at once, without ever holding it.
"""
from __future__ import annotations

import glob
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

import dataset
from dataset import PATCH_SIZE, SAMPLING_RATE
from tasks import DEFAULT_BAND_HZ, Task, fit_window
from utils import UserError

# What MNE opens (mne.io.read_raw); BrainVision by its header, EEGLAB by its .set.
EEG_SUFFIXES = (".edf", ".bdf", ".gdf", ".vhdr", ".set", ".fif", ".cnt", ".mff", ".nxe")
# Sleep-EDF ships each night as *-PSG.edf + *-Hypnogram.edf: the second holds labels only.
LABEL_FILE_MARKER = "hypnogram"
BAND_HZ = DEFAULT_BAND_HZ      # spec section 1: the band every built-in task was filtered to
BLOCK_SECONDS = 120.0          # signal preprocessed at once: memory is a few blocks, any length
PAD_MARGIN_SECONDS = 2.0       # beyond the filters' half lengths


class RecordingError(UserError):
    """A recording that cannot be analysed: the message is its error in recordings.csv."""


def display_name(path) -> str:
    """A file name safe to print, plot and write to JSON: bytes that are not UTF-8 and control
    characters (tabs, newlines) become escapes."""
    raw = os.fsencode(Path(path).name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw)


def display_path(path) -> str:
    """A full path safe to write to CSV and JSON (bytes that are not UTF-8 as escapes)."""
    return os.fsencode(str(Path(path).absolute())).decode("utf-8", "backslashreplace")


# ----------------------------------------------------------------------------------------------
# finding recordings

def _is_recording(path: Path) -> bool:
    name = path.name.lower()
    return (path.is_file() and name.endswith(EEG_SUFFIXES) and not name.startswith(".")
            and LABEL_FILE_MARKER not in name)


def _in_folder(folder: Path) -> list[Path]:
    """A BIDS root (dataset_description.json) gives its sub-*/[ses-*/]eeg/*_eeg.* files, leaving
    derivatives/ alone; any other folder every recording below it."""
    if (folder / "dataset_description.json").is_file():
        found = [p for p in folder.glob("sub-*/**/eeg/*_eeg.*")
                 if "derivatives" not in p.relative_to(folder).parts and _is_recording(p)]
    else:
        found = [p for p in folder.rglob("*") if _is_recording(p)
                 and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(found)


def find_recordings(specs) -> list[Path]:
    """Files, folders, globs or BIDS roots -> recordings in the order given, each once. A file
    named directly is kept even when missing or unreadable (it becomes an error row); a folder
    or glob that holds no recording is a UserError."""
    out: list[Path] = []
    for spec in specs:
        spec = str(spec)
        path = Path(spec)
        if path.is_dir():
            found = _in_folder(path)
            if not found:
                raise UserError(f"--edf {spec}: no EEG recording ({', '.join(EEG_SUFFIXES)}) "
                                "in this folder")
        elif not path.exists() and glob.has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True)
                           if _is_recording(Path(p)))
            if not found:
                raise UserError(f"--edf {spec}: the pattern matches no EEG recording")
        else:
            found = [path]
        out += [p for p in found if p not in out]
    return out


# ----------------------------------------------------------------------------------------------
# how a task cuts recordings

@dataclass(frozen=True)
class TaskSignal:
    channels: tuple[str, ...] | None     # None: every channel the vocabulary knows
    mains_hz: float
    window_s: float
    stride_s: float
    band_hz: tuple[float, float] = BAND_HZ
    task_channels: tuple[str, ...] | None = None   # the task's own, whatever channels says


def task_signal(task: Task, channels: str = "task") -> TaskSignal:
    """The task's preprocessing (tasks/: the one declaration the prepare scripts read too).
    channels "all" takes every channel the vocabulary knows."""
    own = None if task.channels is None else tuple(task.channels)
    return TaskSignal(None if channels == "all" else own, float(task.mains_hz),
                      float(task.window_seconds), float(task.stride_seconds),
                      tuple(task.band_hz), task_channels=own)


# ----------------------------------------------------------------------------------------------
# opening

def _open_raw(path: Path):
    import mne

    from dataset_maker import common
    if path.suffix.lower() in (".edf", ".bdf") and path.is_file():
        try:
            unscaled = common.check_edf_header(path)
        except common.BadRecording as err:
            raise RecordingError(str(err)) from None
    else:
        unscaled = set()
    try:
        if path.suffix.lower() == ".cnt":   # its bit depth is found by reading it (common)
            return common.read_raw(path), unscaled
        return mne.io.read_raw(path, preload=False, verbose="ERROR"), unscaled
    except common.BadRecording as err:
        raise RecordingError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - MNE raises many types for damaged files
        if "unsupported file" in str(err).lower() or "not supported" in str(err).lower():
            raise RecordingError(f"unsupported file type {path.suffix!r} (not a format MNE "
                                 "reads)") from None
        raise RecordingError(f"unreadable: {type(err).__name__}: {err}") from None


def bipolar_stand_ins(raw_names, picks, names) -> list[tuple[str, str]]:
    """(raw name, electrode) of derivations between two scalp electrodes read as their active
    electrode ('Fpz-Cz' as FPZ): the model's electrode embedding never saw such a signal. A
    derivation to an ear or mastoid (A1/A2/M1/M2) is a referential channel and is not listed."""
    out = []
    for i, name in zip(picks, names):
        entry, why = dataset.explain_channel(raw_names[i])
        if not why.startswith("derivation named by its active electrode"):
            continue
        reference = dataset.clean_channel_name(raw_names[i]).split("-")[-1]
        if reference not in dataset.REFERENCE_ELECTRODES:
            out.append((raw_names[i], name))
    return out


@dataclass
class Recording:
    """An opened recording, cut into a task's windows; nothing of its signal is held."""
    name: str
    path: Path | None
    raw: object                       # mne.io.BaseRaw, not preloaded when read from a file
    picks: list[int]
    ch_names: list[str]
    left_out: list                    # [(raw name, why)]
    stand_ins: list                   # [(raw name, electrode)] bipolar derivations
    sfreq: float                      # the file's rate
    signal: TaskSignal
    window_s: float
    stride_s: float
    annotations: object               # mne.Annotations, onsets from the recording's start
    notes: list[str] = field(default_factory=list)

    # -- the 200 Hz grid -----------------------------------------------------------------------
    @property
    def ratio(self) -> tuple[int, int]:
        frac = Fraction(SAMPLING_RATE / self.sfreq).limit_denominator(10_000)
        return frac.numerator, frac.denominator

    @property
    def n_out(self) -> int:
        up, down = self.ratio
        return self.raw.n_times * up // down

    @property
    def seconds(self) -> float:
        return self.raw.n_times / self.sfreq

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * SAMPLING_RATE))

    @property
    def stride_samples(self) -> int:
        return int(round(self.stride_s * SAMPLING_RATE))

    @property
    def n_windows(self) -> int:
        return len(range(0, self.n_out - self.window_samples + 1, self.stride_samples))

    @property
    def band(self) -> tuple[float, float | None]:
        low, high = self.signal.band_hz
        return low, (high if high < self.sfreq / 2 else None)

    @property
    def notch_hz(self) -> float | None:
        return self.signal.mains_hz if self.signal.mains_hz < self.sfreq / 2 else None

    def filters_text(self) -> str:
        low, high = self.band
        text = f"band-pass {low:g}-{high:g} Hz" if high else f"high-pass {low:g} Hz (no " \
            f"{self.signal.band_hz[1]:g} Hz low-pass: the file's Nyquist is {self.sfreq / 2:g} Hz)"
        text += f", notch {self.notch_hz:g} Hz" if self.notch_hz else ", no notch"
        return text + f", resampled {self.sfreq:g} -> {SAMPLING_RATE} Hz"

    # -- reading -------------------------------------------------------------------------------
    def _pad_in(self) -> int:
        import mne
        low, high = self.band
        taps = len(mne.filter.create_filter(None, self.sfreq, low, high, verbose="ERROR"))
        if self.notch_hz:
            taps += int(3.3 * self.sfreq)   # MNE's notch: a 1 Hz transition, 3.3 / 1 s long
        up, down = self.ratio
        pad = taps // 2 + int(PAD_MARGIN_SECONDS * self.sfreq)
        return -(-pad // down) * down

    def read(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Samples [start, stop) of the 200 Hz grid, preprocessed (C, T) microvolts, with the
        unfiltered source-rate microvolts of the same span and the span's first source sample."""
        import mne
        from scipy.signal import resample_poly

        up, down = self.ratio
        pad = self._pad_in()
        a = max(0, (start * down // up) // down * down - pad)
        b = min(self.raw.n_times, -(-stop * down // up) + pad)
        x = self.raw.get_data(picks=self.picks, start=a, stop=b) * 1e6   # volts -> microvolts
        if not np.isfinite(x).all():
            bad = [self.ch_names[i] for i in np.where(~np.isfinite(x).all(axis=1))[0]]
            raise RecordingError(f"NaN/Inf values in channels: {', '.join(bad)} (from "
                                 f"{a / self.sfreq:.1f} s)")
        low, high = self.band
        y = mne.filter.filter_data(x, self.sfreq, low or None, high, verbose="ERROR")
        if self.notch_hz:
            y = mne.filter.notch_filter(y, self.sfreq, self.notch_hz, verbose="ERROR")
        if (up, down) != (1, 1):
            y = resample_poly(y, up, down, axis=1)
        offset = a * up // down
        first = int(round(start * down / up))
        raw_uv = x[:, first - a:int(round(stop * down / up)) - a]
        return y[:, start - offset:stop - offset], raw_uv, first

    def blocks(self, window_ids):
        """(ids, starts in seconds, processed (n, C, L) float32, raw windows [(C, l)]) of the
        windows, a block of at most BLOCK_SECONDS at a time."""
        ids = list(window_ids)
        length, stride = self.window_samples, self.stride_samples
        per_block = max(1, int((BLOCK_SECONDS * SAMPLING_RATE - length) // stride) + 1)
        up, down = self.ratio
        raw_length = int(round(length * down / up))
        i = 0
        while i < len(ids):
            chunk = [ids[i]]
            while (i + len(chunk) < len(ids) and ids[i + len(chunk)] == chunk[-1] + 1
                   and len(chunk) < per_block):
                chunk.append(ids[i + len(chunk)])
            i += len(chunk)
            lo, hi = chunk[0] * stride, chunk[-1] * stride + length
            data, raw_uv, first = self.read(lo, hi)
            windows = np.stack([data[:, k * stride - lo:k * stride - lo + length]
                                for k in chunk]).astype(np.float32)
            raws = []
            for k in chunk:
                s = int(round(k * stride * down / up)) - first
                raws.append(raw_uv[:, s:s + raw_length])
            yield chunk, [k * self.stride_s for k in chunk], windows, raws


def _relative_annotations(raw):
    import mne
    ann = raw.annotations
    shift = raw.first_time if ann.orig_time is not None else 0.0
    return mne.Annotations(ann.onset - shift, ann.duration, ann.description)


def open_recording(source, task: Task, channels: str = "task") -> Recording:
    """A path or an mne.io.BaseRaw, checked and cut as `task` cuts recordings. Raises
    RecordingError (the file cannot be used) or UserError (the task cannot cut any)."""
    import mne

    spec = task_signal(task, channels)
    if isinstance(source, mne.io.BaseRaw):
        raw, unscaled, path = source, set(), None
        name = display_name(source.filenames[0]) if source.filenames and source.filenames[0] \
            else "raw"
    else:
        path = Path(source)
        name = display_name(path)
        if not path.is_file():
            raise RecordingError("no such file")
        raw, unscaled = _open_raw(path)
    raw_names = list(raw.ch_names)
    picks, names, left_out, missing = dataset.match_channels(raw_names, spec.channels)
    if missing:
        present = [dataset.normalise_channel(n) or dataset.clean_channel_name(n)
                   for n in raw_names]
        raise RecordingError(f"missing channels: {', '.join(missing)} (task {task.name} needs "
                             f"{', '.join(spec.channels)}; the file has {', '.join(present)}; "
                             "--channels all takes whatever it has)")
    if not picks:
        listed = [r for r, _ in left_out]
        shown = ", ".join(listed[:12]) + (f", ... ({len(listed)} in all)"
                                          if len(listed) > 12 else "")
        raise RecordingError("missing channels: no channel of the vocabulary found among "
                             f"{shown}")
    bad_scale = [raw_names[i] for i in picks if raw_names[i] in unscaled]
    if bad_scale:
        raise RecordingError("undefined scaling (digital minimum = maximum) in channels: "
                             f"{', '.join(bad_scale)}")
    from dataset_maker.signals import channel_sample_rates

    rates = channel_sample_rates(raw)
    if rates is not None and len({round(rates[i], 6) for i in picks}) > 1:
        raise RecordingError("sampling-rate mismatch: channels sampled at "
                             f"{sorted({round(rates[i], 6) for i in picks})} Hz")
    try:    # many channels: fewer seconds per window, as prepare_custom.py cuts them
        seconds, stride = fit_window(spec.window_s, spec.stride_s, len(names))
    except ValueError as err:
        raise RecordingError(str(err)) from None
    rec = Recording(name, path, raw, picks, names, left_out,
                    bipolar_stand_ins(raw_names, picks, names), float(raw.info["sfreq"]), spec,
                    float(seconds), float(stride), _relative_annotations(raw))
    if rec.n_out < PATCH_SIZE:
        raise RecordingError(f"the recording is {rec.seconds:.2f} s long, shorter than one "
                             "second (one EEG token)")
    if rec.n_windows == 0:
        raise RecordingError(f"{rec.seconds:.1f} s is shorter than one {task.name} window "
                             f"({seconds:g} s)")
    return rec


def window_count_text(rec: Recording) -> str:
    return (f"{rec.n_windows} windows of {rec.window_s:g} s every {rec.stride_s:g} s "
            f"({math.floor(rec.seconds / 60):d} min {rec.seconds % 60:.0f} s)")
