"""What a prepare script uses, in one import: `from dataset_maker import common`.

The jobs live in their own modules: signals.py (reading, filtering, windows), splits.py (who
goes where, splits.json), engine.py (the parallel, resumable run), sinks.py (pickles or shards),
files.py (atomic writes, sample pickles, errors.tsv), cli.py (flags, listing, exit codes).
"""

from dataset_maker.cli import USER_ERROR_EXIT, arg_parser, find_files, script_main, store_options
from dataset_maker.engine import FORMAT_VERSION, LOCK_NAME, Recording, Sample, format_summary, run
from dataset_maker.files import UserError, atomic_write, printable_name, write_sample
from dataset_maker.signals import (
    BAND_HZ,
    TARGET_SFREQ,
    BadRecording,
    Eeg,
    SignalSpec,
    check_edf_header,
    load_eeg,
    normalise_channel_name,
    read_raw,
    require_duration,
    windows,
)
from dataset_maker.sinks import DONE_DIR, STAGING_DIR
from dataset_maker.splits import SPLIT_SEED, split_counts, split_shuffled, split_sorted, subject_of

__all__ = [
    "USER_ERROR_EXIT", "arg_parser", "find_files", "script_main", "store_options",
    "DONE_DIR", "FORMAT_VERSION", "LOCK_NAME", "STAGING_DIR", "Recording", "Sample",
    "format_summary", "run", "UserError", "atomic_write", "printable_name", "write_sample",
    "BAND_HZ", "TARGET_SFREQ", "BadRecording", "Eeg", "SignalSpec", "check_edf_header",
    "load_eeg", "normalise_channel_name", "read_raw", "require_duration", "windows",
    "SPLIT_SEED", "split_counts", "split_shuffled", "split_sorted", "subject_of",
]
