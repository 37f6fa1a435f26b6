"""Stage 4 data and evaluation: the six downstream tasks as one table, one instruction dataset,
a strict answer parser, option scoring, generation and metrics.

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

import contextlib
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from dataset import eeg_tokens, load_sample, sample_files
from model.gpt2_bpe import EOT_TOKEN_ID, SEP_TOKEN_ID, decode, encode
from utils import to_device

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
    processed_dir: str = ""          # default folder name of the prepare script's output
    splits: tuple[str, ...] = SPLITS

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

    @property
    def primary_metric(self) -> str:
        return "balanced_accuracy"

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
         processed_dir="TUAB"),
    Task(name="TUEV",
         prompt=_option_prompt("Which event type does this EEG segment belong to?", _TUEV_OPTIONS),
         answers=_letters(6),
         label_names=("spsw", "gped", "pled", "eyem", "artf", "bckg"),
         option_texts=_TUEV_OPTIONS,
         processed_dir="TUEV"),
    Task(name="TUSL",
         prompt=_option_prompt("Which type does this EEG segment belong to?", _TUSL_OPTIONS),
         answers=_letters(3),
         label_names=("bckg", "seiz", "slow"),
         option_texts=_TUSL_OPTIONS,
         processed_dir="TUSL"),
    Task(name="HMC",
         prompt=_option_prompt("Which sleep type does this EEG segment belong to?", _HMC_OPTIONS),
         answers=_letters(5),
         label_names=("W", "N1", "N2", "N3", "R"),
         option_texts=_HMC_OPTIONS,
         processed_dir="HMC"),
    Task(name="SEED",
         prompt="Question: Which emotion type does this EEG segment belong to? Answer:",
         answers=(" Positive", " Neutral", " Negative"),
         label_names=("positive", "neutral", "negative"),
         processed_dir="SEED"),
    Task(name="Workload",
         prompt="Question: Is this EEG segment of high workload? Answer:",
         answers=(" No", " Yes"),
         label_names=("rest", "arithmetic"),
         processed_dir="Workload"),
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
      task (str).
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
            "x_eeg": eeg["x"],
            "input_chans": eeg["input_chans"],
            "input_time": eeg["input_time"],
            "input_mask": eeg["input_mask"],
            "x_text": x_text,
            "y_text": y_text,
            "label": torch.tensor(label, dtype=torch.long),
            "prompt_ids": self._prompt_ids.clone(),
            "prompt_len": torch.tensor(self._prompt_len, dtype=torch.long),
            "task": self.task.name,
        }


def prepare_task_datasets(task: Task | str, root, eeg_max_tokens: int = EEG_MAX_TOKENS,
                          text_max_tokens: int = TEXT_MAX_TOKENS):
    """(train, val, test) datasets of a prepare script's output folder ROOT/{train,val,test}.
    Note: the public code returned (train, test, val); this returns them in split order."""
    task = get_task(task)
    return tuple(InstructionDataset(task, Path(root) / split, eeg_max_tokens, text_max_tokens)
                 for split in task.splits)


def _task_dataset_class(name: str) -> type:
    def __init__(self, files_or_dir, eeg_max_tokens=EEG_MAX_TOKENS,
                 text_max_tokens=TEXT_MAX_TOKENS):
        InstructionDataset.__init__(self, name, files_or_dir, eeg_max_tokens, text_max_tokens)
    return type(f"{name}Dataset", (InstructionDataset,),
                {"__init__": __init__, "__doc__": f"InstructionDataset of task {name}."})


def _task_prepare_function(name: str) -> Callable:
    def prepare(root, eeg_max_tokens=EEG_MAX_TOKENS, text_max_tokens=TEXT_MAX_TOKENS):
        return prepare_task_datasets(name, root, eeg_max_tokens, text_max_tokens)
    prepare.__name__ = prepare.__qualname__ = f"prepare_{name}_dataset"
    prepare.__doc__ = f"(train, val, test) InstructionDatasets of {name} under ROOT."
    return prepare


# The public code's names, kept as thin aliases.
TUABDataset = _task_dataset_class("TUAB")
TUEVDataset = _task_dataset_class("TUEV")
TUSLDataset = _task_dataset_class("TUSL")
HMCDataset = _task_dataset_class("HMC")
SEEDDataset = _task_dataset_class("SEED")
WorkloadDataset = _task_dataset_class("Workload")
prepare_TUAB_dataset = _task_prepare_function("TUAB")
prepare_TUEV_dataset = _task_prepare_function("TUEV")
prepare_TUSL_dataset = _task_prepare_function("TUSL")
prepare_HMC_dataset = _task_prepare_function("HMC")
prepare_SEED_dataset = _task_prepare_function("SEED")
prepare_Workload_dataset = _task_prepare_function("Workload")


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


# ---------------------------------------------------------------------------------------------
# Model-side evaluation

_EEG_KEYS = ("x_eeg", "input_chans", "input_time", "input_mask")


def _shared_prompt_len(batch: dict, task: Task) -> int:
    lengths = batch["prompt_len"]
    prompt_len = int(lengths[0])
    if bool((lengths != prompt_len).any()):
        raise ValueError(f"task {task.name}: a batch for evaluation must hold one task's samples "
                         f"(prompt lengths {sorted(set(lengths.tolist()))})")
    return prompt_len


def option_log_likelihoods(model, batch: dict, task: Task | str,
                           max_rows: int | None = None) -> torch.Tensor:
    """(B, n_options) log-likelihood of every answer option (answer tokens + end token) after the
    prompt, summed over its tokens under the text vocabulary (first 50257 logits).

    Each sample is repeated once per option and scored in one forward; ``max_rows`` caps the
    rows per forward and splits the work into several forwards only when exceeded.
    """
    task = get_task(task)
    tokens = task_tokens(task)
    n_opt = task.n_classes
    prompt_len = _shared_prompt_len(batch, task)
    prompt = batch["prompt_ids"][:, :prompt_len]
    device = prompt.device
    n_batch = prompt.size(0)
    width = prompt_len + tokens.max_answer_len

    options = torch.full((n_opt, width), EOT_TOKEN_ID, dtype=torch.long, device=device)
    for label, answer in enumerate(tokens.answers):
        options[label, prompt_len:prompt_len + len(answer)] = torch.tensor(answer, device=device)
    x_text = options.unsqueeze(0).repeat(n_batch, 1, 1)          # (B, O, W)
    x_text[:, :, :prompt_len] = prompt.unsqueeze(1)
    x_text = x_text.reshape(n_batch * n_opt, width)

    # text position k predicts token k + 1, so the answers are read at text positions
    # prompt_len - 1 ... width - 2: only those logits are normalised
    n_read = tokens.max_answer_len
    targets = x_text[:, prompt_len:]                              # (B*O, n_read)
    answer_mask = torch.zeros(n_opt, n_read, dtype=torch.bool, device=device)
    for label, answer in enumerate(tokens.answers):
        answer_mask[label, :len(answer)] = True                   # shorter options: EOT padding
    answer_mask = answer_mask.repeat(n_batch, 1)                  # (B*O, n_read)

    eeg = {k: batch[k].repeat_interleave(n_opt, dim=0) for k in _EEG_KEYS}
    rows = n_batch * n_opt
    step = rows if not max_rows else max(1, max_rows)
    scores = []
    for lo in range(0, rows, step):
        hi = min(rows, lo + step)
        read = model.text_logits(x_eeg=eeg["x_eeg"][lo:hi], x_text=x_text[lo:hi],
                                 input_chans=eeg["input_chans"][lo:hi],
                                 input_time=eeg["input_time"][lo:hi],
                                 input_mask=eeg["input_mask"][lo:hi],
                                 last_n=n_read + 1)[:, :-1].float()    # (rows, n_read, 50257)
        logp = F.log_softmax(read, dim=-1)
        token_logp = logp.gather(-1, targets[lo:hi].unsqueeze(-1)).squeeze(-1)
        scores.append((token_logp * answer_mask[lo:hi]).sum(dim=-1))
    return torch.cat(scores).view(n_batch, n_opt)


def generate_answers(model, batch: dict, task: Task | str, max_new_tokens: int | None = None):
    """Greedy cached generation after each prompt -> (texts, labels); a label is None when the
    text matches no option. Generation stops being read at the first end token."""
    task = get_task(task)
    if max_new_tokens is None:
        max_new_tokens = task_tokens(task).max_answer_len
    prompt_len = _shared_prompt_len(batch, task)
    out = model.generate(x_eeg=batch["x_eeg"], x_text=batch["prompt_ids"][:, :prompt_len],
                         input_chans=batch["input_chans"], input_time=batch["input_time"],
                         input_mask=batch["input_mask"], max_new_tokens=max_new_tokens)
    texts = []
    for row in out[:, prompt_len:].tolist():
        if EOT_TOKEN_ID in row:
            row = row[:row.index(EOT_TOKEN_ID)]
        texts.append(decode(row))
    return texts, [parse_answer(task, t) for t in texts]


# ---------------------------------------------------------------------------------------------
# Metrics

INVALID = -1   # a generated answer that matches no option; never a class


def get_metrics(y_true, y_pred, probs, task: Task | str) -> dict:
    """Metrics of one task with scikit-learn.

    binary: balanced_accuracy, roc_auc and pr_auc (from probs[:, 1]; NaN without probs),
    accuracy; multi-class: balanced_accuracy, cohen_kappa, f1_weighted, accuracy. Predictions
    None or -1 are invalid answers: they count as wrong and their share is ``invalid_rate``.
    Undefined values (e.g. one class present) are NaN, explained in ``notes``.
    """
    task = get_task(task)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray([INVALID if p is None else int(p) for p in y_pred], dtype=np.int64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {len(y_true)} labels but y_pred {len(y_pred)}")
    notes: list[str] = []
    out: dict = {"n": int(len(y_true))}
    if len(y_true) == 0:
        notes.append("no samples")
        out.update({name: math.nan for name in task.metrics})
        out.update(invalid_rate=math.nan, notes=notes)
        return out
    present = np.unique(y_true)
    if len(present) < 2:
        notes.append(f"only class {present.tolist()} present in y_true")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # balanced accuracy = mean recall over the classes present; invalid predictions are
        # simply not a correct class, so they lower the recall of their true class
        out["balanced_accuracy"] = float(skm.recall_score(
            y_true, y_pred, labels=present, average="macro", zero_division=0))
        out["accuracy"] = float(skm.accuracy_score(y_true, y_pred))
        if task.is_binary:
            out.update(_binary_scores(y_true, probs, notes))
        else:
            out["cohen_kappa"] = _nan_if_undefined(
                float(skm.cohen_kappa_score(y_true, y_pred)), "cohen_kappa", notes)
            out["f1_weighted"] = float(skm.f1_score(
                y_true, y_pred, labels=present, average="weighted", zero_division=0))
    out["invalid_rate"] = float(np.mean(y_pred == INVALID))
    out["notes"] = notes
    return out


def _nan_if_undefined(value: float, name: str, notes: list[str]) -> float:
    if not math.isfinite(value):
        notes.append(f"{name} undefined (constant labels or predictions)")
        return math.nan
    return value


def _binary_scores(y_true: np.ndarray, probs, notes: list[str]) -> dict:
    if probs is None:
        notes.append("roc_auc and pr_auc need class probabilities (option scoring)")
        return {"roc_auc": math.nan, "pr_auc": math.nan}
    positive = np.asarray(probs, dtype=np.float64)
    if positive.ndim == 2:
        positive = positive[:, 1]
    if len(np.unique(y_true)) < 2:
        notes.append("roc_auc and pr_auc undefined with one class present")
        return {"roc_auc": math.nan, "pr_auc": math.nan}
    return {"roc_auc": float(skm.roc_auc_score(y_true, positive)),
            "pr_auc": float(skm.average_precision_score(y_true, positive))}


# ---------------------------------------------------------------------------------------------
# One task's evaluation in both modes

EVAL_MODES = ("generation", "scoring")


@torch.no_grad()
def evaluate_task(model, dataset: Dataset, task: Task | str, batch_size: int, device,
                  modes: Iterable[str] = EVAL_MODES, num_workers: int = 0,
                  autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                  max_new_tokens: int | None = None, max_rows: int | None = None,
                  progress: bool = True) -> dict:
    """Evaluate one task: {"generation": metrics, "scoring": metrics, "predictions": {...}}.

    generation: greedy cached decoding + parse_answer (invalid answers counted, never mapped to a
    class); scoring: option_log_likelihoods -> softmax probabilities -> argmax. ``predictions``
    holds per sample: label, and per mode the predicted label (None = invalid), generated text,
    option probabilities. ``autocast`` is a context factory such as utils.Runtime.autocast.
    """
    task = get_task(task)
    modes = tuple(modes)
    unknown = set(modes) - set(EVAL_MODES)
    if unknown:
        raise ValueError(f"unknown evaluation modes {sorted(unknown)}; known: {EVAL_MODES}")
    autocast = autocast or contextlib.nullcontext
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    labels, gen_pred, gen_text, score_pred, score_probs = [], [], [], [], []
    try:
        for batch in tqdm(loader, desc=f"eval {task.name}", disable=not progress, leave=False):
            batch = to_device(batch, device)
            labels += batch["label"].tolist()
            with autocast():
                if "generation" in modes:
                    texts, preds = generate_answers(model, batch, task, max_new_tokens)
                    gen_text += texts
                    gen_pred += preds
                if "scoring" in modes:
                    loglik = option_log_likelihoods(model, batch, task, max_rows)
            if "scoring" in modes:
                probs = torch.softmax(loglik.float(), dim=-1)
                score_probs += probs.tolist()
                score_pred += probs.argmax(dim=-1).tolist()
    finally:
        model.train(was_training)

    result: dict = {}
    predictions: dict = {"label": labels}
    if "generation" in modes:
        result["generation"] = get_metrics(labels, gen_pred, None, task)
        predictions["generation"] = gen_pred
        predictions["generated_text"] = gen_text
    if "scoring" in modes:
        probs = np.asarray(score_probs) if score_probs else None
        result["scoring"] = get_metrics(labels, score_pred, probs, task)
        predictions["scoring"] = score_pred
        predictions["probs"] = score_probs
    result["predictions"] = predictions
    return result
