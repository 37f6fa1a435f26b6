"""Who goes to train, val and test: subject ids from file names, fixed-seed subject-disjoint
splits, and splits.json (the record of who went where)."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from dataset_maker.files import write_json

SPLIT_SEED = 0


def subject_of(path) -> str:
    """TUH and most file names start with the subject id: 'aaaaaaaa_s001_t000' -> 'aaaaaaaa'."""
    return Path(path).stem.split("_")[0]


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """Train/val/test sizes; each non-empty split keeps at least one unit when n allows."""
    n_val = max(1, round(n * val_fraction)) if val_fraction > 0 and n >= 2 else 0
    n_test = max(1, round(n * test_fraction)) if test_fraction > 0 and n >= 3 else 0
    return n - n_val - n_test, n_val, n_test


def _cut(ordered, val_fraction, test_fraction) -> dict[str, str]:
    n_train, n_val, _ = split_counts(len(ordered), val_fraction, test_fraction)
    return {u: "train" if i < n_train else "val" if i < n_train + n_val else "test"
            for i, u in enumerate(ordered)}


def split_sorted(units, val_fraction: float, test_fraction: float) -> dict[str, str]:
    """Sorted units cut in order: the first to train, then val, then test."""
    return _cut(sorted(set(units)), val_fraction, test_fraction)


def split_shuffled(units, val_fraction: float, test_fraction: float = 0.0,
                   seed: int = SPLIT_SEED) -> dict[str, str]:
    """A fixed-seed random split of units (subjects)."""
    ordered = sorted(set(units))
    random.Random(seed).shuffle(ordered)
    return _cut(ordered, val_fraction, test_fraction)


def write_splits(out_dir: Path, dataset_name, recordings, records, notes) -> Path:
    """splits.json: who went where, for audits and for the pretraining leakage guard
    (--exclude_subjects). `records` are the engine's {rec_id: record} of the recordings that
    produced samples (each sample with its final split and unit)."""
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
    return write_json(Path(out_dir) / "splits.json", payload, indent=1)
