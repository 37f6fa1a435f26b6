"""Your own recordings -> the standard sample layout ({train,val,test}/*.pkl, splits.json,
errors.tsv; resumable, parallel), with the preprocessing core of the built-in scripts.

Recordings: every file under --raw_dir that MNE reads (EDF, BDF, CNT, BrainVision .vhdr, FIF,
EEGLAB .set, GDF); channels matched through dataset.normalise_channel. Labels, one source:

  --labels labels.csv       a CSV/TSV with a header: `file,label` (the whole recording) or
                            `file,onset,duration,label` (events, seconds); optional `subject`
  --annotations in-file     the recording's own annotations (EDF+, BrainVision markers, FIF)
  --annotations 'PATTERN'   a companion file beside each recording, a glob in which {stem} and
                            {subject} stand for the recording's (Sleep-EDF:
                            '{subject}*-Hypnogram.edf' with --subject_regex '^(SC\\d{4})')
  --bids                    --raw_dir is a BIDS dataset: *_events.tsv read with mne-bids

Annotations and BIDS events need --label_map DESCRIPTION=CLASS ... (a class is a label name of
the task or its number; several descriptions may share a class; or a JSON file of the map).
Events lasting at least a window give the windows inside them, shorter ones (markers) the window
starting at their onset. Labels are numbers or the task's label names.

The task comes from --task_file (window, stride, channels, mains, label names, data folder) or
from --window / --stride / --channels / --mains / --label_names; --band LOW HIGH (Hz) changes
the band-pass of the built-in tasks (0.1-75 Hz). Splits are subject-disjoint:
--val_fraction and --test_fraction of the subjects (fixed seed), the subject being the CSV's
`subject`, the first group of --subject_regex on the file name, or the name up to its first '_'.
A recording without a usable label goes to errors.tsv with the reason; the others are processed.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import re
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

try:
    import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)
except ModuleNotFoundError:
    sys.exit("error: not set up: run `bash scripts/setup_env.sh`, then `source .venv/bin/activate`")
# isort: split

from dataset_maker import common
from dataset_maker.common import UserError
from dataset_maker.custom_labels import (
    IN_FILE,
    annotation_events,
    label_files,
    parse_label_map,
    read_label_table,
)
from tasks import (
    DEFAULT_BAND_HZ,
    EEG_MAX_TOKENS,
    TaskFileError,
    check_channels,
    fit_window,
    read_task_file,
    window_problem,
)
from tasks.files import DEFAULT_TASK_MAINS_HZ

RECORDING_SUFFIXES = (".edf", ".bdf", ".cnt", ".vhdr", ".fif", ".set", ".gdf")
DEFAULT_WINDOW_SECONDS = 4.0


@dataclass(frozen=True)
class Setup:
    """Everything a worker needs besides the recording (picklable)."""
    spec: common.SignalSpec
    window: float
    stride: float
    label_names: tuple[str, ...]
    label_map: dict | None          # annotation description -> class number
    annotations: str | None         # IN_FILE, a companion pattern, or None
    bids: bool
    task_name: str = "custom"       # splits.json names it: the trainer checks a folder's task


# ----------------------------------------------------------------------------- one recording

def process(recording):
    setup: Setup = recording.extra["setup"]
    events = recording.extra.get("events")
    label = recording.extra.get("label")
    if label is None and not events:
        events = annotation_events(recording, setup)
    eeg = common.load_eeg(recording.path, setup.spec)
    if eeg.left_out:
        left = "; ".join(f"{raw} ({why})" for raw, why in eeg.left_out)
        name = os.fsencode(recording.path.name).decode("utf-8", "backslashreplace")
        print(f"{name!r}: channels left out: {left}", flush=True)
    try:
        seconds, stride = fit_window(setup.window, setup.stride, len(eeg.ch_names))
    except ValueError as err:
        raise common.BadRecording(str(err)) from None
    if seconds < setup.window:     # every channel of a recording with many: said, not hidden
        name = os.fsencode(recording.path.name).decode("utf-8", "backslashreplace")
        print(f"{name!r}: {len(eeg.ch_names)} channels: windows of {seconds:g} s instead of "
              f"{setup.window:g} s (one sequence holds {EEG_MAX_TOKENS} EEG tokens, one per "
              "channel-second)", flush=True)
    common.require_duration(eeg, seconds)
    rate = common.TARGET_SFREQ
    if label is not None:
        spans = [(0.0, eeg.seconds, label)]
    else:
        spans = events
    samples = []
    for onset, duration, y in spans:
        start = int(round(onset * rate))
        stop = start + int(round(max(duration, seconds) * rate))
        for X in common.windows(eeg.data, seconds, stride, start=start, stop=stop):
            samples.append(common.Sample(recording.split, X, eeg.ch_names, y))
    if not samples:
        raise common.BadRecording(f"no samples: no labelled span of {seconds:g} s lies inside "
                                  f"the {eeg.seconds:.1f} s recording")
    return samples, eeg


# ----------------------------------------------------------------------------- listing

def subject_from(path: Path, regex: str | None) -> str | None:
    """The subject from the file name; None when --subject_regex does not match it."""
    if regex:
        match = re.search(regex, path.stem)
        subject = (match.group(1) if match.groups() else match.group(0)) if match else None
        return subject or None
    return common.subject_of(path)


def check_bids_root(raw_dir: Path) -> None:
    if not raw_dir.is_dir():
        raise UserError(f"--raw_dir {raw_dir} is not a folder")
    if not (raw_dir / "dataset_description.json").is_file():
        raise UserError(f"--bids: {raw_dir} is not a BIDS dataset (no dataset_description.json "
                        "at its top)")


def list_recordings(args, setup: Setup):
    raw_dir = Path(args.raw_dir)
    errors = []
    if setup.bids:
        from mne_bids import find_matching_paths
        check_bids_root(raw_dir)
        found = [(Path(bp.fpath), bp, bp.subject)
                 for bp in find_matching_paths(raw_dir, datatypes="eeg", suffixes="eeg",
                                               extensions=list(RECORDING_SUFFIXES))]
        if not found:
            raise UserError(f"--bids: {raw_dir} holds no EEG recording "
                            f"(sub-*/[ses-*/]eeg/*_eeg{{{','.join(RECORDING_SUFFIXES)}}})")
    else:
        if not raw_dir.is_dir():
            raise UserError(f"--raw_dir {raw_dir} is not a folder")
        files = sorted(p for p in raw_dir.rglob("*") if p.is_file()
                       and p.suffix.lower() in RECORDING_SUFFIXES)
        if setup.annotations not in (None, IN_FILE):   # companion files are not recordings
            skip = setup.annotations.replace("{stem}", "*").replace("{subject}", "*")
            files = [p for p in files if not fnmatch.fnmatch(p.name, skip)]
        found = [(p, None, subject_from(p, args.subject_regex)) for p in files]
        if args.subject_regex and found and all(subject is None for _, _, subject in found):
            raise UserError(f"--subject_regex {args.subject_regex!r} matches none of the "
                            f"{len(found)} file names (e.g. {found[0][0].stem!r})")
    table = None
    if args.labels is not None:
        table, missing = read_label_table(Path(args.labels), raw_dir, setup.label_names)
        errors += missing
    recordings = []
    for path, bids_path, subject in found:
        extra = {"setup": setup, "bids_path": bids_path}
        if table is not None:
            entry = table.get(path.resolve())
            if entry is None:
                errors.append((str(path), f"no label in {Path(args.labels).name}"))
                continue
            subject = entry["subject"] or subject
            extra.update(label=entry["label"], events=entry["events"])
        if subject is None:
            errors.append((str(path), f"--subject_regex {args.subject_regex!r} does not match "
                                      "its name"))
            continue
        rec_id = str(path.relative_to(raw_dir).with_suffix("")).replace("/", "__")
        recordings.append(common.Recording(path, rec_id, subject, extra=extra,
                                           inputs=label_files(path, setup, subject)))
    return recordings, errors


def assign_splits(recordings, val_fraction: float, test_fraction: float):
    """Subject-disjoint, fixed-seed splits, chosen over the recordings that produced samples."""
    split_of = common.split_shuffled([r.subject for r in recordings], val_fraction, test_fraction)
    for rec in recordings:
        rec.split = split_of[rec.subject]


# ----------------------------------------------------------------------------- command line

def build_parser():
    parser = common.arg_parser(__doc__.split("\n\n")[0])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--task_file", help="the task (TOML/JSON): window, stride, channels, "
                        "mains, label names")
    parser.add_argument("--label_names", nargs="+", help="class names in label order "
                        "(without --task_file)")
    parser.add_argument("--window", type=float, help=f"window seconds (default: the task's, "
                        f"else {DEFAULT_WINDOW_SECONDS:g})")
    parser.add_argument("--stride", type=float, help="seconds between window starts "
                        "(default: the window)")
    parser.add_argument("--channels", help="'all' (every channel the vocabulary knows) or a "
                        "comma-separated list (default: the task's, else all)")
    parser.add_argument("--band", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="band-pass in Hz (default: the task's, else "
                        f"{DEFAULT_BAND_HZ[0]:g} {DEFAULT_BAND_HZ[1]:g}, the built-in tasks')")
    parser.add_argument("--mains", type=float, help=f"mains frequency to notch (default: the "
                        f"task's, else {DEFAULT_TASK_MAINS_HZ:g})")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", help="CSV/TSV: file,label or file,onset,duration,label")
    source.add_argument("--annotations", help=f"'{IN_FILE}' or a companion-file glob with "
                        "{stem} / {subject}")
    source.add_argument("--bids", action="store_true", help="--raw_dir is a BIDS dataset")
    parser.add_argument("--label_map", nargs="+", metavar="DESCRIPTION=CLASS",
                        help="annotation description -> class (or one JSON file)")
    parser.add_argument("--subject_regex", help="the subject: first group of this regex on the "
                        "file name (default: the name up to its first '_')")
    parser.add_argument("--val_fraction", type=float, default=0.1)
    parser.add_argument("--test_fraction", type=float, default=0.1)
    return parser


def make_setup(args) -> Setup:
    task = None
    if args.task_file is not None:
        try:
            task = read_task_file(args.task_file)
        except TaskFileError as err:
            raise UserError(str(err)) from None
    label_names = tuple(task.label_names) if task else tuple(args.label_names or ())
    if len(label_names) < 2:
        raise UserError("give --task_file, or --label_names with at least two classes")
    # a flag given (0 included) wins: 0 must be refused below, not replaced by a default
    window = next(v for v in (args.window, task.window_seconds if task else None,
                              DEFAULT_WINDOW_SECONDS) if v is not None)
    stride = next(v for v in (args.stride, task.stride_seconds
                              if task and args.window is None else None, window) if v is not None)
    if window < 1 or stride <= 0:
        raise UserError(f"--window must be at least 1 s and --stride positive ({window}, {stride})")
    if args.channels is not None:
        channels = None if args.channels == "all" else tuple(
            c.strip() for c in args.channels.split(",") if c.strip())
    else:
        channels = task.channels if task else None
    if channels is not None:    # a task file's are checked already; --channels' here
        try:
            channels = check_channels(channels)
        except ValueError as err:
            raise UserError(f"--{err}") from None
        problem = window_problem(window, len(channels)) if math.isfinite(window) else None
        if problem:
            raise UserError(f"--window {window:g}: {problem}")
    mains = next(v for v in (args.mains, task.mains_hz if task else None, DEFAULT_TASK_MAINS_HZ)
                 if v is not None)
    needs_map = args.annotations is not None or args.bids
    if needs_map and not args.label_map:
        raise UserError("--annotations and --bids need --label_map DESCRIPTION=CLASS ...")
    if args.labels is not None and args.label_map:
        raise UserError("--label_map applies to --annotations and --bids, not to --labels")
    label_map = parse_label_map(args.label_map, label_names)
    if args.subject_regex is not None:
        try:
            re.compile(args.subject_regex)
        except re.error as err:
            raise UserError(f"--subject_regex {args.subject_regex!r}: {err}") from None
    low, high = args.band or (task.band_hz if task else DEFAULT_BAND_HZ)
    if not 0 <= low < high:
        raise UserError(f"--band {low:g} {high:g}: expected 0 <= LOW < HIGH")
    spec = common.SignalSpec(channels=channels, mains_hz=mains, band_hz=(low, high))
    return Setup(spec, float(window), float(stride), label_names, label_map, args.annotations,
                 args.bids, task.name if task else "custom")


def check_numbers(setup: Setup, args) -> None:
    """Every number of the run finite and in range (a task file's values included)."""
    one_sample = 1 / common.TARGET_SFREQ
    low, high = setup.spec.band_hz
    checks = [("--window (or the task's window_seconds)", setup.window, 1, None),
              ("--stride (or the task's stride_seconds)", setup.stride, one_sample, None),
              ("--mains (or the task's mains_hz)", setup.spec.mains_hz, 1, 1000),
              ("--band LOW", low, 0, None), ("--band HIGH", high, 0, None),
              ("--val_fraction", args.val_fraction, 0, 1),
              ("--test_fraction", args.test_fraction, 0, 1)]
    for flag, value, least, most in checks:
        if not (math.isfinite(value) and value >= least and (most is None or value <= most)):
            bounds = f"at least {least:g}" + (f" and at most {most:g}" if most is not None else "")
            raise UserError(f"{flag} must be a finite number {bounds}, got {value:g}")
    if args.val_fraction + args.test_fraction >= 1:
        raise UserError(f"--val_fraction {args.val_fraction:g} and --test_fraction "
                        f"{args.test_fraction:g} leave nothing for train")


def main(argv=None):
    args = build_parser().parse_args(argv)
    setup = make_setup(args)
    check_numbers(setup, args)
    recordings, errors = list_recordings(args, setup)
    if not recordings:
        raise UserError(f"--raw_dir {args.raw_dir}: no labelled recording to process "
                        f"({len(errors)} problems: {errors[0][1] if errors else 'none'})")
    splits = partial(assign_splits, val_fraction=args.val_fraction,
                     test_fraction=args.test_fraction)
    # a split asked to stay empty (--val_fraction 0) is not an error
    wanted = ("train", *(name for name, fraction in (("val", args.val_fraction),
                                                      ("test", args.test_fraction))
                         if fraction > 0))
    return common.run(setup.task_name, recordings, process, args.out_dir, wanted,
                      args.workers, errors, assign_splits=splits, **common.store_options(args))


if __name__ == "__main__":
    common.script_main(main)
