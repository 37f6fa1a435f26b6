"""The shared core of every prepare script: read, clean, resample, window, write, resume, report.

A prepare script lists its recordings (`Recording`: path, id, subject, split, dataset extras),
gives a module-level `process(recording) -> list[Sample]` that uses `load_eeg` and `windows`,
and calls `run(...)`. Everything else (parallelism, atomic writes, resume markers, errors.tsv,
splits.json, the summary) lives here once.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import pickle
import random
import sys
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

import dataset

TARGET_SFREQ = dataset.SAMPLING_RATE
BAND_HZ = (0.1, 75.0)  # spec section 1
FLAT_STD_VOLTS = 1e-9  # a channel with less than 0.001 uV of variation carries no EEG
DONE_DIR = ".done"
STAGING_DIR = ".staging"  # samples of recordings whose split is chosen after processing
LOCK_NAME = ".lock"
SPLIT_SEED = 0
EDF_HEADER_BYTES = 256
EDF_SIGNAL_HEADER_BYTES = 256


class BadRecording(Exception):
    """A recording that is skipped; the message is its reason in errors.tsv."""


class UserError(Exception):
    """A mistake in the command line or the data as a whole (nothing produced, an empty split,
    a second run on one --out_dir): `script_main` prints it as one line and exits 2."""


USER_ERROR_EXIT = 2


def script_main(main, argv=None):
    """Run a prepare script's main(argv); a UserError becomes one line on stderr and exit 2."""
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


@dataclass
class Recording:
    path: Path
    rec_id: str  # unique; sample files are named <rec_id>_<k>.pkl
    subject: str
    split: str | None = None  # None when the script splits inside a recording (SEED trials)
    extra: dict = field(default_factory=dict)


@dataclass
class Sample:
    split: str
    X: np.ndarray  # (C, T) microvolts at 200 Hz
    ch_names: list[str]
    y: int | None = None
    unit: str | None = None  # what splits.json files it under when not the subject (SEED: trial)
    onset_s: float | None = None  # where the window starts in its recording, when the script knows


@dataclass(frozen=True)
class SignalSpec:
    """How a dataset's recordings are read: which channels, which mains, which rate to expect."""

    # normalised names in output order; None = every vocabulary channel present
    channels: tuple[str, ...] | None
    mains_hz: float
    expected_sfreq: float | None = None
    cnt_format: str = "auto"
    band_hz: tuple[float, float] = BAND_HZ   # band-pass; prepare_custom.py --band changes it


@dataclass
class Eeg:
    data: np.ndarray  # (C, T) float64 microvolts at 200 Hz
    ch_names: list[str]
    raw_ch_names: list[str]
    source_sfreq: float
    left_out: list = field(default_factory=list)  # [(raw name, why)] of channels not kept

    @property
    def seconds(self) -> float:
        return self.data.shape[1] / TARGET_SFREQ


# ----------------------------------------------------------------------------- reading


def normalise_channel_name(name: str) -> str:
    """'EEG Fp1-REF' -> 'FP1'; 'EEG C3-M2' -> 'C3'; vocabulary spellings kept ('FTT9h'); through
    the one normaliser, dataset.normalise_channel. A name it cannot place comes back cleaned
    ('EEG EKG1-REF' -> 'EKG1')."""
    return dataset.normalise_channel(name) or dataset.clean_channel_name(name)


def read_raw(path: Path, cnt_format: str = "auto"):
    """Open a recording with MNE (data loaded): EDF/BDF/CNT by their readers, any other format
    through mne.io.read_raw."""
    import mne

    suffix = path.suffix.lower()
    try:
        if suffix == ".edf":
            return mne.io.read_raw_edf(path, preload=True, verbose="ERROR")
        if suffix == ".bdf":
            return mne.io.read_raw_bdf(path, preload=True, verbose="ERROR")
        if suffix == ".cnt":
            return _read_cnt(path, cnt_format)
        # BrainVision .vhdr, FIF, EEGLAB .set, ...: whatever MNE's generic reader knows
        return mne.io.read_raw(path, preload=True, verbose="ERROR")
    except BadRecording:
        raise
    except Exception as error:  # MNE raises many types for damaged files
        if "unsupported file" in str(error).lower():
            raise BadRecording(f"unsupported file type {suffix!r} (not a format MNE reads)") \
                from error
        raise BadRecording(f"unreadable: {type(error).__name__}: {error}") from error


