"""What a prepare script uses, in one import: `from dataset_maker import common`.

The jobs live in their own modules: signals.py (reading, filtering, windows), splits.py (who
goes where, splits.json), engine.py (the parallel, resumable run), sinks.py (pickles or shards),
files.py (atomic writes, sample pickles, errors.tsv), cli.py (flags, listing, exit codes).
"""

from dataset_maker.cli import arg_parser, find_files, script_main, store_options
from dataset_maker.engine import LOCK_NAME, Recording, Sample, run
from dataset_maker.files import UserError, printable_name, write_sample
from dataset_maker.signals import (
    TARGET_SFREQ,
    BadRecording,
    SignalSpec,
    check_edf_header,
    load_eeg,
    normalise_channel_name,
    read_raw,
    require_duration,
    windows,
)
from dataset_maker.sinks import DONE_DIR, STAGING_DIR
from dataset_maker.splits import split_shuffled, split_sorted, subject_of

__all__ = [
    "arg_parser", "find_files", "script_main", "store_options", "DONE_DIR", "LOCK_NAME",
    "STAGING_DIR", "Recording", "Sample", "run", "UserError", "printable_name", "write_sample",
    "TARGET_SFREQ", "BadRecording", "SignalSpec", "check_edf_header", "load_eeg",
    "normalise_channel_name", "read_raw", "require_duration", "windows", "split_shuffled",
    "split_sorted", "subject_of",
]
