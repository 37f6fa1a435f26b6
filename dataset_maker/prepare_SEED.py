"""SEED (emotion): 4 s windows from the 15 film-clip trials of each session.

RAW/<subject>_<session>.cnt (or .edf), 62 EEG channels. Trial start/end seconds and labels are
the SEED table (labels 1 / 0 / -1 -> y = 1 - label: positive 0, neutral 1, negative 2); an
optional RAW/trials.json {"start_s": [...15], "end_s": [...15]} replaces the seconds (synthetic
sessions are shorter). Split by trial: trials 1-9 train, 10-12 val, 13-15 test of every session.
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
from tasks import BUILTIN_TASKS

TASK = BUILTIN_TASKS["SEED"]  # channels, window, band, mains

CHANNELS = TASK.channels
SIGNAL = common.SignalSpec(channels=TASK.channels, mains_hz=TASK.mains_hz, band_hz=TASK.band_hz)
WINDOW_SECONDS = TASK.window_seconds
# SEED's time table (1000 Hz sample indices / 1000) and trial labels.
START_S = (27, 290, 551, 784, 1050, 1262, 1484, 1748, 1993, 2287, 2551, 2812, 3072, 3335, 3599)
END_S = (262, 523, 757, 1022, 1235, 1457, 1721, 1964, 2258, 2524, 2786, 3045, 3307, 3573, 3805)
TRIAL_LABELS = (1, 0, -1, -1, 0, 1, -1, 0, 1, 1, 0, -1, 0, 1, -1)
TRIAL_LABEL_NAMES = {1: "positive", 0: "neutral", -1: "negative"}  # y = 1 - label
TRIAL_SPLITS = ("train",) * 9 + ("val",) * 3 + ("test",) * 3


def trial_table(raw_dir: Path):
    """[(start_s, end_s, y)] for the 15 trials, from RAW/trials.json when present."""
    starts, ends = START_S, END_S
    override = Path(raw_dir) / "trials.json"
    if override.exists():
        table = json.loads(override.read_text())
        starts, ends = table["start_s"], table["end_s"]
        if not len(starts) == len(ends) == len(TRIAL_LABELS):
            raise common.UserError(f"{override} must give {len(TRIAL_LABELS)} start_s and end_s "
                                   "values")
    return [(float(s), float(e), 1 - label) for s, e, label in zip(starts, ends, TRIAL_LABELS)]


def list_recordings(raw_dir):
    files = common.find_files(raw_dir, ".cnt", ".edf")
    trials = trial_table(raw_dir)
    recordings = [common.Recording(p, p.stem, common.subject_of(p), extra={"trials": trials})
                  for p in files]
    return recordings, []


def process(recording):
    eeg = common.load_eeg(recording.path, SIGNAL)
    common.require_duration(eeg, WINDOW_SECONDS)
    trials = recording.extra["trials"]
    if trials[-1][1] > eeg.seconds + 1:
        raise common.BadRecording(f"too short: {eeg.seconds:.1f} s, "
                                  f"the last trial ends at {trials[-1][1]:g} s")
    rate = common.TARGET_SFREQ
    samples = []
    for number, ((start, end, y), split) in enumerate(zip(trials, TRIAL_SPLITS), 1):
        unit = f"{recording.rec_id}:trial{number:02d}"
        first = int(round(start * rate))
        cut = common.windows(eeg.data, WINDOW_SECONDS, start=first, stop=int(round(end * rate)))
        for k, X in enumerate(cut):
            onset = first / rate + k * WINDOW_SECONDS
            samples.append(common.Sample(split, X, eeg.ch_names, y, unit=unit, onset_s=onset))
    return samples, eeg


def main(argv=None):
    args = common.arg_parser(__doc__).parse_args(argv)
    recordings, errors = list_recordings(args.raw_dir)
    return common.run("SEED", recordings, process, args.out_dir, ("train", "val", "test"),
                      args.workers, errors,
                      settings=(SIGNAL, WINDOW_SECONDS, TRIAL_LABELS, TRIAL_SPLITS),
                      **common.store_options(args))


if __name__ == "__main__":
    common.script_main(main)