def _read_cnt(path: Path, cnt_format: str):
    """CNT headers often do not say 16 or 32 bit: MNE's 'auto' fails on many files, and a wrong
    explicit format reads without error but gives noise, so keep the format whose signal is
    smoothest (EEG is strongly autocorrelated, mis-decoded bytes are not)."""
    import mne

    read = partial(mne.io.read_raw_cnt, path, preload=True, verbose="ERROR")
    if cnt_format != "auto":
        return read(data_format=cnt_format)
    try:
        return read(data_format="auto")
    except Exception:
        pass
    candidates = []
    for data_format in ("int32", "int16"):
        try:
            raw = read(data_format=data_format)
        except Exception:
            continue
        candidates.append((_roughness(raw.get_data()), data_format, raw))
    if not candidates:
        raise BadRecording("unreadable CNT with data_format auto, int32 and int16")
    return min(candidates, key=lambda c: c[0])[2]


def _roughness(data: np.ndarray) -> float:
    std = data.std(axis=1)
    keep = std > 0
    if not keep.any():
        return float("inf")
    step = np.abs(np.diff(data[keep], axis=1)).mean(axis=1)
    return float(np.median(step / std[keep]))


def _channel_sample_rates(raw) -> list[float] | None:
    """Per-channel rates from the EDF/BDF header, where MNE keeps them (it resamples mixed
    rates)."""
    extras = getattr(raw, "_raw_extras", [None])[0] or {}
    n_samps, record = extras.get("n_samps"), extras.get("record_length")
    if n_samps is None or record is None:
        return None
    duration = record[0] if np.ndim(record) else record
    return [float(n) / float(duration) for n in np.asarray(n_samps).tolist()] if duration else None


# What load_eeg did to the recordings the current process() call read (the shard store keeps it
# with every window); reset per recording by the shard writer's worker.
_PROVENANCE: list[dict] = []


def _edf_field(header: bytes, start: int, width: int, count: int) -> list[str]:
    return [header[start + i * width: start + (i + 1) * width].decode("latin-1").strip()
            for i in range(count)]


def check_edf_header(path: Path) -> set[str]:
    """What MNE reads without complaint (its warnings are silenced) but must not pass: a file
    shorter than its header promises (truncated) -> BadRecording. Returns the labels of signals
    whose digital minimum equals their digital maximum (scaling undefined)."""
    bytes_per_sample = 3 if path.suffix.lower() == ".bdf" else 2
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(EDF_HEADER_BYTES)
        try:
            n_signals = int(head[252:256].decode("latin-1").strip())
            header_bytes = int(head[184:192].decode("latin-1").strip())
            n_records = int(head[236:244].decode("latin-1").strip())
        except ValueError:
            return set()  # MNE's reader names what is wrong with such a header
        signals = f.read(n_signals * EDF_SIGNAL_HEADER_BYTES)
    if len(signals) < n_signals * EDF_SIGNAL_HEADER_BYTES:
        raise BadRecording(f"truncated: {size} bytes, shorter than its own header")
    labels = _edf_field(signals, 0, 16, n_signals)
    offset = n_signals * (16 + 80 + 8 + 8 + 8)
    digital_min = _edf_field(signals, offset, 8, n_signals)
    digital_max = _edf_field(signals, offset + 8 * n_signals, 8, n_signals)
    n_samples = _edf_field(signals, offset + 16 * n_signals + 80 * n_signals, 8, n_signals)
    try:
        record_bytes = sum(int(n) for n in n_samples) * bytes_per_sample
    except ValueError:
        return set()
    if n_records > 0 and record_bytes > 0:
        expected = header_bytes + n_records * record_bytes
        if size < expected:
            raise BadRecording(f"truncated: {size} bytes, the header promises {expected} "
                               f"({n_records} records of {record_bytes} bytes)")
    return {label for label, low, high in zip(labels, digital_min, digital_max) if low == high}


