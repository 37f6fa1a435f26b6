"""Workload (PhysioNet EEGMAT): the last 60 s of each recording, 29 windows of 4 s every 2 s.

RAW/SubjectNN_1.edf is rest (y=0), RAW/SubjectNN_2.edf mental arithmetic (y=1). The split cuts
the sorted subjects as the public code cut its sorted file list (26 / 5 / 5 of 36 subjects).
"""

import sys

try:
    import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)
except ModuleNotFoundError:
    sys.exit("error: not set up: run `bash scripts/setup_env.sh`, then `source .venv/bin/activate`")
# isort: split

from dataset_maker import common
from tasks import BUILTIN_TASKS

TASK = BUILTIN_TASKS["Workload"]  # channels, window, stride, band, mains

CHANNELS = TASK.channels
SIGNAL = common.SignalSpec(channels=TASK.channels, mains_hz=TASK.mains_hz, band_hz=TASK.band_hz,
                           expected_sfreq=500.0)
LAST_SECONDS = 60
WINDOW_SECONDS, STRIDE_SECONDS = TASK.window_seconds, TASK.stride_seconds
LABEL_OF_SUFFIX = {"1": 0, "2": 1}
VAL_FRACTION = TEST_FRACTION = 5 / 36


def list_recordings(raw_dir):
    recordings, errors = [], []
    for path in common.find_files(raw_dir, ".edf"):
        subject, _, suffix = path.stem.rpartition("_")
        if suffix not in LABEL_OF_SUFFIX or not subject:
            errors.append((str(path),
                           "malformed label: file name must end in _1 (rest) or _2 (arithmetic)"))
            continue
        recordings.append(common.Recording(path, path.stem, subject,
                                           extra={"y": LABEL_OF_SUFFIX[suffix]}))
    assign_splits(recordings)
    return recordings, errors


def assign_splits(recordings):
    split_of = common.split_sorted([r.subject for r in recordings], VAL_FRACTION, TEST_FRACTION)
    for rec in recordings:
        rec.split = split_of[rec.subject]


def process(recording):
    eeg = common.load_eeg(recording.path, SIGNAL)
    common.require_duration(eeg, LAST_SECONDS)
    start = eeg.data.shape[1] - LAST_SECONDS * common.TARGET_SFREQ
    cut = common.windows(eeg.data, WINDOW_SECONDS, STRIDE_SECONDS, start=start)
    samples = [common.Sample(recording.split, X, eeg.ch_names, recording.extra["y"]) for X in cut]
    return samples, eeg


def main(argv=None):
    args = common.arg_parser(__doc__).parse_args(argv)
    recordings, errors = list_recordings(args.raw_dir)
    return common.run("Workload", recordings, process, args.out_dir, ("train", "val", "test"),
                      args.workers, errors, assign_splits=assign_splits,
                      settings=(SIGNAL, LAST_SECONDS, WINDOW_SECONDS, STRIDE_SECONDS),
                      **common.store_options(args))


if __name__ == "__main__":
    common.script_main(main)
