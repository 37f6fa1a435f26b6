"""Writing the sharded sample store (read by `sample_store.py`).

Shards are Hugging Face `datasets` Arrow files (stream format, the features in the schema's
metadata): `datasets.Dataset.from_file(shard)` opens one, memory-mapped. One row per window:

    X             float32 list, the (C, T) microvolt window flattened row by row
    n_channels    C;  ch_names  its channels (vocabulary spelling)
    y             label (null for pretraining windows)
    name          the window's name (the pickle it came from or would have been: rec_k.pkl)
    recording, subject, window (index in its recording), onset_s (seconds), source_file
    sfreq         rate of X (200 Hz); source_sfreq: the recording's rate before resampling
    band_low_hz, band_high_hz, notch_hz: the filters applied (null: not applied / unknown)

`ShardSetWriter` buffers windows of every split and, at `commit`, writes each split's buffer as
one shard (temp name, fsync, rename) and then `shards.json` (the same way). `shards.json` is the
commit point: a shard it does not list is a leftover of a killed run and is deleted on restart,
and the caller's progress (`committed`) is stored in it, so a killed run resumes from its last
commit without duplicating or losing windows.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

import dataset
import sample_store
from dataset_maker.files import atomic_write, write_json

DEFAULT_SHARD_MB = 256
SHARD_PATTERN = "shard-{:05d}.arrow"
PROVENANCE_KEYS = ("recording", "subject", "window", "onset_s", "source_file", "source_sfreq",
                   "band_low_hz", "band_high_hz", "notch_hz")


def features():
    """The rows' schema as `datasets.Features` (its arrow_schema carries the HF metadata)."""
    from datasets import Features, Sequence, Value

    text, real = Value("string"), Value("float64")
    return Features({
        "X": Sequence(Value("float32")), "n_channels": Value("int32"),
        "ch_names": Sequence(Value("string")), "y": Value("int64"), "name": text,
        "recording": text, "subject": text, "window": Value("int64"), "onset_s": real,
        "source_file": text, "sfreq": real,
        "source_sfreq": real, "band_low_hz": real, "band_high_hz": real, "notch_hz": real,
    })


