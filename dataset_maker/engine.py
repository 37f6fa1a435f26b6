"""The one runner of every prepare script: recordings processed in parallel, written through a
sink (one pickle per window, or the sharded store), resumed after a kill, reported.

A prepare script lists its recordings (`Recording`), gives a module-level
`process(recording) -> (list[Sample], Eeg)` and calls `run(...)`.

Resume: each finished recording leaves a marker (`OUT/.done/<rec_id>.json`) holding a settings
fingerprint: the code's FORMAT_VERSION, the script's `settings`, the recording's id, subject,
fixed split and `extra` (its labels), and the size and modification time of its file and of
its `inputs` (label files). A rerun reuses a recording only when its fingerprint is unchanged;
any other recording is processed again, and the samples of recordings an earlier run wrote
that are no longer listed are removed, so a rerun leaves what a run into an empty folder would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import traceback
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from dataset_maker.files import UserError, remove_temp_files, write_errors
from dataset_maker.signals import BadRecording
from dataset_maker.sinks import DONE_DIR, PickleSink, ShardSink, read_markers, remove_markers
from dataset_maker.splits import write_splits

# Raise when what a recording's samples hold changes for the same inputs: earlier outputs are
# then reprocessed instead of reused.
FORMAT_VERSION = 2
LOCK_NAME = ".lock"


@dataclass
class Recording:
    path: Path
    rec_id: str  # unique; sample files are named <rec_id>_<k>.pkl
    subject: str
    split: str | None = None  # None when the script splits inside a recording (SEED trials)
    extra: dict = field(default_factory=dict)
    inputs: tuple = ()  # other files process() reads (label files): a change redoes it


@dataclass
class Sample:
    split: str | None
    X: np.ndarray  # (C, T) microvolts at 200 Hz
    ch_names: list[str]
    y: int | None = None
    unit: str | None = None  # what splits.json files it under when not the subject (SEED: trial)
    onset_s: float | None = None  # where the window starts in its recording, when the script knows


# ----------------------------------------------------------------------------- fingerprints

def _plain(value):
    """JSON form of the values a fingerprint holds (settings dataclasses, paths, arrays)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    text = str(value)   # Path, BIDSPath: their path
    if " at 0x" in text:
        raise TypeError(f"cannot fingerprint {type(value).__name__}: its text is an address")
    return text


