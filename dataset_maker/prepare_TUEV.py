"""TUEV (TUH EEG Events): one 5 s window per annotated event: the 1 s event with 2 s each side.

RAW/{train,eval}/<subject>/<name>.edf with <name>.rec beside it (CSV rows channel,start,end,label,
label 1..6 = spsw gped pled eyem artf bckg; y = label - 1). Official eval -> test, 20 % of the
train subjects (fixed seed) -> val. An event too close to a recording's edge gets the 5 s window
shifted inside the recording (the public code wrapped around to the other end instead).
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

TASK = BUILTIN_TASKS["TUEV"]  # channels, window, band, mains

SIGNAL = common.SignalSpec(channels=TASK.channels, mains_hz=TASK.mains_hz, band_hz=TASK.band_hz)
WINDOW_SECONDS = TASK.window_seconds
CONTEXT_SECONDS = (WINDOW_SECONDS - 1) // 2   # the event second in the middle
N_LABELS = 6


def list_recordings(raw_dir):
    raw_dir = Path(raw_dir)
    recordings, errors = [], []
    for path in common.find_files(raw_dir, ".edf"):
        folder = tuh.folder_under(raw_dir, path, ("train", "eval"))
        if folder is None:
            errors.append((str(path),
                           "malformed layout: expected RAW/{train,eval}/<subject>/*.edf"))
            continue
        subject = (path.relative_to(raw_dir).parts[1] if len(path.relative_to(raw_dir).parts) > 2
                   else common.subject_of(path))
        recordings.append(common.Recording(path, path.stem, subject, extra={"folder": folder},
                                           inputs=(path.with_suffix(".rec"),)))
    assign_splits(recordings)
    return recordings, errors


def assign_splits(recordings):
    tuh.official_split(recordings)


def read_events(rec_path: Path):
    """[(channel, start_s, end_s, y)] from a .rec file; BadRecording when missing or malformed."""
    if not rec_path.exists():
        raise common.BadRecording(f"missing label file {rec_path.name}")
    events = []
    for number, line in enumerate(rec_path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            channel, start, end, label = (int(float(fields[0])), float(fields[1]), float(fields[2]),
                                          int(float(fields[3])))
        except (ValueError, IndexError):
            raise common.BadRecording(f"malformed label file {rec_path.name} line {number}: "
                                      f"{line.strip()!r}") from None
        if not 1 <= label <= N_LABELS:
            raise common.BadRecording(f"unknown label {label} in {rec_path.name} line {number} "
                                      f"(expected 1..{N_LABELS})")
        if end <= start or start < 0:
            raise common.BadRecording(f"malformed label file {rec_path.name} line {number}: "
                                      f"{line.strip()!r}")
        events.append((channel, start, end, label - 1))
    if not events:
        raise common.BadRecording(f"malformed label file {rec_path.name}: no events")
    return events


def event_window(data, start_s: float):
    """The 5 s window starting 2 s before the event, shifted to lie inside the recording."""
    length = WINDOW_SECONDS * common.TARGET_SFREQ
    first = int(round((start_s - CONTEXT_SECONDS) * common.TARGET_SFREQ))
    first = min(max(first, 0), data.shape[1] - length)
    return common.windows(data, WINDOW_SECONDS, start=first, stop=first + length)[0]


def process(recording):
    events = read_events(recording.path.with_suffix(".rec"))
    eeg = common.load_eeg(recording.path, SIGNAL)
    common.require_duration(eeg, WINDOW_SECONDS)
    late = [e for e in events if e[1] >= eeg.seconds]
    if late:
        raise common.BadRecording(f"malformed label file: event at {late[0][1]:g} s after the "
                                  f"recording's end ({eeg.seconds:.1f} s)")
    samples = [common.Sample(recording.split, event_window(eeg.data, start), eeg.ch_names, y)
               for _, start, _, y in events]
    return samples, eeg


def main(argv=None):
    args = common.arg_parser(__doc__).parse_args(argv)
    recordings, errors = list_recordings(args.raw_dir)
    return common.run("TUEV", recordings, process, args.out_dir, ("train", "val", "test"),
                      args.workers, errors,
                      assign_splits=assign_splits,
                      settings=(SIGNAL, WINDOW_SECONDS, N_LABELS),
                      **common.store_options(args))


if __name__ == "__main__":
    common.script_main(main)
