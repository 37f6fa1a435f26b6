"""The six built-in tasks: prompts and answers (spec section 5, the strings the public model was
tuned on; label order docs/INTERFACES.md "Labels") and their datasets' preprocessing, declared
once: dataset_maker/prepare_<X>.py and inference both read them from here."""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from dataset import LEGACY_TUH_CHANNELS
from tasks.task import Task, UnknownTaskError, letters, option_prompt

# TUAB, TUEV, TUSL: the public code's 23-channel TUH order, so new files and the legacy ones
# agree row for row.
TUH_CHANNELS = tuple(LEGACY_TUH_CHANNELS)
# HMC's EEG derivations F4-M1, C4-M1, O2-M1, C3-M2, named by their active electrode.
HMC_CHANNELS = ("F4", "C4", "O2", "C3")
SEED_CHANNELS = tuple("""
FP1 FPZ FP2 AF3 AF4 F7 F5 F3 F1 FZ F2 F4 F6 F8 FT7 FC5 FC3 FC1 FCZ FC2 FC4 FC6 FT8 T7 C5 C3 C1 CZ
C2 C4 C6 T8 TP7 CP5 CP3 CP1 CPZ CP2 CP4 CP6 TP8 P7 P5 P3 P1 PZ P2 P4 P6 P8 PO7 PO5 PO3 POZ PO4
PO6 PO8 CB1 O1 OZ O2 CB2""".split())
# EEGMAT's 19 EEG channels in the public code's order (A2-A1 and ECG are left out).
WORKLOAD_CHANNELS = ("FP1", "FP2", "F3", "F4", "F7", "F8", "T3", "T4", "C3", "C4",
                     "T5", "T6", "P3", "P4", "O1", "O2", "FZ", "CZ", "PZ")
TUEV_CONTEXT_SECONDS = 2    # an event second with 2 s either side


def _options_task(name: str, question: str, options: tuple[str, ...], label_names, **facts):
    """A task answered with a lettered option, '(A)' ... (spec section 5)."""
    return Task(name=name, prompt=option_prompt(question, options), answers=letters(len(options)),
                label_names=label_names, option_texts=options, processed_dir=name, **facts)


BUILTIN_TASKS: Mapping[str, Task] = MappingProxyType({t.name: t for t in (
    Task(name="TUAB", prompt="Question: Is this EEG segment abnormal? Answer:",
         answers=(" No", " Yes"), label_names=("normal", "abnormal"), processed_dir="TUAB",
         window_seconds=10, stride_seconds=10, channels=TUH_CHANNELS, mains_hz=50.0),
    _options_task("TUEV", "Which event type does this EEG segment belong to?",
                  ("spike and slow wave", "generalized periodic epileptiform discharge",
                   "periodic lateralized epileptiform discharge", "eye movement", "artifact",
                   "background"),
                  ("spsw", "gped", "pled", "eyem", "artf", "bckg"),
                  window_seconds=1 + 2 * TUEV_CONTEXT_SECONDS,
                  stride_seconds=1 + 2 * TUEV_CONTEXT_SECONDS, channels=TUH_CHANNELS,
                  mains_hz=50.0),
    _options_task("TUSL", "Which type does this EEG segment belong to?",
                  ("background", "seizure", "slowing"), ("bckg", "seiz", "slow"),
                  window_seconds=10, stride_seconds=10, channels=TUH_CHANNELS, mains_hz=60.0),
    _options_task("HMC", "Which sleep type does this EEG segment belong to?",
                  ("Wake", "NREM-1", "NREM-2", "NREM-3", "REM"), ("W", "N1", "N2", "N3", "R"),
                  window_seconds=30, stride_seconds=30,   # one scored sleep epoch
                  channels=HMC_CHANNELS, mains_hz=50.0),
    Task(name="SEED", prompt="Question: Which emotion type does this EEG segment belong to? "
                             "Answer:",
         answers=(" Positive", " Neutral", " Negative"),
         label_names=("positive", "neutral", "negative"), processed_dir="SEED",
         window_seconds=4, stride_seconds=4, channels=SEED_CHANNELS, mains_hz=50.0),
    Task(name="Workload", prompt="Question: Is this EEG segment of high workload? Answer:",
         answers=(" No", " Yes"), label_names=("rest", "arithmetic"), processed_dir="Workload",
         window_seconds=4, stride_seconds=2, channels=WORKLOAD_CHANNELS, mains_hz=50.0),
)})


def get_task(task: Task | str, known: Mapping[str, Task] = BUILTIN_TASKS) -> Task:
    """A Task from itself or its name among `known` (a run's tasks; default the built-in ones),
    case-insensitive; an unknown name is an UnknownTaskError listing the known ones."""
    if isinstance(task, Task):
        return task
    for name, row in known.items():
        if name.lower() == str(task).lower():
            return row
    raise UnknownTaskError(f"unknown task {task!r}; known tasks: {', '.join(known)}")
