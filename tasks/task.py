"""The Task kind: what the model is asked, what it answers, and how raw recordings become its
windows (channels, window, stride, band, mains); the checks of its fields and numbers, and the
one rule that fits a window to the EEG tokens of a sequence."""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Sequence

from dataset import normalise_channel

EEG_MAX_TOKENS = 276      # EEG tokens per instruction sequence (spec section 5)
TEXT_MAX_TOKENS = 80      # text tokens per instruction sequence (spec section 5)
END_TEXT = "<|endoftext|>"
SPLITS = ("train", "val", "test")   # folders every prepare script writes (docs/INTERFACES.md)
MAX_OPTIONS = 26          # lettered options: (A) ... (Z)
DEFAULT_BAND_HZ = (0.1, 75.0)   # the band-pass of every built-in task (spec section 1)

BINARY_METRICS = ("balanced_accuracy", "roc_auc", "pr_auc", "accuracy")
MULTICLASS_METRICS = ("balanced_accuracy", "cohen_kappa", "f1_weighted", "accuracy")

# Ranges of the preprocessing numbers (task files, the flags that override them): (low, high,
# unit). One EEG token is one second, so a window is 1 s to a whole sequence of one channel; a
# stride below 0.1 s only multiplies identical windows; mains is 50 or 60 Hz, and the notch
# must lie below the 100 Hz Nyquist frequency of the 200 Hz signal.
NUMBER_RANGES = {"window_seconds": (1.0, float(EEG_MAX_TOKENS), "s"),
                 "stride_seconds": (0.1, 3600.0, "s"),
                 "mains_hz": (40.0, 70.0, "Hz"),
                 "band_hz": (0.0, 100.0, "Hz")}


class TaskError(ValueError):
    """A task that cannot be used; the message says where it came from and the problem."""


class TaskFileError(TaskError):
    """A task file that cannot be used; the message names the file and the problem."""


class UnknownTaskError(TaskError, KeyError):
    """A task name the run does not define (a KeyError too, for `except KeyError` callers)."""

    def __str__(self) -> str:           # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def check_number(value, field: str) -> float:
    """A preprocessing number as a float, or ValueError saying the allowed range (no NaN, no
    infinity, no bool)."""
    low, high, unit = NUMBER_RANGES[field]
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or not low <= value <= high):
        raise ValueError(f"must be a number from {low:g} to {high:g} {unit}, got {value!r}")
    return float(value)


def check_band(band) -> tuple[float, float]:
    """A band-pass [low, high] in Hz, 0 <= low < high <= 100; ValueError otherwise."""
    if not isinstance(band, (list, tuple)) or len(band) != 2:
        raise ValueError(f"must be [low, high] in Hz, got {band!r}")
    low, high = (check_number(v, "band_hz") for v in band)
    if not low < high:
        raise ValueError(f"must have low < high, got {low:g} {high:g}")
    return low, high


def window_problem(window_seconds: float, n_channels: int,
                   eeg_max_tokens: int = EEG_MAX_TOKENS) -> str | None:
    """Why `n_channels` channels x `window_seconds` do not fit one sequence's EEG tokens (one
    per channel-second), or None when they do."""
    if n_channels * int(window_seconds) <= eeg_max_tokens:
        return None
    fit = eeg_max_tokens // n_channels
    return (f"{int(window_seconds)} s x {n_channels} channels = "
            f"{int(window_seconds) * n_channels} EEG tokens, more than the {eeg_max_tokens} of "
            "one sequence (one token per channel-second): "
            + (f"at most {fit} s with {n_channels} channels" if fit else "list fewer channels"))


def fit_window(window_seconds: float, stride_seconds: float, n_channels: int,
               eeg_max_tokens: int = EEG_MAX_TOKENS) -> tuple[float, float]:
    """(window, stride) for a recording of `n_channels` (a task reading every channel it has):
    a window longer than the EEG tokens hold shrinks to what fits, its stride with it, so no
    second is silently cut from a sample. ValueError when not even one second fits."""
    fit = eeg_max_tokens // max(n_channels, 1)
    if fit < 1:
        raise ValueError(f"{n_channels} channels do not fit in {eeg_max_tokens} EEG tokens (one "
                         "per channel-second); list fewer channels")
    if window_seconds <= fit:
        return window_seconds, stride_seconds
    return float(fit), min(stride_seconds, float(fit))