class ShardSetWriter:
    """Windows of several splits -> `<out_dir>/<split>/shard-NNNNN.arrow` + `shards.json`."""

    def __init__(self, out_dir, shard_mb: float = DEFAULT_SHARD_MB, info: dict | None = None):
        self.out_dir = Path(out_dir)
        self.shard_bytes = int(shard_mb * 2**20)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if sample_store.is_store(self.out_dir):
            self.manifest = sample_store.read_manifest(self.out_dir)
        else:
            self.manifest = {"format": sample_store.STORE_FORMAT,
                             "version": sample_store.STORE_VERSION, "splits": {},
                             "committed": None}
        if info:
            self.manifest.setdefault("info", {}).update(info)
        self._remove_uncommitted()
        self.buffers: dict[str, list[dict]] = {}
        self.pending_bytes = 0
        self._schema = features().arrow_schema

    @property
    def committed(self):
        """What the caller stored at its last commit (None before the first)."""
        return self.manifest.get("committed")

    def _remove_uncommitted(self) -> None:
        listed = {e["file"] for entries in self.manifest["splits"].values() for e in entries}
        for shard in self.out_dir.glob("*/shard-*.arrow"):
            if shard.relative_to(self.out_dir).as_posix() not in listed:
                shard.unlink()
        for tmp in self.out_dir.glob("*/.shard-*.tmp*"):
            tmp.unlink()

    def next_shard_name(self, split: str) -> str:
        """File name (in the split folder) that the split's buffered windows will go to."""
        return SHARD_PATTERN.format(len(self.manifest["splits"].get(split, [])))

    def add(self, split: str, X, ch_names, y=None, name: str = "", **provenance) -> str:
        """Buffer one window; returns the shard file name it will be written to."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] != len(ch_names):
            raise ValueError(f"{name}: window of shape {X.shape} for {len(ch_names)} channels")
        row = {"X": X, "ch_names": [str(c) for c in ch_names], "y": None if y is None else int(y),
               "name": name, "sfreq": float(dataset.SAMPLING_RATE)}
        row.update({k: provenance.get(k) for k in PROVENANCE_KEYS})
        self.buffers.setdefault(split, []).append(row)
        self.pending_bytes += X.nbytes
        return self.next_shard_name(split)

    @property
    def full(self) -> bool:
        return self.pending_bytes >= self.shard_bytes

    def _table(self, rows: list[dict]):
        import pyarrow as pa

        lengths = np.array([r["X"].size for r in rows], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values = pa.array(np.concatenate([r["X"].reshape(-1) for r in rows]), type=pa.float32())
        columns = {"X": pa.ListArray.from_arrays(pa.array(offsets), values),
                   "n_channels": pa.array([r["X"].shape[0] for r in rows], type=pa.int32())}
        for field in self._schema:
            if field.name not in columns:
                columns[field.name] = pa.array([r[field.name] for r in rows], type=field.type)
        return pa.Table.from_pydict(columns, schema=self._schema)

    def commit(self, committed=None) -> None:
        """Write every split's buffered windows as one shard each, then shards.json (the commit
        point) with the caller's progress `committed`."""

        for split, rows in sorted(self.buffers.items()):
            if not rows:
                continue
            folder = self.out_dir / split
            folder.mkdir(parents=True, exist_ok=True)
            name = self.next_shard_name(split)
            atomic_write(folder / name, partial(self._write_table, self._table(rows)))
            self.manifest["splits"].setdefault(split, []).append(
                {"file": f"{split}/{name}", "windows": len(rows),
                 "bytes": (folder / name).stat().st_size})
        self.buffers = {}
        self.pending_bytes = 0
        self.manifest["committed"] = committed
        self.manifest["windows"] = {s: sum(e["windows"] for e in entries)
                                    for s, entries in self.manifest["splits"].items()}
        self._write_manifest()

    def _write_manifest(self) -> None:
        write_json(self.out_dir / sample_store.MANIFEST, self.manifest, indent=1)

    def names(self) -> dict[str, list[str]]:
        """{split: the window names of its committed shards, in order} (names column only)."""
        return {split: [name for e in entries
                        for name in _column(self.out_dir / e["file"], "name")]
                for split, entries in self.manifest["splits"].items()}

    def place(self, layout: dict[str, list[str]], committed=None) -> list[str]:
        """Rewrite the store so that each split holds exactly the windows `layout[split]` names,
        in that order, copied from wherever they are now (the staging folder, another split);
        a split whose shards already hold that list is kept, one missing from `layout` is
        dropped. New shards are written under unlisted names, then shards.json lists them (the
        commit point), then the shards it no longer lists are deleted, so a kill at any point
        leaves the old store or the new one. Returns the splits rewritten."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if self.buffers:
            raise RuntimeError("place() with uncommitted windows: commit() first")
        current = self.names()
        source = {}   # name -> (shard file, row)
        for split, entries in self.manifest["splits"].items():
            rows = iter(current[split])
            for e in entries:
                for row in range(e["windows"]):
                    source[next(rows)] = (e["file"], row)
        missing = [n for names in layout.values() for n in names if n not in source]
        if missing:
            raise ValueError(f"{self.out_dir}: {len(missing)} windows to place are not in the "
                             f"store, e.g. {missing[0]}")
        tables: dict[str, pa.Table] = {}
        splits, rewritten = {}, []
        for split, names in sorted(layout.items()):
            if not names:
                continue
            if current.get(split) == names:
                splits[split] = self.manifest["splits"][split]
                continue
            rewritten.append(split)
            folder = self.out_dir / split
            folder.mkdir(parents=True, exist_ok=True)
            taken = {_shard_number(e["file"]) for e in self.manifest["splits"].get(split, [])}
            number = max(taken, default=-1) + 1
            entries, pieces, size = [], [], 0

            def flush():
                nonlocal number, pieces, size
                table = pa.concat_tables(pieces).combine_chunks()
                name = SHARD_PATTERN.format(number)
                atomic_write(folder / name, partial(self._write_table, table))
                entries.append({"file": f"{split}/{name}", "windows": table.num_rows,
                                "bytes": (folder / name).stat().st_size})
                number, pieces, size = number + 1, [], 0

            for file, rows in _runs(source[n] for n in names):
                if file not in tables:
                    tables[file] = sample_store.open_arrow(self.out_dir / file)
                run = tables[file].slice(rows[0], len(rows))
                row_bytes = 4 * pc.list_value_length(run.column("X")).to_numpy()
                start = 0
                for end in range(1, len(rows) + 1):   # cut where the shard gets full
                    size += int(row_bytes[end - 1])
                    if size >= self.shard_bytes or end == len(rows):
                        pieces.append(run.slice(start, end - start))
                        start = end
                        if size >= self.shard_bytes:
                            flush()
            if pieces:
                flush()
            splits[split] = entries
        self.manifest["splits"] = splits
        self.manifest["committed"] = committed
        self.manifest["windows"] = {s: sum(e["windows"] for e in es) for s, es in splits.items()}
        self._write_manifest()
        tables.clear()
        self._remove_uncommitted()
        return rewritten

    def _write_table(self, table, tmp) -> None:
        import pyarrow as pa

        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_stream(sink, self._schema) as out:
            out.write_table(table)


def _column(path: Path, name: str) -> list:
    return sample_store.open_arrow(path).column(name).to_pylist()


def _shard_number(file: str) -> int:
    return int(Path(file).stem.rsplit("-", 1)[1])


def _runs(locations):
    """(file, row) pairs -> (file, [rows]) runs of consecutive rows of one file (a slice each)."""
    file, rows = None, []
    for f, row in locations:
        if f == file and row == rows[-1] + 1:
            rows.append(row)
            continue
        if rows:
            yield file, rows
        file, rows = f, [row]
    if rows:
        yield file, rows
