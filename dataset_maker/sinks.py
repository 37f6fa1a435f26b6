"""Where the engine's windows go: one pickle per window (`PickleSink`, the public layout) or the
sharded store (`ShardSink`). Both keep the same resume markers (`OUT/.done/<rec_id>.json`: the
recording's fingerprint and its samples) and answer the same questions: is a finished
recording still complete, which samples of earlier runs must go, where do staged samples land
once splits are chosen.

Shards: workers only process; the main process writes every window in recording order (any
worker count gives the same shards) and commits all splits' open shards together between
recordings once they hold --shard_mb of signal. A recording's marker carries the number of the
commit that holds its windows and counts only once `shards.json` records that commit: a killed
run redoes exactly the recordings after its last commit. With splits chosen after processing,
windows go to staging shards first and `ShardSetWriter.place` copies them into their splits
(Arrow slices, no reprocessing); a rerun over the same recordings rewrites nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import sample_store
from dataset_maker.files import UserError, write_json, write_sample
from dataset_maker.shards import DEFAULT_SHARD_MB, ShardSetWriter

DONE_DIR = ".done"
STAGING_DIR = ".staging"  # samples of recordings whose split is chosen after processing


def window_name(rec_id: str, k: int) -> str:
    return f"{rec_id}_{k:04d}.pkl"


def recording_of_window(name: str) -> str | None:
    """'rec_0012.pkl' -> 'rec'; None for a name no engine wrote."""
    head, _, tail = Path(name).stem.rpartition("_")
    return head if head and tail.isdigit() else None


def marker_path(out_dir: Path, rec_id: str) -> Path:
    return Path(out_dir) / DONE_DIR / f"{rec_id}.json"


def read_markers(out_dir: Path) -> dict[str, dict]:
    """{rec_id: marker} of every recording an earlier run finished ({} for a damaged one)."""
    markers = {}
    folder = Path(out_dir) / DONE_DIR
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            marker = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            marker = {}
        markers[marker.get("rec_id") or path.name[:-len(".json")]] = marker
    return markers


def remove_markers(out_dir: Path, rec_ids) -> None:
    for rec_id in rec_ids:
        marker_path(out_dir, rec_id).unlink(missing_ok=True)


def _record(header: dict, seconds: float, written: list) -> dict:
    return {**header, "seconds": seconds, "samples": written}


class PickleSink:
    """One `<split>/<rec_id>_<k>.pkl` per window, written by the workers themselves."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        if sample_store.is_store(out_dir):
            raise UserError(f"--out_dir {out_dir} holds a sharded store ({sample_store.MANIFEST}):"
                            " rerun with --format shards, or use another --out_dir")

    def worker_writer(self):
        return self

    def write(self, header: dict, samples, seconds: float, provenance: dict) -> dict:
        """A recording's samples, then its marker (the marker last: it says they are all there)."""
        written = []
        for k, sample in enumerate(samples):
            name = window_name(header["rec_id"], k)
            folder = STAGING_DIR if sample.split is None else sample.split
            write_sample(self.out_dir / folder / name, sample.X, sample.ch_names, sample.y,
                         recording=header["rec_id"], subject=header["subject"], window=k,
                         onset_s=sample.onset_s)
            written.append({"split": sample.split, "file": name, "y": sample.y,
                            "unit": sample.unit})
        record = _record(header, seconds, written)
        write_json(marker_path(self.out_dir, header["rec_id"]), record)
        return record

    def _folders(self) -> list[str]:
        return [STAGING_DIR, *sorted(p.name for p in self.out_dir.iterdir()
                                     if p.is_dir() and not p.name.startswith("."))]

    def _sample_path(self, sample: dict) -> Path | None:
        """Where a written sample is now: its split's folder, or (split chosen after
        processing) the staging folder or the folder an earlier run moved it to."""
        folders = [sample["split"]] if sample["split"] is not None else self._folders()
        for folder in folders:
            path = self.out_dir / folder / sample["file"]
            if path.exists():
                return path
        return None

    def complete(self, marker: dict) -> bool:
        samples = marker.get("samples")
        return bool(samples) and all(self._sample_path(s) is not None for s in samples)

    def keep_only(self, reused: set, known: set) -> None:
        """Remove the sample files of recordings in `known` (listed now or by an earlier
        marker) that are not reused; files of other names are not ours and stay."""
        drop = known - reused
        if not drop:
            return
        for folder in self._folders():
            path = self.out_dir / folder
            if not path.is_dir():
                continue
            with os.scandir(path) as entries:
                for entry in entries:
                    if entry.name.endswith(".pkl") and recording_of_window(entry.name) in drop:
                        os.unlink(entry.path)

    def finish(self) -> None:
        pass

    def place(self, produced, records: dict) -> dict:
        """Move each staged sample into the split its recording was given (resumed runs: from
        wherever an earlier run put it); returns the records with their final splits."""
        placed = {}
        for rec in produced:
            record = dict(records[rec.rec_id])
            samples = []
            for sample in record["samples"]:
                split = sample["split"] if sample["split"] is not None else rec.split
                if sample["split"] is None:
                    target = self.out_dir / split / sample["file"]
                    current = self._sample_path(sample)
                    if current != target:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(current, target)
                samples.append({**sample, "split": split})
            record["samples"] = samples
            placed[rec.rec_id] = record
        staging = self.out_dir / STAGING_DIR
        if staging.is_dir() and not any(staging.iterdir()):
            staging.rmdir()
        return placed


