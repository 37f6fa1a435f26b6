"""Stage 4 data: the six downstream tasks as one table, one instruction dataset and a strict
answer parser (evaluation.py scores, generates and measures with them).

A task sample becomes one sequence (spec section 5):

    EEG tokens (padded to 276) | [SEP] prompt answer <|endoftext|> (padded with 50256 to 80)

Target convention (the usual shifted-by-one LM target, as model/model_neurolm.py scores it: the
logits at text position k predict text token k + 1): ``y_text[k] = x_text[k + 1]`` when text token
k + 1 is an answer token or the end token, and -1 everywhere else. Text positions are not stored
here: the model places text token k at ``last EEG second of the sample + 1 + k`` from
``input_time`` and ``input_mask`` (docs/INTERFACES.md, model/).

Adding a task means adding a row to ``TASKS``; tests/test_downstream_tasks.py fails when a row
lacks what the pipeline needs.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch.utils.data import Dataset

from dataset import TaskFileError, eeg_tokens, load_sample, read_task_fields, sample_files
from model.gpt2_bpe import EOT_TOKEN_ID, SEP_TOKEN_ID, encode

EEG_MAX_TOKENS = 276      # EEG tokens per instruction sequence (spec section 5)
TEXT_MAX_TOKENS = 80      # text tokens per instruction sequence (spec section 5)
END_TEXT = "<|endoftext|>"
SPLITS = ("train", "val", "test")   # folders every prepare script writes (docs/INTERFACES.md)

BINARY_METRICS = ("balanced_accuracy", "roc_auc", "pr_auc", "accuracy")
MULTICLASS_METRICS = ("balanced_accuracy", "cohen_kappa", "f1_weighted", "accuracy")


@dataclass(frozen=True)
class Task:
    """One downstream task: what the model is asked, what it answers, and where the data live."""

    name: str
    prompt: str                      # exactly the public training prompt (spec section 5)
    answers: tuple[str, ...]         # answer string per label, in label order (spec section 5)
    label_names: tuple[str, ...]     # short class names per label (docs/INTERFACES.md "Labels")
    option_texts: tuple[str, ...] = ()   # spelled-out options of the prompt, per label
    processed_dir: str = ""          # default folder name of the prepare script's output; a
                                     # task file's data folder (absolute)
    splits: tuple[str, ...] = SPLITS
    # How raw recordings become this task's windows. Built-in tasks name their prepare script,
    # the home of their dataset's facts (dataset_maker/prepare_<X>.py: SIGNAL, WINDOW_SECONDS);
    # a task file states them here (channels None = every channel the vocabulary knows).
    prepare_script: str = ""
    window_seconds: float | None = None
    stride_seconds: float | None = None
    channels: tuple[str, ...] | None = None
    mains_hz: float | None = None
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

    def target_text(self, label: int) -> str:
        """The answer as the public training text has it: one space, then the end token
        ('... Answer: Yes <|endoftext|>', '... Answer: (A) <|endoftext|>')."""
        return self.answers[label].rstrip(" ") + " " + END_TEXT

    def full_text(self, label: int) -> str:
        return self.prompt + self.target_text(label)


def _letters(n: int) -> tuple[str, ...]:
    return tuple(f"{chr(ord('A') + i)}) " for i in range(n))


def _option_prompt(question: str, options: Sequence[str]) -> str:
    listed = " ".join(f"({chr(ord('A') + i)}) {text}." for i, text in enumerate(options))
    return f"Question: {question} Options: {listed} Answer: ("


_TUEV_OPTIONS = ("spike and slow wave", "generalized periodic epileptiform discharge",
                 "periodic lateralized epileptiform discharge", "eye movement", "artifact",
                 "background")
_TUSL_OPTIONS = ("background", "seizure", "slowing")
_HMC_OPTIONS = ("Wake", "NREM-1", "NREM-2", "NREM-3", "REM")

# Prompts and answers: spec section 5 (the strings the public model was tuned on).
# Label order: docs/INTERFACES.md "Labels".
TASKS: dict[str, Task] = {t.name: t for t in (
    Task(name="TUAB",
         prompt="Question: Is this EEG segment abnormal? Answer:",
         answers=(" No", " Yes"),
         label_names=("normal", "abnormal"),
         processed_dir="TUAB", prepare_script="prepare_TUAB"),
    Task(name="TUEV",
         prompt=_option_prompt("Which event type does this EEG segment belong to?", _TUEV_OPTIONS),
         answers=_letters(6),
         label_names=("spsw", "gped", "pled", "eyem", "artf", "bckg"),
         option_texts=_TUEV_OPTIONS,
         processed_dir="TUEV", prepare_script="prepare_TUEV"),
    Task(name="TUSL",
         prompt=_option_prompt("Which type does this EEG segment belong to?", _TUSL_OPTIONS),
         answers=_letters(3),
         label_names=("bckg", "seiz", "slow"),
         option_texts=_TUSL_OPTIONS,
         processed_dir="TUSL", prepare_script="prepare_TUSL"),
    Task(name="HMC",
         prompt=_option_prompt("Which sleep type does this EEG segment belong to?", _HMC_OPTIONS),
         answers=_letters(5),
         label_names=("W", "N1", "N2", "N3", "R"),
         option_texts=_HMC_OPTIONS,
         processed_dir="HMC", prepare_script="prepare_HMC"),
    Task(name="SEED",
         prompt="Question: Which emotion type does this EEG segment belong to? Answer:",
         answers=(" Positive", " Neutral", " Negative"),
         label_names=("positive", "neutral", "negative"),
         processed_dir="SEED", prepare_script="prepare_SEED"),
    Task(name="Workload",
         prompt="Question: Is this EEG segment of high workload? Answer:",
         answers=(" No", " Yes"),
         label_names=("rest", "arithmetic"),
         processed_dir="Workload", prepare_script="prepare_workload"),
)}


def get_task(task: Task | str) -> Task:
    """A Task from itself or its name (case-insensitive); unknown names list the known ones."""
    if isinstance(task, Task):
        return task
    for name, row in TASKS.items():
        if name.lower() == str(task).lower():
            return row
    raise KeyError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")



# ---------------------------------------------------------------------------------------------
# A user's task: one TOML or JSON file

def read_task_file(path) -> Task:
    """A Task from a TOML or JSON task file (dataset.read_task_fields: the format and its
    checks); its prompt and answers must also tokenise as the instruction texts need. Every
    problem is one TaskFileError naming the file."""
    path = Path(path)
    fields = read_task_fields(path)
    options = fields["options"]
    if options:
        prompt, answers = _option_prompt(fields["question"], options), _letters(len(options))
    else:
        prompt = f"Question: {fields['question']} Answer:"
        answers = tuple(" " + t for t in fields["answers"])
    if fields["name"].lower() in (t.lower() for t, row in TASKS.items()
                                  if row.source == "built-in"):
        raise TaskFileError(f"task file {path}: name {fields['name']!r} is a built-in task's; "
                            "choose another")
    task = Task(name=fields["name"], prompt=prompt, answers=answers,
                label_names=fields["label_names"], option_texts=options,
                processed_dir=fields["data_dir"], channels=fields["channels"], source=str(path),
                window_seconds=fields["window_seconds"], stride_seconds=fields["stride_seconds"],
                mains_hz=fields["mains_hz"])
    try:
        task_tokens(task)
    except ValueError as err:
        raise TaskFileError(f"task file {path}: {err}") from None
    if any(parse_answer(task, task.answers[label]) != label for label in range(task.n_classes)):
        raise TaskFileError(f"task file {path}: two answers are read as the same class; make "
                            "them distinct")
    return task


def add_task(task: Task) -> Task:
    """Make a task file's task known to get_task (train_instruction, evaluation and
    simple_inference then treat it as a built-in one). The same file twice is fine."""
    known = TASKS.get(task.name)
    if known is not None and known != task:
        raise TaskFileError(f"task file {task.source}: task {task.name!r} is already defined "
                            f"by {known.source}")
    TASKS[task.name] = task
    return task


def load_task_files(paths) -> list[Task]:
    """read_task_file + add_task for every path (the --task_file flag of every script)."""
    return [add_task(read_task_file(p)) for p in paths or ()]


# ---------------------------------------------------------------------------------------------
# Token ids of prompts and answers

@dataclass(frozen=True)
class TaskTokens:
    prompt: tuple[int, ...]              # [SEP] + prompt
    answers: tuple[tuple[int, ...], ...]  # per label: answer tokens + end token

    @property
    def max_answer_len(self) -> int:
        return max(len(a) for a in self.answers)


_TOKEN_CACHE: dict[Task, TaskTokens] = {}


def task_tokens(task: Task | str) -> TaskTokens:
    """Prompt and answer ids, checked to concatenate into exactly the public training text's ids
    (BPE merges could otherwise differ at the prompt/answer seam)."""
    task = get_task(task)
    if task not in _TOKEN_CACHE:
        prompt = tuple(encode(task.prompt))
        answers = []
        for label in range(task.n_classes):
            answer = tuple(encode(task.target_text(label)))
            whole = tuple(encode(task.full_text(label)))
            if prompt + answer != whole:
                raise ValueError(f"task {task.name}: answer {task.answers[label]!r} does not "
                                 "tokenise as a continuation of the prompt")
            answers.append(answer)
        _TOKEN_CACHE[task] = TaskTokens((SEP_TOKEN_ID,) + prompt, tuple(answers))
    return _TOKEN_CACHE[task]


def instruction_text(task: Task | str, label: int, text_max_tokens: int = TEXT_MAX_TOKENS):
    """(x_text, y_text, prompt_len) long tensors of one labelled instruction text.

    x_text = [SEP] prompt answer <|endoftext|>, padded with <|endoftext|>; y_text[k] is the target
    of the logits at text position k: x_text[k + 1] for answer and end tokens, -1 otherwise.
    """
    tokens = task_tokens(task)
    ids = tokens.prompt + tokens.answers[label]
    if len(ids) > text_max_tokens:
        raise ValueError(f"task {get_task(task).name}: instruction text has {len(ids)} tokens, "
                         f"more than text_max_tokens={text_max_tokens}")
    x_text = torch.full((text_max_tokens,), EOT_TOKEN_ID, dtype=torch.long)
    x_text[:len(ids)] = torch.tensor(ids, dtype=torch.long)
    y_text = torch.full((text_max_tokens,), -1, dtype=torch.long)
    start = len(tokens.prompt)
    y_text[start - 1:len(ids) - 1] = x_text[start:len(ids)]
    return x_text, y_text, len(tokens.prompt)


# ---------------------------------------------------------------------------------------------
# Dataset

class InstructionDataset(Dataset):
    """Sample files of one task -> instruction sequences (module docstring for the layout).

    Item (a dict of tensors, plus the task name):
      x_eeg (N, 200), input_chans (N,), input_time (N,), input_mask (N,) -- dataset.eeg_tokens;
      x_text (M,), y_text (M,) -- instruction_text; label (); prompt_ids (M,) the prompt alone
      padded with <|endoftext|> and prompt_len () its length, for generation and option scoring;
      task (str); file, recording, subject (str, "" when unknown), window (), onset_s () (-1 and
      NaN when unknown): the sample file and where its window comes from.
    """

    def __init__(self, task: Task | str, files_or_dir, eeg_max_tokens: int = EEG_MAX_TOKENS,
                 text_max_tokens: int = TEXT_MAX_TOKENS):
        self.task = get_task(task)
        self.files = sample_files(files_or_dir)
        self.eeg_max_tokens = eeg_max_tokens
        self.text_max_tokens = text_max_tokens
        tokens = task_tokens(self.task)
        prompt_len = len(tokens.prompt)
        if prompt_len + tokens.max_answer_len > text_max_tokens:
            raise ValueError(f"task {self.task.name}: prompt and answer need "
                             f"{prompt_len + tokens.max_answer_len} text tokens, more than "
                             f"text_max_tokens={text_max_tokens}")
        self._prompt_ids = torch.full((text_max_tokens,), EOT_TOKEN_ID, dtype=torch.long)
        self._prompt_ids[:prompt_len] = torch.tensor(tokens.prompt, dtype=torch.long)
        self._prompt_len = prompt_len

    def __len__(self) -> int:
        return len(self.files)

    def label_of(self, sample: dict, path: Path) -> int:
        y = sample.get("y")
        if y is None or not 0 <= int(y) < self.task.n_classes:
            raise ValueError(f"{path}: label {y!r} is not a {self.task.name} label "
                             f"(0..{self.task.n_classes - 1}: {', '.join(self.task.label_names)})")
        return int(y)

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        sample = load_sample(path)
        label = self.label_of(sample, path)
        eeg = eeg_tokens(sample["X"], sample["ch_names"], self.eeg_max_tokens)
        x_text, y_text, _ = instruction_text(self.task, label, self.text_max_tokens)
        return {
            "x_eeg": eeg["x_eeg"],
            "input_chans": eeg["input_chans"],
            "input_time": eeg["input_time"],
            "input_mask": eeg["input_mask"],
            "x_text": x_text,
            "y_text": y_text,
            "label": torch.tensor(label, dtype=torch.long),
            "prompt_ids": self._prompt_ids.clone(),
            "prompt_len": torch.tensor(self._prompt_len, dtype=torch.long),
            "task": self.task.name,
            # where the window comes from, for per-sample predictions and recording/subject
            # metrics ("" / -1 / NaN in files without it: the public code's)
            "file": str(path),
            "recording": sample["recording"] or "",
            "subject": sample["subject"] or "",
            "window": torch.tensor(-1 if sample["window"] is None else sample["window"]),
            "onset_s": torch.tensor(math.nan if sample["onset_s"] is None else sample["onset_s"],
                                    dtype=torch.float64),
        }


def prepare_task_datasets(task: Task | str, root, eeg_max_tokens: int = EEG_MAX_TOKENS,
                          text_max_tokens: int = TEXT_MAX_TOKENS):
    """(train, val, test) datasets of a prepare script's output folder ROOT/{train,val,test};
    what the public code's prepare_TUAB_dataset(root) ... prepare_Workload_dataset gave, though
    those returned (train, test, val)."""
    task = get_task(task)
    return tuple(InstructionDataset(task, Path(root) / split, eeg_max_tokens, text_max_tokens)
                 for split in task.splits)


# ---------------------------------------------------------------------------------------------
# Answer parsing

def _normalise(text: str) -> str:
    text = text.split(END_TEXT)[0]
    text = " ".join(text.split()).lower()      # case and any run of spaces/newlines
    return text.rstrip(".").strip()


def _answer_vocabulary(task: Task) -> dict[str, int]:
    """Every accepted spelling of a label; a spelling shared by two labels is dropped, never
    guessed."""
    spellings: dict[str, set[int]] = {}
    for label in range(task.n_classes):
        names = [task.label_names[label]]
        if task.option_texts:
            names.append(task.option_texts[label])
        if not task.is_option_task:
            names.append(task.answers[label])
        for name in names:
            spellings.setdefault(_normalise(name), set()).add(label)
    return {s: labels.pop() for s, labels in spellings.items() if len(labels) == 1 and s}


# A letter standing alone, '(B', 'B)', '(B)', optionally followed by its option text after ')'.
_LETTER_FORM = re.compile(r"^\(?([a-z])(?:\)\s*(.*)|\)?)$")


def parse_answer(task: Task | str, text: str) -> int | None:
    """Generated text (what follows the prompt) -> label, or None when it matches no option or
    more than one. Tolerates case, surrounding spaces, a trailing period and, for option tasks,
    the forms 'B', 'B)', '(B)', '(B) seizure' and the option text alone ('seizure')."""
    task = get_task(task)
    answer = _normalise(text)
    if not answer:
        return None
    vocabulary = _answer_vocabulary(task)
    if task.is_option_task:
        match = _LETTER_FORM.match(answer)
        if match:
            label = ord(match.group(1)) - ord("a")
            if not 0 <= label < task.n_classes:
                return None
            rest = (match.group(2) or "").rstrip(".").strip()
            if rest and vocabulary.get(rest) != label:
                return None     # '(A) seizure': the letter and the text disagree
            return label
    return vocabulary.get(answer)
