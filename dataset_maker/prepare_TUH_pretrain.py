"""TUH EEG corpus (TUEG) for pretraining: unlabelled windows of (1024 // C) s, at most 64 s.

RAW/**/<subject>_sNNN_tNNN.edf. Every channel of the vocabulary found in a recording is kept;
the trailing 10 s are dropped; recordings in the linked-ear (-LE) montage are skipped as in the
public code. --exclude_subjects drops subjects of downstream datasets (their splits.json files,
or a text file with one subject id per line) so their test recordings never reach pretraining.
Split by subject with a fixed seed: 95 % train, 5 % val.
"""

import json
import sys
from pathlib import Path

try:
    import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)
except ModuleNotFoundError:
    sys.exit("error: not set up: run `bash scripts/setup_env.sh`, then `source .venv/bin/activate`")
# isort: split

from dataset_maker import common

SIGNAL = common.SignalSpec(channels=None, mains_hz=60.0)
TOKENS_PER_SAMPLE = 1024
MAX_WINDOW_SECONDS = 64  # the encoder's time embedding has 64 rows (spec section 1, known flaw)
TRAILING_SECONDS = 10
VAL_FRACTION = 0.05


def window_seconds(n_channels: int) -> int:
    return min(TOKENS_PER_SAMPLE // n_channels, MAX_WINDOW_SECONDS)


def read_excluded_subjects(source: Path) -> set[str]:
    """Subjects from every splits.json under a folder, one splits.json, or a text list."""
    source = Path(source)
    if not source.exists():
        raise common.UserError(f"--exclude_subjects {source} does not exist")
    files = sorted(source.rglob("splits.json")) if source.is_dir() else [source]
    subjects = set()
    for path in files:
        if path.suffix == ".json":
            for split in json.loads(path.read_text())["splits"].values():
                subjects.update(split["subjects"])
        else:
            subjects.update(line.split("#")[0].strip() for line in path.read_text().splitlines())
    subjects.discard("")
    return subjects


def list_recordings(raw_dir, excluded=frozenset()):
    recordings = [common.Recording(p, p.stem, common.subject_of(p))
                  for p in common.find_files(raw_dir, ".edf")]
    kept = [r for r in recordings if r.subject not in excluded]
    assign_splits(kept)
    return kept, len(recordings) - len(kept)


def assign_splits(recordings):
    split_of = common.split_shuffled([r.subject for r in recordings], VAL_FRACTION)
    for rec in recordings:
        rec.split = split_of[rec.subject]


def uses_linked_ears(path: Path) -> bool:
    import mne

    raw = mne.io.read_raw_edf(path, preload=False, verbose="ERROR")
    return any(name.upper().endswith("-LE") for name in raw.ch_names)


def process(recording):
    try:
        linked_ears = uses_linked_ears(recording.path)
    except Exception as error:
        raise common.BadRecording(f"unreadable: {type(error).__name__}: {error}") from error
    if linked_ears:
        raise common.BadRecording("linked-ear (-LE) montage: skipped as in the public code")
    eeg = common.load_eeg(recording.path, SIGNAL)
    seconds = window_seconds(len(eeg.ch_names))
    common.require_duration(eeg, seconds + TRAILING_SECONDS)
    usable = eeg.data.shape[1] - TRAILING_SECONDS * common.TARGET_SFREQ
    cut = common.windows(eeg.data, seconds, stop=usable)
    return [common.Sample(recording.split, X, eeg.ch_names) for X in cut], eeg


def main(argv=None):
    parser = common.arg_parser(__doc__)
    parser.add_argument("--exclude_subjects", type=Path, nargs="+", default=[],
                        help="downstream splits.json files (or folders of them, or text lists "
                             "of subject ids)")
    args = parser.parse_args(argv)
    excluded = set().union(*(read_excluded_subjects(s) for s in args.exclude_subjects))
    recordings, n_excluded = list_recordings(args.raw_dir, excluded)
    if excluded:
        print(f"TUH pretraining: {n_excluded} recordings of {len(excluded)} downstream subjects "
              f"excluded")
    notes = {"excluded_subjects": sorted(excluded), "excluded_recordings": n_excluded}
    return common.run("TUH pretraining", recordings, process, args.out_dir, ("train", "val"),
                      args.workers, split_notes=notes, assign_splits=assign_splits,
                      settings=(SIGNAL, TOKENS_PER_SAMPLE, MAX_WINDOW_SECONDS, TRAILING_SECONDS),
                      **common.store_options(args))


if __name__ == "__main__":
    common.script_main(main)
