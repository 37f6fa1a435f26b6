"""The one writer of dataset_maker's files: atomic writes, sample pickles, errors.tsv, JSON.

Every file goes through `atomic_write` (temporary name beside it, fsync, rename), so a killed run
never leaves a torn file under the real name. Pickle folders and shard stores share
`write_errors` (one quoting) and `write_json`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
from pathlib import Path

import numpy as np


class UserError(Exception):
    """A mistake in the command line or the data as a whole (nothing produced, an empty split,
    a second run on one --out_dir): `cli.script_main` prints it as one line and exits 2."""


def atomic_write(path, write) -> Path:
    """`write(tmp)` fills a temporary file beside `path`, which is then renamed to `path` (its
    leftover `.<name>.tmp<pid>` of a killed run is removed by the next run)."""
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


def write_bytes(path, payload: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(payload))


def write_json(path, data, indent: int | None = None) -> Path:
    return write_bytes(path, json.dumps(data, indent=indent).encode())


def remove_temp_files(folder: Path) -> None:
    """The temporary files a killed run left (nothing else writes `.*.tmp*` names)."""
    for tmp in Path(folder).rglob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def write_sample(path: Path, X: np.ndarray, ch_names, y=None, recording: str | None = None,
                 subject: str | None = None, window: int | None = None,
                 onset_s: float | None = None):
    """One float32 sample pickle. `recording`, `subject`, `window` (index in the recording) and
    `onset_s` let an evaluation report per recording and subject (dataset.load_sample reads
    them; older files lack them)."""
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
    write_bytes(path, pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))


def printable_name(name: str) -> str:
    """A file name as text that always encodes: bytes that are not UTF-8 (kept by Python as
    lone surrogates) become \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", errors="backslashreplace")


def write_errors(out_dir: Path, errors) -> Path:
    """errors.tsv through the csv module: names with tabs, newlines or quotes are quoted, so
    every row reads back with csv.reader(delimiter='\\t')."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(["file", "reason"])
    for name, reason in sorted((printable_name(str(f)), printable_name(" ".join(str(r).split())))
                               for f, r in errors):
        writer.writerow([name, reason])
    return write_bytes(Path(out_dir) / "errors.tsv", buffer.getvalue().encode("utf-8"))
