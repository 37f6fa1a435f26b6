"""`common.run` for `--format shards`: the same recordings, errors.tsv, splits.json and summary,
with the windows written to the sharded store instead of one pickle each.

Workers only process recordings; the main process writes every window, in recording order
(so any worker count gives the same shards), and commits all splits' open shards together
between recordings once they hold --shard_mb of signal. A recording's `.done` marker carries
the number of the commit that holds its windows and counts only once `shards.json` records that
commit: a killed run redoes exactly the recordings after its last commit.

With `assign_splits`, splits are chosen after processing (as in the pickle path), over the
recordings that produced windows: those windows go to staging shards (`OUT/.staging/`, in
recording order) and `ShardSetWriter.place` then copies them into their splits' shards (Arrow
slices, no reprocessing) and switches shards.json to the placed store in one rename. A rerun
over the same recordings finds every split already as wanted and rewrites nothing.
"""
from __future__ import annotations

import json
import os
import traceback
from functools import partial
from pathlib import Path

import sample_store
from dataset_maker import common
from dataset_maker.shards import DEFAULT_SHARD_MB, ShardSetWriter


def _process_only(process, recording):
    """Worker: (recording, samples, seconds, provenance, error reason or None)."""
    common._PROVENANCE.clear()
    try:
        samples, seconds = common._call_process(process, recording)
    except common.BadRecording as error:
        return recording, None, 0.0, None, str(error)
    except Exception as error:  # a bug or an unforeseen file problem must not stop the others
        detail = traceback.format_exception_only(type(error), error)[-1].strip()
        return recording, None, 0.0, None, f"unexpected error: {detail}"
    provenance = common._PROVENANCE[-1] if common._PROVENANCE else {}
    provenance = {"source_file": str(recording.path), **provenance}
    return recording, samples, seconds, provenance, None


def _commits(writer: ShardSetWriter) -> int:
    return (writer.committed or {}).get("commits", 0)


def _window_names(rec_id: str, record: dict) -> list[str]:
    return [f"{rec_id}_{k:04d}.pkl" for k in range(len(record["samples"]))]


def _load_done(out_dir: Path, rec_id: str, commits: int, stored: set[str]):
    marker = common._marker(out_dir, rec_id)
    try:
        record = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("commit", commits) >= commits:   # written after the last commit: redo
        return None
    # by name, not by shard file: placing the windows into their splits renames the shards
    complete = all(name in stored for name in _window_names(rec_id, record))
    return record if complete else None


def run(dataset_name, recordings, process, out_dir: Path, splits, workers=None,
        listing_errors=(), split_notes=None, shard_mb=None, assign_splits=None):
    from tqdm import tqdm

    for split in splits:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
    (out_dir / common.DONE_DIR).mkdir(parents=True, exist_ok=True)
    if assign_splits is not None:
        for rec in recordings:
            rec.split = None
    writer = ShardSetWriter(out_dir, shard_mb or DEFAULT_SHARD_MB, info={"dataset": dataset_name})
    stored = {n for names in writer.names().values() for n in names}

    records, errors, todo = {}, list(listing_errors), []
    for rec in recordings:
        done = _load_done(out_dir, rec.rec_id, _commits(writer), stored)
        if done is None:
            todo.append(rec)
        else:
            records[rec.rec_id] = done
    pending: list[dict] = []

    def commit():
        number = _commits(writer)
        for record in pending:
            record["commit"] = number
            common._write_bytes(common._marker(out_dir, record["rec_id"]),
                                json.dumps(record).encode())
        writer.commit({"commits": number + 1})
        pending.clear()

    work = partial(_process_only, process)
    workers = max(1, workers or os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc=f"{dataset_name} recordings", unit="rec", disable=not todo)

    def collect(results):
        for recording, samples, seconds, provenance, reason in results:
            bar.update(1)
            if reason is not None:
                errors.append((str(recording.path), reason))
                continue
            written = []
            for k, sample in enumerate(samples):
                split = common.STAGING_DIR if sample.split is None else sample.split
                shard = writer.add(split, sample.X, sample.ch_names, sample.y,
                                   name=f"{recording.rec_id}_{k:04d}.pkl",
                                   recording=recording.rec_id, subject=recording.subject,
                                   **provenance)
                written.append({"split": sample.split, "file": shard, "y": sample.y,
                                "unit": sample.unit})
            record = {"rec_id": recording.rec_id, "recording": str(recording.path),
                      "subject": recording.subject, "seconds": seconds, "samples": written}
            records[recording.rec_id] = record
            pending.append(record)
            if writer.full:
                commit()

    if workers == 1 or len(todo) <= 1:
        collect(map(work, todo))
    else:
        import multiprocessing

        with multiprocessing.get_context().Pool(min(workers, len(todo))) as pool:
            collect(pool.imap(work, todo))   # in order: the shards do not depend on timing
    bar.close()
    if pending or not sample_store.is_store(out_dir):
        commit()
    if assign_splits is not None:
        produced = [rec for rec in recordings if rec.rec_id in records]
        assign_splits(produced)
        records = _place(writer, produced, records)

    common._write_errors(out_dir, errors)
    common._write_splits(out_dir, dataset_name, [r for r in recordings if r.rec_id in records],
                         records, split_notes)
    summary = common._summarise(dataset_name, recordings, records, errors, splits)
    print(common.format_summary(summary))
    common._check_produced(summary, out_dir, len(recordings) + len(listing_errors))
    return summary


def _place(writer: ShardSetWriter, produced, records: dict) -> dict:
    """Each staged window into the split its recording was given, in recording order; returns
    the records with their final splits."""
    layout: dict[str, list[str]] = {}
    placed = {}
    for rec in produced:
        record = dict(records[rec.rec_id])
        samples = [{**s, "split": s["split"] if s["split"] is not None else rec.split}
                   for s in record["samples"]]
        for sample, name in zip(samples, _window_names(rec.rec_id, record)):
            layout.setdefault(sample["split"], []).append(name)
        placed[rec.rec_id] = {**record, "samples": samples}
    writer.place(layout, {"commits": _commits(writer) + 1})
    return placed