def _stat(path) -> list | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def fingerprint(dataset_name: str, recording: Recording, settings=None) -> str:
    """What made a recording's samples, hashed (see the module's docstring)."""
    payload = {"format": FORMAT_VERSION, "dataset": dataset_name, "settings": settings,
               "rec_id": recording.rec_id, "subject": recording.subject,
               "split": recording.split, "extra": recording.extra,
               "files": [[str(p), _stat(p)] for p in (recording.path, *recording.inputs)]}
    text = json.dumps(payload, sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- one recording

def process_one(process, recording: Recording):
    """Worker: (samples, seconds, provenance, None) or (None, 0, None, error reason)."""
    try:
        samples, eeg = process(recording)
        if not samples:
            raise BadRecording("no samples: nothing to cut from this recording")
    except BadRecording as error:
        return None, 0.0, None, str(error)
    except Exception as error:  # a bug or an unforeseen file problem must not stop the others
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return None, 0.0, None, f"unexpected error: {detail}"
    return samples, eeg.seconds, {"source_file": str(recording.path), **eeg.provenance}, None


def _work(process, writer, item):
    """Worker: process one recording; with a `writer` (a sink that writes in the workers)
    also write it. Returns (recording, header, record or (samples, seconds, provenance),
    error reason or None)."""
    recording, header = item
    samples, seconds, provenance, reason = process_one(process, recording)
    if reason is not None:
        return recording, header, None, reason
    if writer is not None:
        return recording, header, writer.write(header, samples, seconds, provenance), None
    return recording, header, (samples, seconds, provenance), None


# ----------------------------------------------------------------------------- the run

def run(dataset_name: str, recordings: list[Recording], process, out_dir, splits: tuple[str, ...],
        workers: int | None = None, listing_errors: list[tuple[str, str]] = (),
        split_notes: dict | None = None, assign_splits=None, fmt: str = "pickle",
        shard_mb: float | None = None, settings=None):
    """Process recordings in parallel (reusing finished ones made with the same settings),
    then write errors.tsv, splits.json and print the summary. Returns the summary dict.

    With `assign_splits(recordings)` (sets each one's `split`), splits are chosen after
    processing over the recordings that produced samples, so a broken recording never takes a
    split slot; its samples wait in the staging folder until then. A run that produces nothing,
    or leaves one of `splits` empty, raises UserError (after writing errors.tsv).

    fmt "shards": the windows go to the sharded store (dataset_maker/shards.py) instead of one
    pickle each. `settings`: the script's own preprocessing facts (channels, window, labels
    codes) that are not in each recording's `extra`."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out_dir {out_dir} is a file, not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    with OutDirLock(out_dir):
        remove_temp_files(out_dir)
        make_unique_ids(recordings)
        if assign_splits is not None:
            for rec in recordings:
                rec.split = None
        for split in splits:
            (out_dir / split).mkdir(parents=True, exist_ok=True)
        (out_dir / DONE_DIR).mkdir(parents=True, exist_ok=True)
        sink = (ShardSink(out_dir, dataset_name, shard_mb) if fmt == "shards"
                else PickleSink(out_dir))
        headers = {rec.rec_id: {"rec_id": rec.rec_id, "dataset": dataset_name,
                                "fingerprint": fingerprint(dataset_name, rec, settings),
                                "recording": str(rec.path), "subject": rec.subject}
                   for rec in recordings}
        records = _resume(out_dir, dataset_name, sink, headers)
        todo = [rec for rec in recordings if rec.rec_id not in records]
        errors = list(listing_errors)
        work = partial(_work, process, sink.worker_writer())
        workers = max(1, workers or os.cpu_count() or 1)
        bar = tqdm(total=len(todo), desc=f"{dataset_name} recordings", unit="rec",
                   disable=None if todo else True)
        items = [(rec, headers[rec.rec_id]) for rec in todo]
        if workers == 1 or len(todo) <= 1:
            _collect(map(work, items), sink, records, errors, bar)
        else:
            import multiprocessing

            with multiprocessing.get_context().Pool(min(workers, len(todo))) as pool:
                # in order: the shards must not depend on timing
                _collect(pool.imap(work, items), sink, records, errors, bar)
        bar.close()
        sink.finish()
        if assign_splits is not None:
            produced = [rec for rec in recordings if rec.rec_id in records]
            assign_splits(produced)
            records = sink.place(produced, records)
        write_errors(out_dir, errors)
        write_splits(out_dir, dataset_name, [r for r in recordings if r.rec_id in records],
                     records, split_notes)
        summary = summarise(dataset_name, records, errors, splits)
        print(format_summary(summary))
        _check_produced(summary, out_dir, len(recordings) + len(listing_errors))
    return summary


def _resume(out_dir: Path, dataset_name: str, sink, headers: dict) -> dict:
    """{rec_id: record} of the recordings an earlier run finished with the same fingerprint;
    everything else an earlier run wrote is removed (markers, samples, store windows)."""
    markers = read_markers(out_dir)
    others = sorted({str(m["dataset"]) for m in markers.values()
                     if m.get("dataset") not in (None, dataset_name)})
    if others:
        raise UserError(f"--out_dir {out_dir} holds samples of {', '.join(others)}, not "
                        f"{dataset_name}: use another --out_dir")
    reused = {rid: m for rid, m in markers.items()
              if rid in headers and m.get("fingerprint") == headers[rid]["fingerprint"]
              and sink.complete(m)}
    sink.keep_only(set(reused), set(markers) | set(headers))
    remove_markers(out_dir, set(markers) - set(reused))
    return reused


def _collect(results, sink, records, errors, bar):
    for recording, header, result, reason in results:
        bar.update(1)
        if reason is not None:
            errors.append((str(recording.path), reason))
            continue
        if isinstance(result, tuple):   # the sink writes in this process
            samples, seconds, provenance = result
            result = sink.write(header, samples, seconds, provenance)
        records[recording.rec_id] = result


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


class OutDirLock:
    """An exclusive lock on out_dir/.lock for the whole run: a second run on the same folder
    would delete the first one's temporary files; it is refused instead."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / LOCK_NAME
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


def make_unique_ids(recordings):
    """Recordings of one name in different folders (sample files are named after it) get the
    name plus a short hash of their folder; unique names stay as they are."""
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


def summarise(dataset_name, records, errors, splits):
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