class ShardSink:
    """Windows into `<split>/shard-NNNNN.arrow` + `shards.json`, written by the main process."""

    def __init__(self, out_dir: Path, dataset_name: str, shard_mb: float | None = None):
        self.out_dir = Path(out_dir)
        if any(next(folder.glob("*.pkl"), None) for folder in self.out_dir.iterdir()
               if folder.is_dir()):
            raise UserError(f"--out_dir {out_dir} holds sample pickles: rerun with --format "
                            "pickle, or use another --out_dir")
        try:
            info = (sample_store.read_manifest(out_dir).get("info") or {}
                    if sample_store.is_store(out_dir) else {})
            made = (f"packed from {info['packed_from']}" if "packed_from" in info else
                    f"of {info['dataset']}" if info.get("dataset", dataset_name) != dataset_name
                    else None)
            if made:
                raise UserError(f"--out_dir {out_dir} holds a store {made}: use another --out_dir")
            self.writer = ShardSetWriter(out_dir, shard_mb or DEFAULT_SHARD_MB,
                                         info={"dataset": dataset_name})
            self.refresh()
        except sample_store.StoreError as error:
            raise UserError(f"{error}; delete the store or use another --out_dir") from None
        self.pending: list[dict] = []

    def refresh(self) -> None:
        """What the store holds: split -> window names, and every name once (resuming looks a
        recording's windows up in it, once per recording)."""
        self.stored = self.writer.names()
        self.stored_names = {n for names in self.stored.values() for n in names}

    def worker_writer(self):
        return None

    @property
    def commits(self) -> int:
        return (self.writer.committed or {}).get("commits", 0)

    def complete(self, marker: dict) -> bool:
        if "commit" not in marker or marker["commit"] >= self.commits:
            return False   # written after the last commit: redo
        # by name, not by shard file: placing the windows into their splits renames the shards
        return all(window_name(marker["rec_id"], k) in self.stored_names
                   for k in range(len(marker.get("samples", ()))))

    def keep_only(self, reused: set, known: set) -> None:
        """Drop from the store every window of a recording that is not reused (one rewrite of
        the splits concerned, old or new store on a kill)."""
        layout = {split: [n for n in names if recording_of_window(n) in reused]
                  for split, names in self.stored.items()}
        if layout != self.stored:
            self.writer.place(layout, {"commits": self.commits + 1})
            self.refresh()

    def write(self, header: dict, samples, seconds: float, provenance: dict) -> dict:
        written = []
        for k, sample in enumerate(samples):
            split = STAGING_DIR if sample.split is None else sample.split
            shard = self.writer.add(split, sample.X, sample.ch_names, sample.y,
                                    name=window_name(header["rec_id"], k),
                                    recording=header["rec_id"], subject=header["subject"],
                                    window=k, onset_s=sample.onset_s, **provenance)
            written.append({"split": sample.split, "file": shard, "y": sample.y,
                            "unit": sample.unit})
        record = _record(header, seconds, written)
        self.pending.append(record)
        if self.writer.full:
            self.commit()
        return record

    def commit(self) -> None:
        number = self.commits
        for record in self.pending:
            record["commit"] = number
            write_json(marker_path(self.out_dir, record["rec_id"]), record)
        self.writer.commit({"commits": number + 1})
        self.pending.clear()

    def finish(self) -> None:
        if self.pending or not sample_store.is_store(self.out_dir):
            self.commit()

    def place(self, produced, records: dict) -> dict:
        """Each staged window into the split its recording was given, in recording order;
        returns the records with their final splits."""
        layout: dict[str, list[str]] = {}
        placed = {}
        for rec in produced:
            record = records[rec.rec_id]
            samples = [{**s, "split": s["split"] if s["split"] is not None else rec.split}
                       for s in record["samples"]]
            for k, sample in enumerate(samples):
                layout.setdefault(sample["split"], []).append(window_name(rec.rec_id, k))
            placed[rec.rec_id] = {**record, "samples": samples}
        self.writer.place(layout, {"commits": self.commits + 1})
        return placed
