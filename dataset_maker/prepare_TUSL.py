"""TUSL (TUH Slowing): 10 s windows cut from the labelled segments of each .tse_agg file.

RAW/<subject>/<session>/<montage>/<name>.edf with <name>.tse_agg beside it
("version = tse_v1.0.0", then "start stop label probability" rows; bckg 0, seiz 1, slow 2).
Each segment gives its whole 10 s windows. Split by subject with a fixed seed (60 / 20 / 20).
"""

import sys
from pathlib import Path

try:
    import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)
except ModuleNotFoundError:
    sys.exit("error: not set up: run `bash scripts/setup_env.sh`, then `source .venv/bin/activate`")
# isort: split

from dataset_maker import common
from tasks import BUILTIN_TASKS

TASK = BUILTIN_TASKS["TUSL"]  # channels, window, band, mains

SIGNAL = common.SignalSpec(channels=TASK.channels, mains_hz=TASK.mains_hz, band_hz=TASK.band_hz)
WINDOW_SECONDS = TASK.window_seconds
LABELS = {"bckg": 0, "seiz": 1, "slow": 2}
VAL_FRACTION = TEST_FRACTION = 0.2


def list_recordings(raw_dir):
    raw_dir = Path(raw_dir)
    recordings = [common.Recording(p, p.stem, p.relative_to(raw_dir).parts[0],
                                   inputs=(p.with_suffix(".tse_agg"),))
                  for p in common.find_files(raw_dir, ".edf")]
    for rec in recordings:
        if len(rec.path.relative_to(raw_dir).parts) == 1:
            rec.subject = common.subject_of(rec.path)
    assign_splits(recordings)
    return recordings, []


def assign_splits(recordings):
    split_of = common.split_shuffled([r.subject for r in recordings], VAL_FRACTION, TEST_FRACTION)
    for rec in recordings:
        rec.split = split_of[rec.subject]


def read_segments(path: Path):
    """[(start_s, stop_s, y)] from a .tse_agg file; BadRecording when missing or malformed."""
    if not path.exists():
        raise common.BadRecording(f"missing label file {path.name}")
    segments = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] == "version":
            continue
        try:
            start, stop, label = float(fields[0]), float(fields[1]), fields[2]
        except (ValueError, IndexError):
            raise common.BadRecording(f"malformed label file {path.name} line {number}: "
                                      f"{line.strip()!r}") from None
        if label not in LABELS or stop <= start or start < 0:
            raise common.BadRecording(f"malformed label file {path.name} line {number}: "
                                      f"{line.strip()!r}")
        segments.append((start, stop, LABELS[label]))
    if not segments:
        raise common.BadRecording(f"malformed label file {path.name}: no segments")
    return segments


def process(recording):
    segments = read_segments(recording.path.with_suffix(".tse_agg"))
    eeg = common.load_eeg(recording.path, SIGNAL)
    common.require_duration(eeg, WINDOW_SECONDS)
    rate = common.TARGET_SFREQ
    samples = [
        common.Sample(recording.split, X, eeg.ch_names, y)
        for start, stop, y in segments
        for X in common.windows(eeg.data, WINDOW_SECONDS, start=int(round(start * rate)),
                                stop=int(round(stop * rate)))
    ]
    return samples, eeg


def main(argv=None):
    args = common.arg_parser(__doc__).parse_args(argv)
    recordings, errors = list_recordings(args.raw_dir)
    return common.run("TUSL", recordings, process, args.out_dir, ("train", "val", "test"),
                      args.workers, errors,
                      assign_splits=assign_splits,
                      settings=(SIGNAL, WINDOW_SECONDS, LABELS),
                      **common.store_options(args))


if __name__ == "__main__":
    common.script_main(main)
