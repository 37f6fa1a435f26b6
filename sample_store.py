"""Sharded sample store: EEG windows in memory-mapped Arrow shards instead of one pickle each.

A dataset folder in the store layout holds `shards.json` and `<split>/shard-NNNNN.arrow` files of
a few hundred MB (written by `dataset_maker/shards.py`: the prepare scripts' `--format shards`,
or `python dataset_maker/pack.py SRC --out_dir DST` for a pickle folder). Each shard is a
Hugging Face `datasets` Arrow file (`datasets.Dataset.from_file(path)` opens it) whose rows are
windows: the float32 signal, its channels, label, recording, subject and the preprocessing that
made it (source file and rate, band, notch).

Start-up reads `shards.json` only (window counts per shard): two million windows cost one small
file, not two million directory entries. Shards are opened lazily, memory-mapped, in whichever
process reads them (DataLoader workers included), and a window is a zero-copy slice of its shard.

`open_split(dataset_dirs, split, block_size, targets)` is what the trainers call: shards where a
folder has them, the sample pickles (`dataset.PickleLoader`) otherwise; the items are the same.
`MixedStores` draws several stores with per-store weights (pretraining on TUH plus the
downstream sets).
"""
from __future__ import annotations

import bisect
import json
import warnings
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

import dataset

MANIFEST = "shards.json"
STORE_FORMAT = "neurolm-shards"
STORE_VERSION = 1


class StoreError(dataset.SampleFileError):
    """A store folder that cannot be read; the message names the file. A SampleFileError, so
    a trainer reports it as one line wherever it surfaces (start-up or a DataLoader worker)."""


def is_store(folder) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise StoreError(f"{path}: unreadable store manifest ({error})") from error
    if manifest.get("format") != STORE_FORMAT:
        raise StoreError(f"{path}: not a {STORE_FORMAT} manifest")
    if manifest.get("version", 0) > STORE_VERSION:
        raise StoreError(f"{path}: store version {manifest['version']} is newer than this code")
    _check_entries(path, manifest.get("splits"))
    return manifest


def _check_entries(path: Path, splits) -> None:
    """Every shard entry: a file inside the store folder and a window count >= 0."""
    if not isinstance(splits, dict) or not all(isinstance(e, list) for e in splits.values()):
        raise StoreError(f"{path}: 'splits' must map each split to a list of shards")
    for split, entries in splits.items():
        for entry in entries:
            file = entry.get("file") if isinstance(entry, dict) else None
            windows = entry.get("windows") if isinstance(entry, dict) else None
            if not isinstance(file, str) or not file:
                raise StoreError(f"{path}: split {split!r} lists a shard without a file name")
            parts = PurePosixPath(file).parts
            if PurePosixPath(file).is_absolute() or ".." in parts or "\\" in file:
                raise StoreError(f"{path}: shard {file!r} lies outside the store folder")
            if isinstance(windows, bool) or not isinstance(windows, int) or windows < 0:
                raise StoreError(f"{path}: shard {file!r} has windows {windows!r}, not a count "
                                 ">= 0")


def open_arrow(path: Path):
    """The shard's table, memory-mapped (its buffers point into the page cache)."""
    import pyarrow as pa

    try:
        with pa.memory_map(str(path)) as source:   # the table keeps the mapping alive
            return pa.ipc.open_stream(source).read_all()
    except FileNotFoundError:
        raise StoreError(f"{path}: shard listed in {MANIFEST} is missing") from None
    except (OSError, pa.ArrowException) as error:   # truncated or overwritten
        raise StoreError(f"{path}: unreadable shard, truncated or damaged "
                         f"({type(error).__name__}: {error})") from None


class _Shard:
    """One opened shard: numpy views of its signal values and offsets per record batch."""

    def __init__(self, path: Path, expected_rows: int):
        table = open_arrow(path)
        if table.num_rows != expected_rows:
            raise StoreError(f"{path}: {table.num_rows} windows, the manifest says {expected_rows}"
                             " (a truncated or replaced shard)")
        self.table = table
        signal = table.column("X")
        self.starts = np.cumsum([0] + [len(c) for c in signal.chunks])
        self.values = [c.values.to_numpy(zero_copy_only=True) for c in signal.chunks]
        self.offsets = [c.offsets.to_numpy() for c in signal.chunks]
        self.n_channels = table.column("n_channels").to_numpy()
        self.ch_names = table.column("ch_names")
        self.labels = table.column("y")

    def window(self, row: int) -> dict:
        k = int(np.searchsorted(self.starts, row, side="right")) - 1
        r = row - self.starts[k]
        flat = self.values[k][self.offsets[k][r]: self.offsets[k][r + 1]]
        X = flat.reshape(int(self.n_channels[row]), -1)
        y = self.labels[row].as_py()
        return {"X": X, "ch_names": self.ch_names[row].as_py(), "y": y}

    def row(self, row: int) -> dict:
        """Every column of one window (provenance included), as plain values."""
        out = {name: self.table.column(name)[row].as_py() for name in self.table.column_names
               if name != "X"}
        out["X"] = self.window(row)["X"]
        return out


