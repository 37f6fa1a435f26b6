"""Running an evaluation: one task's evaluation over a dataset (answers from
answering.answer_batch), and every task's evaluated splits.

Two modes per task (README "Evaluation"): *generation* decodes greedily after the prompt and
reads the answer with tasks.parse_answer (an unreadable answer is invalid, never a
class); *scoring* compares the log-likelihoods of every answer option, which gives class
probabilities and so AUROC / AUC-PR for binary tasks. Batches must hold one task's samples.
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

import answering
import utils
from downstream_dataset import InstructionDataset
from evaluation.metrics import N_BOOTSTRAP, analyse_mode, get_metrics
from model.text_tokenizer import GPT2_TEXT
from tasks import BUILTIN_TASKS, EEG_MAX_TOKENS, TEXT_MAX_TOKENS, Task, get_task

# ----------------------------------------------------------------------------- one task, both modes

EVAL_MODES = ("generation", "scoring")
# where a sample comes from (downstream_dataset.InstructionDataset items), with the value of a
# sample file that does not say
ORIGIN_KEYS = {"file": "", "recording": "", "subject": "", "window": -1, "onset_s": math.nan}


@torch.no_grad()
def evaluate_task(model, dataset: Dataset, task: Task | str, batch_size: int, device,
                  modes: Iterable[str] = EVAL_MODES, num_workers: int = 0,
                  autocast: Callable[[], contextlib.AbstractContextManager] | None = None,
                  max_new_tokens: int | None = None, max_rows: int | None = None,
                  progress: bool = True) -> dict:
    """Evaluate one task: {"generation": metrics, "scoring": metrics, "predictions": {...}}.

    Both modes come from one answering.answer_batch per batch: generation: greedy cached
    decoding + parse_answer (invalid answers counted, never mapped to a class); scoring: option
    log-likelihoods -> softmax probabilities -> argmax. ``predictions``
    holds per sample: label, where it comes from (ORIGIN_KEYS: file, recording, subject, window,
    onset_s), and per mode the predicted label (None = invalid), generated text, option
    probabilities and log-likelihoods. ``autocast`` is a context factory such as
    utils.Runtime.autocast.
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
    score_loglik: list = []
    origin: dict[str, list] = {key: [] for key in ORIGIN_KEYS}
    try:
        for batch in tqdm(loader, desc=f"eval {task.name}", disable=None if progress else True,
                          leave=False):
            n_batch = len(batch["label"])
            for key, missing in ORIGIN_KEYS.items():
                value = batch.get(key, [missing] * n_batch)
                origin[key] += value.tolist() if torch.is_tensor(value) else list(value)
            batch = utils.to_device(batch, device)
            labels += batch["label"].tolist()
            with autocast():
                answers = answering.answer_batch(
                    model, batch, task, max_new_tokens if "generation" in modes else 0,
                    max_rows)
            gen_text += answers.texts
            gen_pred += answers.labels
            probs = answers.probabilities()
            score_loglik += answers.log_likelihoods.float().tolist()
            score_probs += probs.tolist()
            score_pred += probs.argmax(dim=-1).tolist()
    finally:
        model.train(was_training)

    result: dict = {}
    predictions: dict = {"label": labels, **origin}
    if "generation" in modes:
        result["generation"] = get_metrics(labels, gen_pred, None, task)
        predictions["generation"] = gen_pred
        predictions["generated_text"] = gen_text
    if "scoring" in modes:
        probs = np.asarray(score_probs) if score_probs else None
        result["scoring"] = get_metrics(labels, score_pred, probs, task)
        predictions["scoring"] = score_pred
        predictions["probs"] = score_probs
        predictions["log_likelihoods"] = score_loglik      # what calibration is fitted on
    result["predictions"] = predictions
    return result


# ----------------------------------------------------------------------------- every task
SPLITS_EVALUATED = ("val", "test")
PREDICTIONS = "predictions"


def evenly_spaced(dataset, max_samples: int | None):
    """At most max_samples items spread over the whole (sorted) file list, so a capped
    evaluation still sees every recording's part of the split."""
    if max_samples is None or len(dataset) <= max_samples:
        return dataset
    return Subset(dataset, utils.spread_indices(len(dataset), max_samples))


def evaluation_sets(folders: dict[str, Path], max_samples: int | None = None,
                    eeg_max_tokens: int = EEG_MAX_TOKENS,
                    text_max_tokens: int = TEXT_MAX_TOKENS,
                    tasks: dict[str, Task] | None = None, text=GPT2_TEXT) -> dict:
    """{task: {split: dataset}} of the evaluated splits of every task's processed folder; the
    tasks by name from `tasks` (a run's; default the built-in ones), their texts in the text
    tokenizer `text` (the evaluated model's, model.text)."""
    def dataset(name, split):
        task = get_task(name, BUILTIN_TASKS if tasks is None else tasks)
        return InstructionDataset(task, folders[name] / split, eeg_max_tokens, text_max_tokens,
                                  text)
    return {name: {split: evenly_spaced(dataset(name, split), max_samples)
                   for split in SPLITS_EVALUATED}
            for name in folders}


def dataset_task(dataset) -> Task:
    """The task of an evaluation set (an InstructionDataset, or a Subset of one)."""
    return (dataset.dataset if isinstance(dataset, Subset) else dataset).task


def evaluate_tasks(model, eval_sets: dict, runtime, batch_size: int = 16,
                   modes: Iterable[str] = EVAL_MODES, max_rows: int | None = None,
                   n_boot: int = N_BOOTSTRAP) -> dict:
    """{task: {split: {mode: analyse_mode metrics, "examples": first generated texts,
    "predictions": evaluate_task's per-sample predictions}}} for every task and split, on
    `runtime`'s device and precision ("predictions" stay out of results.json: `publishable`).
    The global RNG is put back afterwards, so evaluating never changes training."""
    modes = tuple(modes)
    rng = utils.capture_rng_state()
    results = {}
    try:
        for name, splits in eval_sets.items():
            results[name] = {}
            for split, dataset in splits.items():
                task = dataset_task(dataset)
                out = evaluate_task(model, dataset, task, batch_size, runtime.device,
                                    modes=modes, autocast=runtime.autocast, max_rows=max_rows,
                                    progress=runtime.is_main)
                entry = {mode: analyse_mode(out["predictions"], mode, task, n_boot)
                         for mode in modes}
                texts = out["predictions"].get("generated_text")
                if texts:
                    entry["examples"] = texts[:3]
                entry["data"] = data_counts(out["predictions"])
                entry[PREDICTIONS] = out["predictions"]
                results[name][split] = entry
    finally:
        utils.restore_rng_state(rng)
    return results


def data_counts(predictions: dict) -> dict:
    """Samples, recordings and subjects evaluated (None when the sample files do not say)."""
    out = {"samples": len(predictions["label"])}
    for key, name in (("recording", "recordings"), ("subject", "subjects")):
        values = predictions.get(key) or []
        out[name] = len(set(values)) if values and all(values) else None
    return out