def load_eeg(path, spec: SignalSpec) -> Eeg:
    """Read, pick, check, band-pass, notch, resample to 200 Hz; microvolts. Raises BadRecording."""
    path = Path(path)
    undefined_scaling = set()
    if path.suffix.lower() in (".edf", ".bdf") and path.is_file():
        undefined_scaling = check_edf_header(path)
    raw = read_raw(path, spec.cnt_format)
    raw_names = list(raw.ch_names)
    picks, names, left_out = _pick_channels(raw_names, spec.channels)
    unscaled = [raw_names[i] for i in picks if raw_names[i] in undefined_scaling]
    if unscaled:
        raise BadRecording(f"undefined scaling (digital minimum = maximum) in channels: "
                           f"{', '.join(unscaled)}")
    _check_sampling_rate(raw, picks, spec.expected_sfreq)
    raw.pick(picks)
    raw.rename_channels(dict(zip([raw_names[i] for i in picks], names)))
    raw.set_channel_types({n: "eeg" for n in names}, on_unit_change="ignore", verbose="ERROR")
    _check_values(raw.get_data(), names)
    nyquist = raw.info["sfreq"] / 2
    low, high = spec.band_hz
    raw.filter(l_freq=low or None, h_freq=high if high < nyquist else None, verbose="ERROR")
    if spec.mains_hz < nyquist:
        raw.notch_filter(spec.mains_hz, verbose="ERROR")
    _PROVENANCE.append({"source_file": str(path), "source_sfreq": float(raw.info["sfreq"]),
                        "band_low_hz": low, "band_high_hz": high if high < nyquist else None,
                        "notch_hz": spec.mains_hz if spec.mains_hz < nyquist else None})
    if raw.info["sfreq"] != TARGET_SFREQ:
        raw.resample(TARGET_SFREQ, verbose="ERROR")
    data = raw.get_data(units="uV")
    return Eeg(data=data, ch_names=names, raw_ch_names=raw_names,
               source_sfreq=float(raw.info["sfreq"]), left_out=left_out)


def _pick_channels(raw_names, wanted):
    picks, names, left_out, missing = dataset.match_channels(raw_names, wanted)
    if missing:
        raise BadRecording(f"missing channels: {', '.join(missing)}")
    if not picks:
        names = [raw for raw, _ in left_out]
        listed = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise BadRecording(f"missing channels: no channel of the vocabulary found among {listed}")
    return picks, names, left_out


def _check_sampling_rate(raw, picks, expected):
    rates = _channel_sample_rates(raw)
    if rates is not None:
        picked = {round(rates[i], 6) for i in picks}
        if len(picked) > 1:
            raise BadRecording(f"sampling-rate mismatch: channels sampled at {sorted(picked)} Hz")
        if picked and abs(picked.pop() - raw.info["sfreq"]) > 1e-6:
            raise BadRecording(f"sampling-rate mismatch: header says {raw.info['sfreq']} Hz")
    if expected is not None and abs(raw.info["sfreq"] - expected) > 1e-6:
        raise BadRecording(f"sampling-rate mismatch: {raw.info['sfreq']:g} Hz, "
                           f"expected {expected:g} Hz")


