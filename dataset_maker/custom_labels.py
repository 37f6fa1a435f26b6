"""Labels of prepare_custom.py's recordings: a label CSV (whole recordings or events, checked for
conflicts), annotation descriptions mapped to classes (--label_map), companion label files."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

from dataset_maker import common
from dataset_maker.common import UserError

IN_FILE = "in-file"   # --annotations: the recording's own annotations


def class_of(value, label_names, where: str) -> int:
    """A label as a class number: a number in range or one of the task's label names."""
    text = str(value).strip()
    lowered = [n.lower() for n in label_names]
    if text.lower() in lowered:
        return lowered.index(text.lower())
    try:
        number = int(float(text))
    except (ValueError, OverflowError):   # not a number, or inf
        number = None
    if number is None or number != float(text) or not 0 <= number < len(label_names):
        raise UserError(f"{where}: label {text!r} is neither a class number "
                        f"0..{len(label_names) - 1} nor a label name ({', '.join(label_names)})")
    return number


def parse_label_map(items, label_names) -> dict[str, int] | None:
    """--label_map 'Sleep stage W=W' ... or one JSON file {description: class}."""
    if not items:
        return None
    if len(items) == 1 and items[0].lower().endswith(".json"):
        path = Path(items[0])
        try:
            pairs = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise UserError(f"--label_map {path}: cannot read a JSON map: {err}") from None
        if not isinstance(pairs, dict):
            raise UserError(f"--label_map {path}: expected an object {{description: class}}")
        pairs = list(pairs.items())
    else:
        pairs = []
        for item in items:
            description, sep, value = item.rpartition("=")
            if not sep or not description.strip():
                raise UserError(f"--label_map {item!r}: expected DESCRIPTION=CLASS")
            pairs.append((description, value))
    return {d.strip(): class_of(v, label_names, f"--label_map {d.strip()!r}") for d, v in pairs}


def read_label_table(path: Path, raw_dir: Path, label_names):
    """{recording path: {"subject", "label" | "events"}} and [(file, reason)] of rows that
    name no recording; a malformed table is a UserError."""
    if not path.is_file():
        raise UserError(f"--labels {path}: no such file")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        reader = csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines(),
                                delimiter=delimiter)
        rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"--labels {path}: cannot read it: {err}") from None
    columns = set(reader.fieldnames or ())
    events = {"onset", "duration"} <= columns
    if not {"file", "label"} <= columns:
        raise UserError(f"--labels {path}: needs a header with file,label (whole recordings) or "
                        f"file,onset,duration,label (events); found {', '.join(sorted(columns))}")
    table, missing, lines = {}, [], {}
    for number, row in enumerate(rows, 2):
        where = f"--labels {path.name} line {number}"
        file = (row.get("file") or "").strip()
        target = raw_dir / file
        if not file or not target.is_file():
            missing.append((str(target), f"listed in {path.name} line {number} but not found"))
            continue
        y = class_of(row["label"], label_names, where)
        subject = (row.get("subject") or "").strip()
        entry = table.setdefault(target.resolve(), {"subject": subject, "label": None,
                                                    "events": []})
        seen = lines.setdefault(target.resolve(), {"label": None, "events": [], "first": number})
        if subject and entry["subject"] and subject != entry["subject"]:
            raise UserError(f"--labels {path.name} lines {seen['first']} and {number}: {file} "
                            f"has two subjects ({entry['subject']!r}, {subject!r})")
        entry["subject"] = entry["subject"] or subject
        if events and (row.get("onset") or "").strip():
            onset, duration = seconds_of(row, where)
            entry["events"].append((onset, duration, y))
            seen["events"].append(number)
        elif entry["label"] is not None and entry["label"] != y:
            raise UserError(f"--labels {path.name} lines {seen['label']} and {number}: {file} "
                            f"is labelled twice, {label_names[entry['label']]!r} and "
                            f"{label_names[y]!r}; keep one")
        else:
            entry["label"], seen["label"] = y, seen["label"] or number
        if entry["label"] is not None and entry["events"]:
            raise UserError(f"--labels {path.name} lines {seen['label']} and "
                            f"{seen['events'][0]}: {file} has a whole-recording label and "
                            "events; give one or the other")
    for target, entry in table.items():
        check_overlaps(entry["events"], lines[target]["events"], path.name, target.name)
    return table, missing