@dataclass(frozen=True)
class Task:
    """One downstream task: what the model is asked, what it answers, where its data live and
    how raw recordings become its windows (the facts the prepare scripts and inference share)."""

    name: str
    prompt: str                      # exactly the public training prompt (spec section 5)
    answers: tuple[str, ...]         # answer string per label, in label order (spec section 5)
    label_names: tuple[str, ...]     # short class names per label (docs/INTERFACES.md "Labels")
    window_seconds: float            # length of one sample
    stride_seconds: float            # between window starts
    channels: tuple[str, ...] | None  # in this order; None: every channel the vocabulary knows
    mains_hz: float                  # notched with its harmonics
    band_hz: tuple[float, float] = DEFAULT_BAND_HZ
    option_texts: tuple[str, ...] = ()   # spelled-out options of the prompt, per label
    processed_dir: str = ""          # a built-in task's folder name under --data_root; a task
                                     # file's data folder (absolute)
    splits: tuple[str, ...] = SPLITS
    source: str = "built-in"         # or the task file it was read from

    @property
    def n_classes(self) -> int:
        return len(self.answers)

    @property
    def is_binary(self) -> bool:
        return self.n_classes == 2

    @property
    def is_option_task(self) -> bool:
        """Option tasks end their prompt with '(' and answer with a letter: 'A) '."""
        return self.prompt.endswith("(")

    @property
    def metrics(self) -> tuple[str, ...]:
        return BINARY_METRICS if self.is_binary else MULTICLASS_METRICS

    def answer_text(self, label: int) -> str:
        """The answer as the public training text has it, before the end token: the answer, then
        one space (' Yes ', 'A) ')."""
        return self.answers[label].rstrip(" ") + " "

    def target_text(self, label: int) -> str:
        """The answer and the end token as GPT-2 text ('... Answer: Yes <|endoftext|>',
        '... Answer: (A) <|endoftext|>')."""
        return self.answer_text(label) + END_TEXT

    def full_text(self, label: int) -> str:
        return self.prompt + self.target_text(label)

    def to_dict(self) -> dict:
        """The whole definition as JSON-ready values (results.json and checkpoints carry it)."""
        return {f.name: list(v) if isinstance(v, tuple) else v
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, data, where: str = "a task definition") -> Task:
        """A Task from to_dict's output, its fields and numbers checked as a task file's (it may
        come from any results.json or checkpoint; tasks_from_record also checks its texts);
        TaskError naming `where` otherwise."""
        if not isinstance(data, dict):
            raise TaskError(f"{where}: expected a task definition (a dict), got "
                            f"{type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING}
        missing, unknown = sorted(required - set(data)), sorted(set(data) - known)
        if missing or unknown:
            problems = ([f"missing field(s) {', '.join(missing)}"] if missing else []) + (
                [f"unknown field(s) {', '.join(map(str, unknown))}"] if unknown else [])
            raise TaskError(f"{where}: not a task definition: {'; '.join(problems)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            task = cls(**values)
            check_task(task)
        except (TypeError, ValueError) as err:
            raise TaskError(f"{where}: task {data.get('name')!r}: {err}") from None
        return task


def letters(n: int) -> tuple[str, ...]:
    """The answers of an n-option task: 'A) ', 'B) ', ..."""
    return tuple(f"{chr(ord('A') + i)}) " for i in range(n))


def option_prompt(question: str, options: Sequence[str]) -> str:
    listed = " ".join(f"({chr(ord('A') + i)}) {text}." for i, text in enumerate(options))
    return f"Question: {question} Options: {listed} Answer: ("


def check_task(task: Task) -> None:
    """A task's fields, numbers, channels and window; ValueError with the problem (its texts:
    tasks.text.check_answers)."""
    def strings(values, field):
        if not isinstance(values, tuple) or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{field} must be a list of strings")
    if not isinstance(task.name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", task.name):
        raise ValueError(f"name {task.name!r} must be letters, digits, '_', '.' or '-'")
    for field in ("answers", "label_names", "option_texts", "splits"):
        strings(getattr(task, field), field)
    for field in ("prompt", "processed_dir", "source"):
        if not isinstance(getattr(task, field), str):
            raise ValueError(f"{field} must be a string")
    if len(task.label_names) != task.n_classes or task.n_classes < 2:
        raise ValueError(f"{task.n_classes} answers for {len(task.label_names)} label_names: at "
                         "least two classes, exactly one answer each")
    if task.is_option_task and task.n_classes > MAX_OPTIONS:
        raise ValueError(f"{task.n_classes} options, more than the {MAX_OPTIONS} that lettered "
                         "options (A) to (Z) can name; use fewer classes or free answers")
    for field in ("window_seconds", "stride_seconds", "mains_hz"):
        try:
            check_number(getattr(task, field), field)
        except ValueError as err:
            raise ValueError(f"{field} {err}") from None
    try:
        check_band(task.band_hz)
    except ValueError as err:
        raise ValueError(f"band_hz {err}") from None
    if task.channels is not None:
        check_channels(task.channels)
        problem = window_problem(task.window_seconds, len(task.channels))
        if problem:
            raise ValueError(f"window_seconds: {problem}")


def check_channels(channels) -> tuple[str, ...]:
    """A task's channel list: names of the vocabulary, each electrode once (T3 and T7 are one)."""
    if not isinstance(channels, (list, tuple)) or not channels or not all(
            isinstance(c, str) for c in channels):
        raise ValueError('channels must be "all" or a list of channel names')
    unknown = [c for c in channels if normalise_channel(c) is None]
    if unknown:
        raise ValueError(f"channels not in the channel vocabulary: {', '.join(unknown)}")
    seen: dict[str, str] = {}
    for name in channels:
        entry = normalise_channel(name)
        if entry in seen:
            raise ValueError(f"channels list {seen[entry]!r} and {name!r}, the same channel "
                             f"({entry}); list each channel once")
        seen[entry] = name
    return tuple(channels)
