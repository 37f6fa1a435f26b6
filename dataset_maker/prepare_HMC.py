"""HMC (Haaglanden Medisch Centrum sleep staging): 30 s epochs scored in <rec>_sleepscoring.txt.

RAW/SNNNN.edf with RAW/SNNNN_sleepscoring.txt (CSV: Date, Time, Recording onset, Duration,
Annotation, Linked channel). Only "Sleep stage X" rows lasting 30 s become samples (W 0, N1 1,
N2 2, N3 3, R 4); epochs running past the end of the signal are left out. Channels F4-M1, C4-M1,
O2-M1, C3-M2 are kept as F4, C4, O2, C3. Split: sorted subjects cut 4/6, 1/6, 1/6.
"""

import csv
import sys
from pathlib import Path

try:
    import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)
except ModuleNotFoundError:
    sys.exit("error: not set up: run `bash scripts/setup_env.sh`, then `source .venv/bin/activate`")
# isort: split

from dataset_maker import common
from tasks import BUILTIN_TASKS

TASK = BUILTIN_TASKS["HMC"]  # channels, window, band, mains

# HMC's EEG derivations: EDF labels "EEG F4-M1" ... (the reference is dropped from the name).
REFERENCES = dict(zip(TASK.channels, ("M1", "M1", "M1", "M2")))
SIGNAL = common.SignalSpec(channels=TASK.channels, mains_hz=TASK.mains_hz, band_hz=TASK.band_hz)
WINDOW_SECONDS = TASK.window_seconds  # one scored sleep epoch
STAGES = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "R": 4}
STAGE_PREFIX = "Sleep stage "
VAL_FRACTION = TEST_FRACTION = 1 / 6


def list_recordings(raw_dir):
    recordings = [common.Recording(p, p.stem, p.stem, inputs=(scoring_file(p),))
                  for p in common.find_files(raw_dir, ".edf")]
    assign_splits(recordings)
    return recordings, []


def assign_splits(recordings):
    split_of = common.split_sorted([r.subject for r in recordings], VAL_FRACTION, TEST_FRACTION)
    for rec in recordings:
        rec.split = split_of[rec.subject]


def scoring_file(edf: Path) -> Path:
    return edf.with_name(f"{edf.stem}_sleepscoring.txt")


def read_epochs(path: Path):
    """[(onset_s, y)] of the 30 s sleep-stage rows; BadRecording when missing or malformed."""
    if not path.exists():
        raise common.BadRecording(f"missing label file {path.name}")
    rows = list(csv.reader(path.read_text().splitlines()))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    try:
        onset_col, duration_col, label_col = (
            header.index(h) for h in ("recording onset", "duration", "annotation"))
    except ValueError:
        raise common.BadRecording(f"malformed label file {path.name}: "
                                  f"header {rows[0] if rows else []}") from None
    epochs = []
    for number, row in enumerate(rows[1:], 2):
        if not any(field.strip() for field in row):
            continue
        try:
            onset, duration, label = (float(row[onset_col]), float(row[duration_col]),
                                      row[label_col].strip())
        except (ValueError, IndexError):
            raise common.BadRecording(f"malformed label file {path.name} line {number}: "
                                      f"{','.join(row)!r}") from None
        stage = label[len(STAGE_PREFIX):].strip() if label.startswith(STAGE_PREFIX) else None
        if duration == WINDOW_SECONDS and stage in STAGES:
            epochs.append((onset, STAGES[stage]))
    if not epochs:
        raise common.BadRecording(f"malformed label file {path.name}: "
                                  f"no {WINDOW_SECONDS} s sleep-stage rows")
    return epochs


def process(recording):
    epochs = read_epochs(scoring_file(recording.path))
    eeg = common.load_eeg(recording.path, SIGNAL)
    common.require_duration(eeg, WINDOW_SECONDS)
    rate = common.TARGET_SFREQ
    samples = []
    for onset, y in epochs:
        start = int(round(onset * rate))
        for X in common.windows(eeg.data, WINDOW_SECONDS, start=start,
                                stop=start + WINDOW_SECONDS * rate):
            samples.append(common.Sample(recording.split, X, eeg.ch_names, y, onset_s=onset))
    return samples, eeg


def main(argv=None):
    args = common.arg_parser(__doc__).parse_args(argv)
    recordings, errors = list_recordings(args.raw_dir)
    return common.run("HMC", recordings, process, args.out_dir, ("train", "val", "test"),
                      args.workers, errors,
                      assign_splits=assign_splits,
                      settings=(SIGNAL, WINDOW_SECONDS, STAGES, STAGE_PREFIX),
                      **common.store_options(args))


if __name__ == "__main__":
    common.script_main(main)