def seconds_of(row, where: str) -> tuple[float, float]:
    """An event row's (onset, duration): finite seconds, neither negative."""
    try:
        onset, duration = float(row["onset"]), float(row["duration"] or 0)
    except (TypeError, ValueError):
        raise UserError(f"{where}: onset and duration must be seconds") from None
    if not (math.isfinite(onset) and math.isfinite(duration) and onset >= 0 and duration >= 0):
        raise UserError(f"{where}: onset and duration must be finite seconds >= 0, got "
                        f"{row['onset']!r} and {row['duration']!r}")
    return onset, duration


def check_overlaps(events, numbers, table: str, file: str) -> None:
    """Events of one recording with different labels must not cover the same time (the same EEG
    would be stored under two labels); markers (duration 0) clash at the same onset."""
    spans = sorted(zip(events, numbers))
    for i, ((onset, duration, y), number) in enumerate(spans):
        for (other_onset, other_duration, other_y), other in spans[i + 1:]:
            if other_onset > onset + duration:
                break
            touching = other_onset < onset + duration or other_onset == onset
            if touching and other_y != y:
                raise UserError(f"--labels {table} lines {min(number, other)} and "
                                f"{max(number, other)}: events of {file} with different labels "
                                f"overlap ({onset:g}+{duration:g} s, {other_onset:g}+"
                                f"{other_duration:g} s)")


def companion_glob(path: Path, pattern: str, subject: str) -> str:
    return pattern.replace("{stem}", glob_escape(path.stem)).replace("{subject}",
                                                                     glob_escape(subject))


def companion(path: Path, pattern: str, subject: str) -> Path:
    glob = companion_glob(path, pattern, subject)
    found = sorted(p for p in path.parent.glob(glob) if p != path)
    if not found:
        raise common.BadRecording(f"missing label file: no {glob!r} beside it")
    if len(found) > 1:
        raise common.BadRecording(f"ambiguous label file: {', '.join(p.name for p in found)} "
                                  f"match {glob!r}")
    return found[0]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def annotation_events(recording, setup) -> list[tuple[float, float, int]]:
    """(onset, duration, class) of the annotations --label_map knows."""
    import mne

    if setup.bids:
        from mne_bids import read_raw_bids
        try:
            annotations = read_raw_bids(recording.extra["bids_path"], verbose="ERROR").annotations
        except Exception as err:  # mne-bids raises many types for broken datasets
            raise common.BadRecording(f"unreadable BIDS events: {type(err).__name__}: {err}")
    elif setup.annotations == IN_FILE:
        annotations = common.read_raw(recording.path).annotations
    else:
        source = companion(recording.path, setup.annotations, recording.subject)
        try:
            annotations = mne.read_annotations(source)
        except Exception as err:  # damaged companion files
            raise common.BadRecording(f"unreadable label file {source.name}: {err}")
    events = [(float(a["onset"]), float(a["duration"]), setup.label_map[a["description"].strip()])
              for a in annotations if a["description"].strip() in setup.label_map]
    if not events:
        found = sorted({a["description"] for a in annotations})
        raise common.BadRecording(
            "no annotation matches --label_map (found: "
            + (", ".join(map(repr, found[:12])) or "no annotations") + ")")
    return events


def label_files(path: Path, setup, subject: str) -> tuple[Path, ...]:
    """The files besides the recording that its labels come from (a change redoes it)."""
    if setup.bids:   # the run's sidecars: *_events.tsv, *_channels.tsv
        prefix = glob_escape(path.stem.rsplit("_", 1)[0])
        return tuple(sorted(p for p in path.parent.glob(f"{prefix}_*") if p != path))
    if setup.annotations not in (None, IN_FILE):
        glob = companion_glob(path, setup.annotations, subject)
        return tuple(sorted(p for p in path.parent.glob(glob) if p != path))
    return ()
