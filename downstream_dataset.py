"""Stage 4 data: the instruction dataset of one task's sample files (the task itself, its
instruction text and answer parser live in tasks/).

A task sample becomes one sequence (spec section 5):

    EEG tokens (padded to 276) | [SEP] prompt answer <end> (padded with <end> to 80)

in the model's text tokenizer (`text=`, model.text; GPT-2's by default: <end> = 50256).

Text positions are not stored here: the model places text token k at ``last EEG second of the
sample + 1 + k`` from ``input_time`` and ``input_mask`` (docs/INTERFACES.md, model/).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.utils.data import Dataset

from dataset import eeg_tokens, load_sample, sample_files
from model.text_tokenizer import GPT2_TEXT
from tasks import (  # noqa: F401 - also what callers written before tasks/ import from here
    BINARY_METRICS,
    BUILTIN_TASKS,
    EEG_MAX_TOKENS,
    MULTICLASS_METRICS,
    SPLITS,
    TEXT_MAX_TOKENS,
    Task,
    TaskFileError,
    get_task,
    instruction_text,
    parse_answer,
    task_tokens,
)

# The built-in tasks, read-only (a run's own tasks are passed along explicitly: tasks.run_tasks).
TASKS = BUILTIN_TASKS

# ---------------------------------------------------------------------------------------------
# Dataset

class InstructionDataset(Dataset):
    """Sample files of one task -> instruction sequences (module docstring for the layout).

    Item (a dict of tensors, plus the task name):
      x_eeg (N, 200), input_chans (N,), input_time (N,), input_mask (N,) -- dataset.eeg_tokens;
      x_text (M,), y_text (M,) -- instruction_text; label (); prompt_ids (M,) the prompt alone
      padded with the end token and prompt_len () its length, for generation and option scoring;
      task (str); file, recording, subject (str, "" when unknown), window (), onset_s () (-1 and
      NaN when unknown): the sample file and where its window comes from.
    """

    def __init__(self, task: Task | str, files_or_dir, eeg_max_tokens: int = EEG_MAX_TOKENS,
                 text_max_tokens: int = TEXT_MAX_TOKENS, text=GPT2_TEXT):
        self.task = get_task(task)
        self.files = sample_files(files_or_dir)
        self.eeg_max_tokens = eeg_max_tokens
        self.text_max_tokens = text_max_tokens
        tokens = task_tokens(self.task, text)
        prompt_len = len(tokens.prompt)
        if prompt_len + tokens.max_answer_len > text_max_tokens:
            raise ValueError(f"task {self.task.name}: prompt and answer need "
                             f"{prompt_len + tokens.max_answer_len} text tokens, more than "
                             f"text_max_tokens={text_max_tokens}")
        self._prompt_ids = torch.full((text_max_tokens,), text.eot_id, dtype=torch.long)
        self._prompt_ids[:prompt_len] = torch.tensor(tokens.prompt, dtype=torch.long)
        self._prompt_len = prompt_len
        # every label's text, made here: workers never need the tokenizer
        self._texts = [instruction_text(self.task, label, text_max_tokens, text)[:2]
                       for label in range(self.task.n_classes)]

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
        x_text, y_text = (t.clone() for t in self._texts[label])
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
                          text_max_tokens: int = TEXT_MAX_TOKENS, text=GPT2_TEXT):
    """(train, val, test) datasets of a prepare script's output folder ROOT/{train,val,test};
    what the public code's prepare_TUAB_dataset(root) ... prepare_Workload_dataset gave, though
    those returned (train, test, val)."""
    task = get_task(task)
    return tuple(InstructionDataset(task, Path(root) / split, eeg_max_tokens, text_max_tokens,
                                    text) for split in task.splits)