def _check_values(data, names):
    finite = np.isfinite(data)
    if not finite.all():
        bad = [names[i] for i in np.where(~finite.all(axis=1))[0]]
        raise BadRecording(f"NaN/Inf values in channels: {', '.join(bad)}")
    flat = [names[i] for i in np.where(data.std(axis=1) < FLAT_STD_VOLTS)[0]]
    if flat:
        raise BadRecording(f"flat channels: {', '.join(flat)}")


def windows(data: np.ndarray, seconds: float, stride_seconds: float | None = None, start: int = 0,
            stop: int | None = None) -> list[np.ndarray]:
    """Cut float32 windows of `seconds` (every `stride_seconds`) from samples [start, stop)."""
    length = int(round(seconds * TARGET_SFREQ))
    stride = int(round((stride_seconds or seconds) * TARGET_SFREQ))
    stop = data.shape[1] if stop is None else min(stop, data.shape[1])
    return [
        np.ascontiguousarray(data[:, s : s + length], dtype=np.float32)
        for s in range(max(start, 0), stop - length + 1, stride)
    ]


def require_duration(eeg: Eeg, seconds: float):
    if eeg.seconds < seconds:
        raise BadRecording(f"too short: {eeg.seconds:.1f} s, one window needs {seconds:g} s")


# ----------------------------------------------------------------------------- splits


def subject_of(path) -> str:
    """TUH and most file names start with the subject id: 'aaaaaaaa_s001_t000' -> 'aaaaaaaa'."""
    return Path(path).stem.split("_")[0]


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Train/val/test sizes; each non-empty split keeps at least one unit when n allows."""
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n >= 2 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n >= 3 else 0
    return n - n_val - n_test, n_val, n_test


def split_sorted(units, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Sorted units cut in order: the first to train, then val, then test."""
    ordered = sorted(set(units))
    n_train, n_val, _ = split_counts(len(ordered), val_fraction, test_fraction)
    return {u: "train" if i < n_train else "val" if i < n_train + n_val else "test"
            for i, u in enumerate(ordered)}


def split_shuffled(units, val_fraction: float, test_fraction: float = 0.0,
                   seed: int = SPLIT_SEED) -> dict[str, str]:
    """A fixed-seed random split of units (subjects)."""
    ordered = sorted(set(units))
    random.Random(seed).shuffle(ordered)
    n_train, n_val, _ = split_counts(len(ordered), val_fraction, test_fraction)
    return {u: "train" if i < n_train else "val" if i < n_train + n_val else "test"
            for i, u in enumerate(ordered)}


# ----------------------------------------------------------------------------- writing