class ShardWindows(Dataset):
    """Windows of one split of a store, in shard order; `window(i)` -> {"X", "ch_names", "y"}."""

    def __init__(self, folder, split: str):
        self.folder = Path(folder)
        manifest = read_manifest(self.folder)
        entries = manifest.get("splits", {}).get(split)
        if not entries:
            raise StoreError(f"{self.folder / MANIFEST}: no windows in split {split!r}")
        self.paths = [self.folder / e["file"] for e in entries]
        self.rows = [int(e["windows"]) for e in entries]
        self.ends = np.cumsum(self.rows).tolist()
        self._open: dict[int, _Shard] = {}

    def __len__(self) -> int:
        return self.ends[-1]

    def _locate(self, index: int) -> tuple[_Shard, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} of {len(self)}")
        index %= len(self)
        s = bisect.bisect_right(self.ends, index)
        shard = self._open.get(s)
        if shard is None:
            if not self.paths[s].is_file():
                raise StoreError(f"{self.paths[s]}: shard listed in {MANIFEST} is missing")
            shard = self._open[s] = _Shard(self.paths[s], self.rows[s])
        return shard, index - (self.ends[s - 1] if s else 0)

    def window(self, index: int) -> dict:
        shard, row = self._locate(index)
        return shard.window(row)

    def record(self, index: int) -> dict:
        shard, row = self._locate(index)
        return shard.row(row)

    def __getitem__(self, index: int) -> dict:
        return self.window(index)

    def __getstate__(self):  # workers open their own mappings
        return {**self.__dict__, "_open": {}}


class ShardLoader(Dataset):
    """`dataset.PickleLoader`'s items (same keys, same values) read from a store's split."""

    def __init__(self, folder, split: str, block_size: int = 1024, targets: bool = True):
        self.windows = ShardWindows(folder, split)
        self.block_size = block_size
        self.targets = targets

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        sample = self.windows.window(index)
        with warnings.catch_warnings():  # a read-only view of the mapped shard, only ever read
            warnings.simplefilter("ignore", UserWarning)
            X = torch.from_numpy(sample["X"])
        item = dataset.eeg_tokens(X, sample["ch_names"], self.block_size)
        if self.targets:
            item.update(dataset.reconstruction_targets(item))
        return item


def open_folder(folder, split: str, block_size: int, targets: bool) -> Dataset:
    """One dataset folder's split: its shards when it is a store, its pickles otherwise."""
    if is_store(folder):
        return ShardLoader(folder, split, block_size, targets)
    return dataset.PickleLoader(dataset.sample_files(folder, split), block_size, targets)


def open_split(dataset_dirs, split: str, block_size: int, targets: bool,
               weights=None, seed: int = 0) -> Dataset:
    """The trainers' datasets: each folder's split (shards or pickles), one after another, or
    mixed with per-folder `weights` (see MixedStores)."""
    parts = [open_folder(f, split, block_size, targets) for f in dataset_dirs]
    if weights is not None:
        return MixedStores(parts, weights, seed)
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


class MixedStores(Dataset):
    """Several datasets drawn with weights: store k gives round(w_k * len_k) windows per epoch.

    Indices come as (epoch, i) from an epoch-keyed sampler (training.data); store k walks a
    fixed seeded permutation of its windows, epoch after epoch, so a weight of 0.25 shows every
    window once in four epochs and a weight of 2 shows each twice per epoch. A plain int index
    reads epoch 0 (data-dependent initialisations).
    """

    epoch_keyed = True

    def __init__(self, parts, weights, seed: int = 0):
        weights = [float(w) for w in weights]
        if len(weights) != len(parts):
            raise ValueError(f"{len(weights)} weights for {len(parts)} dataset folders")
        if any(not w > 0 for w in weights):
            raise ValueError(f"dataset weights must be positive, got {weights}")
        self.parts = list(parts)
        self.sizes = [len(p) for p in self.parts]
        self.per_epoch = [max(1, round(w * n)) for w, n in zip(weights, self.sizes)]
        self.ends = np.cumsum(self.per_epoch).tolist()
        self.seed = seed
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.ends[-1]

    def _order(self, k: int) -> np.ndarray:
        order = self._orders.get(k)
        if order is None:
            rng = np.random.default_rng([self.seed, k])
            order = self._orders[k] = rng.permutation(self.sizes[k])
        return order

    def locate(self, index) -> tuple[int, int]:
        """(store, window in the store) that an index (int or (epoch, i)) reads."""
        epoch, i = index if isinstance(index, tuple) else (0, index)
        k = bisect.bisect_right(self.ends, i)
        position = epoch * self.per_epoch[k] + i - (self.ends[k - 1] if k else 0)
        return k, int(self._order(k)[position % self.sizes[k]])

    def __getitem__(self, index):
        k, local = self.locate(index)
        return self.parts[k][local]

    def __getstate__(self):
        return {**self.__dict__, "_orders": {}}

