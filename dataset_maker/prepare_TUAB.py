"""TUAB (TUH Abnormal EEG): 10 s non-overlapping windows labelled by folder (normal 0, abnormal 1).

RAW/{train,eval}/{normal,abnormal}/01_tcp_ar/<subject>_sNNN_tNNN.edf. Official eval -> test,
20 % of the train subjects (fixed seed) -> val.
"""

import sys
from pathlib import Path

try:
    import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)
except ModuleNotFoundError:
    sys.exit("error: not set up: run `bash scripts/setup_env.sh`, then `source .venv/bin/activate`")
# isort: split

from dataset_maker import common, tuh
from tasks import BUILTIN_TASKS

TASK = BUILTIN_TASKS["TUAB"]  # channels, window, band, mains

SIGNAL = common.SignalSpec(channels=TASK.channels, mains_hz=TASK.mains_hz, band_hz=TASK.band_hz)
WINDOW_SECONDS = TASK.window_seconds
LABEL_OF_FOLDER = {"normal": 0, "abnormal": 1}


def list_recordings(raw_dir):
    raw_dir = Path(raw_dir)
    recordings, errors = [], []
    for path in common.find_files(raw_dir, ".edf"):
        parts = path.relative_to(raw_dir).parts
        folder = tuh.folder_under(raw_dir, path, ("train", "eval"))
        label = LABEL_OF_FOLDER.get(parts[1]) if len(parts) > 2 else None
        if folder is None or label is None:
            errors.append((str(path), "malformed label: expected "
                                      "RAW/{train,eval}/{normal,abnormal}/.../*.edf"))
            continue
        recordings.append(common.Recording(path, path.stem, common.subject_of(path),
                                           extra={"folder": folder, "y": label}))
    assign_splits(recordings)
    return recordings, errors


def assign_splits(recordings):
    tuh.official_split(recordings)


def process(recording):
    eeg = common.load_eeg(recording.path, SIGNAL)
    common.require_duration(eeg, WINDOW_SECONDS)
    cut = common.windows(eeg.data, WINDOW_SECONDS)
    samples = [common.Sample(recording.split, X, eeg.ch_names, recording.extra["y"],
                             onset_s=k * WINDOW_SECONDS) for k, X in enumerate(cut)]
    return samples, eeg


def main(argv=None):
    args = common.arg_parser(__doc__).parse_args(argv)
    recordings, errors = list_recordings(args.raw_dir)
    return common.run("TUAB", recordings, process, args.out_dir, ("train", "val", "test"),
                      args.workers, errors,
                      assign_splits=assign_splits,
                      settings=(SIGNAL, WINDOW_SECONDS, LABEL_OF_FOLDER),
                      **common.store_options(args))


if __name__ == "__main__":
    common.script_main(main)