def atomic_write(path, write) -> Path:
    """The one writer of dataset_maker: `write(tmp)` fills a temporary file beside `path`, which
    is then renamed to `path`, so a killed run never leaves a torn file under the real name (its
    leftover `.<name>.tmp<pid>` is removed by the next run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # durable before it takes the real name
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _write_bytes(path: Path, payload: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(payload))


def write_sample(path: Path, X: np.ndarray, ch_names, y=None, recording: str | None = None,
                 subject: str | None = None, window: int | None = None,
                 onset_s: float | None = None):
    """One float32 sample pickle, written under a temporary name and renamed. `recording`,
    `subject`, `window` (index in the recording) and `onset_s` let an evaluation report per
    recording and subject (dataset.load_sample reads them; older files lack them)."""
    sample = {"X": np.asarray(X, dtype=np.float32), "ch_names": list(ch_names)}
    if y is not None:
        sample["y"] = int(y)
    for key, value in (("recording", recording), ("subject", subject)):
        if value is not None:
            sample[key] = str(value)
    if window is not None:
        sample["window"] = int(window)
    if onset_s is not None:
        sample["onset_s"] = float(onset_s)
    _write_bytes(path, pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))


def _marker(out_dir: Path, rec_id: str) -> Path:
    return out_dir / DONE_DIR / f"{rec_id}.json"


def process_and_write(process, out_dir: Path, recording: Recording):
    """Worker: run a dataset's process() on one recording, write its samples, then its marker.

    Returns (recording, record_dict or None, error reason or None)."""
    try:
        samples, seconds = _call_process(process, recording)
    except BadRecording as error:
        return recording, None, str(error)
    # a bug or an unforeseen file problem must not stop the other recordings
    except Exception as error:
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return recording, None, f"unexpected error: {detail}"
    written = []
    for k, sample in enumerate(samples):
        name = f"{recording.rec_id}_{k:04d}.pkl"
        folder = STAGING_DIR if sample.split is None else sample.split
        write_sample(out_dir / folder / name, sample.X, sample.ch_names, sample.y,
                     recording=recording.rec_id, subject=recording.subject, window=k,
                     onset_s=sample.onset_s)
        written.append({"split": sample.split, "file": name, "y": sample.y, "unit": sample.unit})
    record = {"recording": str(recording.path), "subject": recording.subject, "seconds": seconds,
              "samples": written}
    _write_bytes(_marker(out_dir, recording.rec_id), json.dumps(record).encode())
    return recording, record, None


def _call_process(process, recording):
    result = process(recording)
    samples, seconds = result if isinstance(result, tuple) else (result, 0.0)
    if not samples:
        raise BadRecording("no samples: nothing to cut from this recording")
    return samples, seconds


def _remove_temp_files(out_dir: Path):
    for tmp in out_dir.rglob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def _load_done(out_dir: Path, rec_id: str):
    marker = _marker(out_dir, rec_id)
    if not marker.exists():
        return None
    try:
        record = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    complete = all(_sample_path(out_dir, s) is not None for s in record["samples"])
    return record if complete else None


def _sample_path(out_dir: Path, sample: dict) -> Path | None:
    """Where a written sample is now: its split's folder, or (split chosen after processing)
    the staging folder or the folder an earlier run moved it to."""
    folders = [sample["split"]] if sample["split"] is not None else [
        STAGING_DIR, *sorted(p.name for p in out_dir.iterdir()
                             if p.is_dir() and not p.name.startswith("."))]
    for folder in folders:
        path = out_dir / folder / sample["file"]
        if path.exists():
            return path
    return None


def run(dataset_name: str, recordings: list[Recording], process, out_dir, splits: tuple[str, ...],
        workers: int | None = None, listing_errors: list[tuple[str, str]] = (),
        split_notes: dict | None = None,
        assign_splits=None, fmt: str = "pickle", shard_mb: float | None = None):
    """Process recordings in parallel (resuming finished ones), then write errors.tsv, splits.json
    and print the summary. Returns the summary dict.

    With `assign_splits(recordings)` (sets each one's `split`), splits are chosen after
    processing over the recordings that produced samples, so a broken recording never takes a
    split slot; its samples wait in the staging folder until then. A run that produces nothing,
    or leaves one of `splits` empty, raises UserError (after writing errors.tsv).

    fmt "shards": the windows go to the sharded store (dataset_maker/shards.py) instead of one
    pickle each."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out_dir {out_dir} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "shards":
        from dataset_maker import shard_run

        with _exclusive(out_dir):
            _make_unique_ids(recordings)
            return shard_run.run(dataset_name, recordings, process, out_dir, splits, workers,
                                 listing_errors, split_notes, shard_mb, assign_splits)
    with _exclusive(out_dir):
        for split in splits:
            (out_dir / split).mkdir(parents=True, exist_ok=True)
        (out_dir / DONE_DIR).mkdir(parents=True, exist_ok=True)
        _remove_temp_files(out_dir)
        _make_unique_ids(recordings)
        if assign_splits is not None:
            for rec in recordings:
                rec.split = None

        records, errors = {}, list(listing_errors)
        todo = []
        for rec in recordings:
            done = _load_done(out_dir, rec.rec_id)
            if done is None:
                todo.append(rec)
            else:
                records[rec.rec_id] = done
        work = partial(process_and_write, process, out_dir)
        workers = max(1, workers or os.cpu_count() or 1)
        bar = tqdm(total=len(todo), desc=f"{dataset_name} recordings", unit="rec", disable=not todo)
        if workers == 1 or len(todo) <= 1:
            results = map(work, todo)
            _collect(results, records, errors, bar)
        else:
            import multiprocessing

            with multiprocessing.get_context().Pool(min(workers, len(todo))) as pool:
                _collect(pool.imap_unordered(work, todo), records, errors, bar)
        bar.close()

        if assign_splits is not None:
            produced = [rec for rec in recordings if rec.rec_id in records]
            assign_splits(produced)
            records = _place_samples(out_dir, produced, records)
        _write_errors(out_dir, errors)
        _write_splits(out_dir, dataset_name, [r for r in recordings if r.rec_id in records],
                      records, split_notes)
        summary = _summarise(dataset_name, recordings, records, errors, splits)
        print(format_summary(summary))
        _check_produced(summary, out_dir, len(recordings) + len(listing_errors))
    return summary


def _place_samples(out_dir: Path, produced: list[Recording], records: dict) -> dict:
    """Move each staged sample into the split its recording was given (resumed runs: from
    wherever an earlier run put it); returns the records with their final splits."""
    placed = {}
    for rec in produced:
        record = dict(records[rec.rec_id])
        samples = []
        for sample in record["samples"]:
            split = sample["split"] if sample["split"] is not None else rec.split
            if sample["split"] is None:
                target = out_dir / split / sample["file"]
                current = _sample_path(out_dir, sample)
                if current != target:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(current, target)
            samples.append({**sample, "split": split})
        record["samples"] = samples
        placed[rec.rec_id] = record
    staging = out_dir / STAGING_DIR
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    return placed


def _check_produced(summary, out_dir: Path, n_listed: int):
    if n_listed == 0:
        raise UserError(f"no recordings found: --raw_dir holds no file of this dataset's type "
                        f"and layout (see the script's --help); nothing written to {out_dir}")
    if summary["recordings_ok"] == 0:
        raise UserError(f"no recording produced samples ({summary['recordings_skipped']} "
                        f"skipped): see {out_dir / 'errors.tsv'}")
    empty = [split for split, counts in summary["samples"].items() if not sum(counts.values())]
    if empty:
        raise UserError(f"split {', '.join(empty)} is empty: too few recordings produced "
                        f"samples ({summary['recordings_ok']} ok, {summary['recordings_skipped']} "
                        f"skipped, see {out_dir / 'errors.tsv'}); add recordings")


class _exclusive:
    """An exclusive lock on out_dir/.lock for the whole run: a second run on the same folder
    would delete the first one's temporary files; it is refused instead."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / LOCK_NAME
        self.file = None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks, run unguarded
            return self
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise UserError(f"--out_dir {self.path.parent} is in use by another prepare run "
                            f"(pid {holder}); wait for it to finish or use another --out_dir")
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        if self.file is not None:
            self.path.unlink(missing_ok=True)  # still held: no other run can be inside
            self.file.close()  # closing releases the lock


def _collect(results, records, errors, bar):
    for recording, record, reason in results:
        if reason is not None:
            errors.append((str(recording.path), reason))
        else:
            records[recording.rec_id] = record
        bar.update(1)


def _make_unique_ids(recordings):
    """Recordings of one name in different folders (sample files are named after it) get the
    name plus a short hash of their folder; unique names stay as they are."""
    import hashlib

    counts = Counter(r.rec_id for r in recordings)
    for rec in recordings:
        if counts[rec.rec_id] > 1:
            folder = os.fsencode(str(Path(rec.path).parent))
            rec.rec_id = f"{rec.rec_id}__{hashlib.sha1(folder).hexdigest()[:8]}"
    counts = Counter(r.rec_id for r in recordings)
    duplicates = [rid for rid, n in counts.items() if n > 1]
    if duplicates:
        raise UserError(f"recording names must be unique, repeated: "
                        f"{', '.join(sorted(duplicates)[:5])}")


def printable_name(name: str) -> str:
    """A file name as text that always encodes: bytes that are not UTF-8 (kept by Python as
    lone surrogates) become \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def _write_errors(out_dir: Path, errors):
    """errors.tsv through the csv module: names with tabs, newlines or quotes are quoted, so
    every row reads back with csv.reader(delimiter='\\t')."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["file", "reason"])
    for name, reason in sorted((printable_name(f), printable_name(" ".join(r.split())))
                               for f, r in errors):
        writer.writerow([name, reason])
    _write_bytes(out_dir / "errors.tsv", buffer.getvalue().encode("utf-8"))


def _write_splits(out_dir: Path, dataset_name, recordings, records, notes):
    """Who went where, for audits and for the pretraining leakage guard (--exclude_subjects)."""
    splits = defaultdict(lambda: {"subjects": set(), "recordings": set(), "units": set()})
    for rec in recordings:
        if rec.split is not None:
            splits[rec.split]["subjects"].add(rec.subject)
            splits[rec.split]["recordings"].add(rec.rec_id)
    for rec_id, record in records.items():
        for s in record["samples"]:
            entry = splits[s["split"]]
            entry["subjects"].add(record["subject"])
            entry["recordings"].add(rec_id)
            if s.get("unit") is not None:
                entry["units"].add(s["unit"])
    payload = {
        "dataset": dataset_name,
        "seed": SPLIT_SEED,
        "notes": notes or {},
        "splits": {
            name: {key: sorted(values) for key, values in entry.items() if values or key != "units"}
            for name, entry in sorted(splits.items())
        },
    }
    _write_bytes(out_dir / "splits.json", json.dumps(payload, indent=1).encode())


def _summarise(dataset_name, recordings, records, errors, splits):
    per_split = {s: Counter() for s in splits}
    for record in records.values():
        for s in record["samples"]:
            per_split.setdefault(s["split"], Counter())[str(s["y"])] += 1
    return {
        "dataset": dataset_name,
        "recordings_ok": len(records),
        "recordings_skipped": len(errors),
        "hours": sum(r["seconds"] for r in records.values()) / 3600,
        "samples": {s: dict(sorted(c.items())) for s, c in per_split.items()},
    }


def format_summary(summary) -> str:
    lines = [
        f"{summary['dataset']}: {summary['recordings_ok']} recordings ok, "
        f"{summary['recordings_skipped']} skipped (see errors.tsv), {summary['hours']:.2f} h of EEG"
    ]
    for split, counts in summary["samples"].items():
        total = sum(counts.values())
        by_label = ", ".join(f"y={k}: {v}" for k, v in counts.items() if k != "None")
        lines.append(f"  {split}: {total} samples" + (f" ({by_label})" if by_label else ""))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--raw_dir", type=Path, required=True, help="folder of the raw recordings")
    parser.add_argument("--out_dir", type=Path, required=True,
                        help="output folder (train/ val/ test/ splits.json errors.tsv)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel processes (default: all cores)")
    parser.add_argument("--format", choices=("pickle", "shards"), default="pickle",
                        help="one pickle per window (the public layout, default) or the sharded "
                             "store (a few Arrow files of --shard_mb; see dataset_maker/shards.py)")
    parser.add_argument("--shard_mb", type=float, default=None,
                        help="signal megabytes per shard with --format shards (default: 256)")
    return parser


def store_options(args) -> dict:
    """run()'s output-format keywords from arg_parser's flags."""
    return {"fmt": args.format, "shard_mb": args.shard_mb}


def find_files(raw_dir: Path, *suffixes: str) -> list[Path]:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise UserError(f"--raw_dir {raw_dir} is not a folder")
    wanted = {s.lower() for s in suffixes}
    return sorted(p for p in raw_dir.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
