"""Stage 4 evaluation: option scoring, greedy generation, metrics, every task's evaluation, and
what a training run keeps of it (results.json, best.pt, the validation plot, the printed table).

Two modes per task (README "Evaluation"): *generation* decodes greedily after the prompt and
reads the answer with downstream_dataset.parse_answer (an unreadable answer is invalid, never a
class); *scoring* compares the log-likelihoods of every answer option, which gives class
probabilities and so AUROC / AUC-PR for binary tasks. Batches must hold one task's samples.
"""
from __future__ import annotations

import contextlib
import json
import math
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn import metrics as skm
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

import report
import utils
from downstream_dataset import (
    EEG_MAX_TOKENS,
    TASKS,
    TEXT_MAX_TOKENS,
    InstructionDataset,
    Task,
    get_task,
    parse_answer,
    task_tokens,
)
from model.gpt2_bpe import EOT_TOKEN_ID, GPT2_VOCAB_SIZE, decode
from model.model import (
    KVCache,
    build_attention_mask,
)

# ----------------------------------------------------------------------------- the model

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


# ----------------------------------------------------------------------------- metrics

INVALID = -1   # a generated answer that matches no option; never a class


@torch.no_grad()
def shared_prefix_answers(model, batch: dict, task: Task, max_new_tokens: int | None = None):
    """What evaluation.generate_answers and evaluation.option_log_likelihoods give -> (texts,
    labels, (B, n_options) log-likelihoods), from one forward of EEG + prompt: greedy decoding
    and every answer option continue its key/value cache instead of recomputing the EEG
    (simple_inference.py --edf uses it; tests/test_simple_inference.py checks the two agree)."""
    tokens = task_tokens(task)
    max_new_tokens = max_new_tokens or tokens.max_answer_len
    prompt = batch["prompt_ids"][:, :len(tokens.prompt)]
    n, m = prompt.shape
    gpt, device = model.GPT2, prompt.device
    features = model.encode_eeg(batch["x_eeg"], batch["input_chans"], batch["input_time"],
                                batch["input_mask"])
    x, positions, valid = gpt.embed_sequence(features, prompt, batch["input_time"],
                                             batch["input_mask"], model.per_sample_text_positions)
    cache = KVCache(gpt.config.n_layer)
    head = gpt.lm_head.weight[:GPT2_VOCAB_SIZE]
    last = gpt.run(x, build_attention_mask(positions, valid), cache, last_n=1)[:, -1]  # (B, C)
    first = F.log_softmax(F.linear(last, head).float(), dim=-1)                 # (B, V)

    # every option after the prompt: its first token from `first`, the rest in one block over
    # a copy of the cache per option
    n_opt, width = task.n_classes, tokens.max_answer_len
    options = torch.full((n_opt, width), EOT_TOKEN_ID, dtype=torch.long, device=device)
    real = torch.zeros(n_opt, width, dtype=torch.bool, device=device)
    for label, ids in enumerate(tokens.answers):
        options[label, :len(ids)] = torch.tensor(ids, device=device)
        real[label, :len(ids)] = True
    scores = first[:, options[:, 0]]                                             # (B, O)
    if width > 1:
        rows = options.repeat(n, 1)                                              # (B*O, W)
        copy = KVCache(gpt.config.n_layer)
        copy.keys = [k.repeat_interleave(n_opt, dim=0) for k in cache.keys]
        copy.values = [v.repeat_interleave(n_opt, dim=0) for v in cache.values]
        pos = positions.repeat_interleave(n_opt, dim=0)
        new_pos = pos[:, -1:] + torch.arange(1, width, device=device)            # (B*O, W-1)
        all_pos = torch.cat((pos, new_pos), dim=1)
        all_valid = torch.cat((valid.repeat_interleave(n_opt, dim=0),
                               torch.ones_like(new_pos, dtype=torch.bool)), dim=1)
        h = gpt.run(gpt.embed_text(rows[:, :-1], new_pos),
                    build_attention_mask(all_pos, all_valid, new_pos), copy)
        logp = F.log_softmax(F.linear(h, head).float(), dim=-1)                  # (B*O, W-1, V)
        rest = logp.gather(-1, rows[:, 1:, None]).squeeze(-1) * real[:, 1:].repeat(n, 1)
        scores = scores + rest.sum(dim=-1).view(n, n_opt)

    # greedy decoding on the shared cache
    out, finished = [], torch.zeros(n, dtype=torch.bool, device=device)
    nxt = first.argmax(dim=-1)
    for step in range(max_new_tokens):
        nxt = nxt.masked_fill(finished, EOT_TOKEN_ID)
        out.append(nxt)
        finished |= nxt == EOT_TOKEN_ID
        if finished.all() or step == max_new_tokens - 1:
            break
        new_pos = positions[:, -1:] + 1
        positions = torch.cat((positions, new_pos), dim=1)
        valid = torch.cat((valid, torch.ones(n, 1, dtype=torch.bool, device=device)), dim=1)
        h = gpt.run(gpt.embed_text(nxt[:, None], new_pos),
                    build_attention_mask(positions, valid, new_pos), cache)
        nxt = F.linear(h[:, -1], head).float().argmax(dim=-1)
    texts = []
    for row in torch.stack(out, dim=1).tolist():
        texts.append(decode(row[:row.index(EOT_TOKEN_ID)] if EOT_TOKEN_ID in row else row))
    return texts, [parse_answer(task, t) for t in texts], scores


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


# ----------------------------------------------------------------------------- publishable metrics

LEVELS = ("window", "recording", "subject")
N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
BOOTSTRAP_SEED = 0


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """(K, K + 1) counts: rows true class, columns predicted class, the last column invalid
    answers (generation mode)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    cols = np.asarray([n_classes if p is None or p == INVALID else int(p) for p in y_pred],
                      dtype=np.int64)
    out = np.zeros((n_classes, n_classes + 1), dtype=np.int64)
    np.add.at(out, (y_true, cols), 1)
    return out


def confusion_metrics(counts: np.ndarray) -> dict[str, np.ndarray]:
    """get_metrics' confusion-based metrics from (..., K, K + 1) confusion matrices, vectorised
    over the leading axes (the bootstrap's resamples): balanced_accuracy (mean recall over the
    classes present), accuracy, cohen_kappa, f1_weighted (over the classes present)."""
    counts = np.asarray(counts, dtype=np.float64)
    k = counts.shape[-1] - 1
    rows = counts.sum(-1)
    n = rows.sum(-1)
    diag = np.diagonal(counts[..., :k], axis1=-2, axis2=-1)
    cols = counts[..., :k].sum(-2)
    present = rows > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(present, diag / np.where(present, rows, 1), 0.0)
        precision = np.where(cols > 0, diag / np.where(cols > 0, cols, 1), 0.0)
        f1 = np.where(precision + recall > 0,
                      2 * precision * recall / np.where(precision + recall > 0,
                                                        precision + recall, 1), 0.0)
        accuracy = diag.sum(-1) / n
        expected = (rows * cols).sum(-1) / n ** 2
        kappa = np.where(expected < 1, (accuracy - expected) / (1 - expected), np.nan)
        return {"balanced_accuracy": (recall * present).sum(-1) / present.sum(-1),
                "accuracy": accuracy, "cohen_kappa": kappa,
                "f1_weighted": (f1 * rows).sum(-1) / n}


def aggregate(labels, predicted, probs, groups, n_classes: int):
    """Window predictions -> one prediction per group (recording or subject): the mean of the
    windows' class probabilities (scoring, `probs` given), else the majority of the valid
    answers (generation; a tie goes to the lower label, no valid answer is invalid).

    Returns (group names, labels, predictions, probs or None), or None when a group's windows
    carry different labels or a window has no group (the sample file does not say)."""
    groups = list(groups)
    if not groups or any(g in ("", None) for g in groups):
        return None
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    members: list[list[int]] = [[] for _ in names]
    for i, g in enumerate(groups):
        members[index[g]].append(i)
    labels = np.asarray(labels)
    if any(len(set(labels[m].tolist())) > 1 for m in members):
        return None
    y = [int(labels[m[0]]) for m in members]
    if probs is not None:
        probs = np.asarray(probs, dtype=np.float64)
        mean = np.stack([probs[m].mean(axis=0) for m in members])
        return names, y, mean.argmax(axis=1).tolist(), mean
    votes = []
    for m in members:
        valid = [int(predicted[i]) for i in m if predicted[i] is not None
                 and predicted[i] != INVALID]
        counts = np.bincount(valid, minlength=n_classes) if valid else None
        votes.append(INVALID if counts is None else int(counts.argmax()))
    return names, y, votes, None


def weighted_aucs(y_true, score, weights) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and average precision (sklearn's roc_auc_score / average_precision_score with
    sample_weight) for every row of `weights` (R, n) at once; NaN where a class weighs 0."""
    y = np.asarray(y_true) == 1
    score = np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="stable")              # descending: thresholds
    ranked = score[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])   # groups of tied scores
    w = np.asarray(weights, dtype=np.float64)[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)     # (R, distinct scores)
    neg = np.add.reduceat(w * ~y[order], starts, axis=1)
    total_pos, total_neg = pos.sum(1), neg.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # a positive beats the negatives of lower scores, and half of those tied with it
        neg_below = total_neg[:, None] - np.cumsum(neg, axis=1)
        roc = (pos * (neg_below + 0.5 * neg)).sum(1) / (total_pos * total_neg)
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        pr = (pos / total_pos[:, None] * precision).sum(1)
    defined = (total_pos > 0) & (total_neg > 0)
    return np.where(defined, roc, np.nan), np.where(defined, pr, np.nan)


def bootstrap_intervals(y_true, y_pred, probs, units, task: Task | str,
                        n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                        level: float = CI_LEVEL) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of the task's metrics and the invalid rate, resampling
    whole `units` (subjects) with replacement: windows of one subject are not independent.
    {metric: [low, high]}; NaN bounds when no resample defines the metric."""
    task = get_task(task)
    y_true = np.asarray(y_true, dtype=np.int64)
    names, unit_of = np.unique(np.asarray([str(u) for u in units]), return_inverse=True)
    n_units, k = len(names), task.n_classes
    per_unit = np.zeros((n_units, k, k + 1), dtype=np.int64)
    pred_col = np.asarray([k if p is None or p == INVALID else int(p) for p in y_pred])
    np.add.at(per_unit, (unit_of, y_true, pred_col), 1)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_units, size=(n_boot, n_units))
    weights = np.bincount((draws + n_units * np.arange(n_boot)[:, None]).ravel(),
                          minlength=n_boot * n_units).reshape(n_boot, n_units)
    resampled = np.einsum("bs,skl->bkl", weights, per_unit)
    values = confusion_metrics(resampled)
    values["invalid_rate"] = resampled[..., k].sum(-1) / resampled.sum((-2, -1))
    if task.is_binary and probs is not None:
        positive = np.asarray(probs, dtype=np.float64)
        positive = positive[:, 1] if positive.ndim == 2 else positive
        chunk = max(1, 2_000_000 // max(1, len(y_true)))       # bounds the (boots, n) arrays
        parts = [weighted_aucs(y_true, positive, weights[lo:lo + chunk, unit_of])
                 for lo in range(0, n_boot, chunk)]
        values.update(roc_auc=np.concatenate([p[0] for p in parts]),
                      pr_auc=np.concatenate([p[1] for p in parts]))
    tail = 100 * (1 - level) / 2
    out = {}
    for name in (*task.metrics, "invalid_rate"):
        v = values.get(name)
        v = v[np.isfinite(v)] if v is not None else np.empty(0)
        out[name] = ([float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))]
                     if v.size else [math.nan, math.nan])
    return out


def analyse_mode(predictions: dict, mode: str, task: Task | str,
                 n_boot: int = N_BOOTSTRAP) -> dict:
    """One mode's publishable metrics from evaluate_task's predictions: the window-level
    get_metrics plus `ci` (bootstrap over subjects), `n_subjects`, `ci_unit`, `confusion`; and
    `recording` / `subject` levels (windows aggregated, see `aggregate`; None with a note when
    the sample files do not say or a recording holds several labels), each with its own `ci`."""
    task = get_task(task)
    labels, predicted = predictions["label"], predictions[mode]
    probs = np.asarray(predictions["probs"]) if mode == "scoring" else None
    subjects = predictions.get("subject") or [""] * len(labels)
    known = all(subjects)
    units = subjects if known else [str(i) for i in range(len(labels))]
    out = get_metrics(labels, predicted, probs, task)
    if not labels:
        return out
    out["ci"] = bootstrap_intervals(labels, predicted, probs, units, task, n_boot)
    out["ci_unit"] = "subject" if known else "window"
    out["n_subjects"] = len(set(subjects)) if known else None
    out["confusion"] = {"classes": list(task.label_names),
                        "predicted": [*task.label_names, "invalid"],
                        "counts": confusion_matrix(labels, predicted, task.n_classes).tolist()}
    subject_of = dict(zip(predictions.get("recording") or [], subjects))
    for level in LEVELS[1:]:
        grouped = aggregate(labels, predicted, probs, predictions.get(level) or [],
                            task.n_classes)
        if grouped is None:
            out[level] = None
            out["notes"].append(f"no {level}-level metrics: the sample files do not name "
                                f"the {level}, or one {level} holds several labels")
            continue
        names, y, pred, level_probs = grouped
        metrics = get_metrics(y, pred, level_probs, task)
        level_units = (names if level == "subject" or not known
                       else [subject_of[r] for r in names])
        metrics["ci"] = bootstrap_intervals(y, pred, level_probs, level_units, task, n_boot)
        metrics["n_subjects"] = len(set(level_units))
        out[level] = metrics
    return out


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

    generation: greedy cached decoding + parse_answer (invalid answers counted, never mapped to a
    class); scoring: option_log_likelihoods -> softmax probabilities -> argmax. ``predictions``
    holds per sample: label, where it comes from (ORIGIN_KEYS: file, recording, subject, window,
    onset_s), and per mode the predicted label (None = invalid), generated text, option
    probabilities. ``autocast`` is a context factory such as utils.Runtime.autocast.
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
    origin: dict[str, list] = {key: [] for key in ORIGIN_KEYS}
    try:
        for batch in tqdm(loader, desc=f"eval {task.name}", disable=not progress, leave=False):
            n_batch = len(batch["label"])
            for key, missing in ORIGIN_KEYS.items():
                value = batch.get(key, [missing] * n_batch)
                origin[key] += value.tolist() if torch.is_tensor(value) else list(value)
            batch = utils.to_device(batch, device)
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
    result["predictions"] = predictions
    return result


# ----------------------------------------------------------------------------- every task

SPLITS_EVALUATED = ("val", "test")
SELECTION = ("val", "scoring", "balanced_accuracy")   # what the validation plot shows
SELECTION_RULE = ("the tasks and both modes (generation and scoring), among checkpoints whose "
                  "generation answers are mostly valid; ties go to the later checkpoint")
MAX_INVALID_RATE = 0.5     # more invalid generation answers than this on a task: never best.pt
PREDICTIONS = "predictions"
RESULTS_NAME = "results.json"
BEST_NAME = "best.pt"
VAL_PLOT_NAME = "val_balanced_accuracy.png"


def evenly_spaced(dataset, max_samples: int | None):
    """At most max_samples items spread over the whole (sorted) file list, so a capped
    evaluation still sees every recording's part of the split."""
    if max_samples is None or len(dataset) <= max_samples:
        return dataset
    return Subset(dataset, utils.spread_indices(len(dataset), max_samples))


def evaluation_sets(folders: dict[str, Path], max_samples: int | None = None,
                    eeg_max_tokens: int = EEG_MAX_TOKENS,
                    text_max_tokens: int = TEXT_MAX_TOKENS) -> dict:
    """{task: {split: dataset}} of the evaluated splits of every task's processed folder."""
    return {name: {split: evenly_spaced(InstructionDataset(name, folder / split, eeg_max_tokens,
                                                           text_max_tokens), max_samples)
                   for split in SPLITS_EVALUATED}
            for name, folder in folders.items()}


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
                out = evaluate_task(model, dataset, name, batch_size, runtime.device,
                                    modes=modes, autocast=runtime.autocast, max_rows=max_rows,
                                    progress=runtime.is_main)
                entry = {mode: analyse_mode(out["predictions"], mode, name, n_boot)
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


def publishable(results: dict) -> dict:
    """results without the per-sample predictions (those go to the predictions CSVs)."""
    return {name: {split: {k: v for k, v in entry.items() if k != PREDICTIONS}
                   for split, entry in splits.items()}
            for name, splits in results.items()}


def mean_val_balanced_accuracy(results: dict, modes: Iterable[str] = ("scoring",)) -> float:
    """Mean over the tasks and `modes` of the validation balanced accuracy; NaN when none."""
    values = [r["val"][mode]["balanced_accuracy"] for r in results.values()
              for mode in modes if mode in r.get("val", {})]
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def selection_score(results: dict) -> float:
    """What picks best.pt: the mean validation balanced accuracy over the tasks and both
    evaluation modes (those evaluated), so a model that scores options well but cannot answer
    is not best; see `selection` for the invalid-answer rule."""
    return mean_val_balanced_accuracy(results, EVAL_MODES)


def worst_invalid_rate(results: dict) -> tuple[float, str | None]:
    """(highest validation invalid-answer rate of generation over the tasks, its task)."""
    rates = [(r["val"]["generation"]["invalid_rate"], name) for name, r in results.items()
             if "generation" in r.get("val", {})
             and math.isfinite(r["val"]["generation"]["invalid_rate"])]
    return max(rates) if rates else (0.0, None)


def selection(results: dict) -> dict:
    """{"score", "eligible", "invalid_rate", "invalid_task"} of one evaluation. An evaluation
    whose generation answers are mostly invalid (rate above MAX_INVALID_RATE on any task) is
    not eligible: eligible evaluations always beat ineligible ones, then the higher score, and a
    tie goes to the later evaluation."""
    rate, task = worst_invalid_rate(results)
    score = selection_score(results)
    return {"score": score, "eligible": bool(math.isfinite(score) and rate <= MAX_INVALID_RATE),
            "invalid_rate": rate, "invalid_task": task}


def selection_reason(chosen: dict, evaluations: list[dict]) -> str:
    """One line saying why `chosen` (an evaluation record) is best.pt."""
    sel = chosen["selection"]
    line = (f"best.pt = step {chosen['iter_num']} (epoch {chosen['epoch']}): mean validation "
            f"balanced accuracy {sel['score']:.3f} over {SELECTION_RULE}")
    if sel["invalid_task"] is not None:
        line += (f"; highest invalid-answer rate {sel['invalid_rate']:.2f} "
                 f"({sel['invalid_task']})")
    if not sel["eligible"]:
        line += f", above {MAX_INVALID_RATE:g} on every evaluation so far: none was eligible"
    others = [e for e in evaluations if e is not chosen and "selection" in e]
    excluded = [e for e in others if not e["selection"]["eligible"]
                and e["selection"]["score"] >= sel["score"] and sel["eligible"]]
    if excluded:
        line += ("; not chosen despite a score as high: step(s) "
                 + ", ".join(str(e["iter_num"]) for e in excluded)
                 + f" (invalid answers above {MAX_INVALID_RATE:g})")
    ties = [e for e in others if e["selection"]["score"] == sel["score"]
            and e["selection"]["eligible"] == sel["eligible"]]
    if ties:
        line += "; tied with step(s) " + ", ".join(str(e["iter_num"]) for e in ties) + \
                ", the later wins"
    return line


def summary_metrics(results: dict) -> dict:
    """Scalars for metrics.jsonl: the selection score and each task's validation value."""
    split, mode, metric = SELECTION
    out = {"val_mean_balanced_accuracy": mean_val_balanced_accuracy(results),
           "val_selection_score": selection_score(results)}
    for name, r in results.items():
        if mode in r.get(split, {}):
            out[f"val_{name}_balanced_accuracy"] = r[split][mode][metric]
    return out


def format_table(results: dict) -> str:
    """One row per task, split and mode: balanced accuracy, the task's other metrics, invalid
    rate."""
    lines = [f"{'task':<9} {'split':<5} {'mode':<10} {'n':>5} {'bal_acc':>8}  other metrics"]
    for name, splits in results.items():
        task = TASKS[name]
        for split, modes in splits.items():
            for mode, m in modes.items():
                if mode not in EVAL_MODES:
                    continue
                others = " ".join(f"{k} {m[k]:.3f}" for k in task.metrics
                                  if k != "balanced_accuracy" and m.get(k) is not None
                                  and math.isfinite(m[k]))
                if mode == "generation":
                    others += f" invalid {m['invalid_rate']:.3f}"
                lines.append(f"{name:<9} {split:<5} {mode:<10} {m['n']:>5} "
                             f"{m['balanced_accuracy']:>8.3f}  {others}")
    return "\n".join(lines)


def plot_validation(evaluations: list[dict], png: Path) -> None:
    """Validation balanced accuracy (scoring) per task against the epoch of the evaluation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split, mode, metric = SELECTION
    fig, ax = plt.subplots(figsize=(7, 4))
    names = sorted({n for e in evaluations for n in e["results"]})
    for name in names:
        points = [(e["epoch"] + 1, e["results"][name][split][mode][metric]) for e in evaluations
                  if name in e["results"] and mode in e["results"][name].get(split, {})]
        points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
        if points:
            ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split} {metric} ({mode})")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if names:
        ax.legend()
    fig.tight_layout()
    utils.save_figure(fig, png)


# ----------------------------------------------------------------------------- a run's record

class ResultsBook:
    """results.json of a training run: every evaluation, and the best one (which is best.pt)."""

    def __init__(self, out_dir: Path, tasks: list[str], resumed_at: int | None,
                 config: dict | None = None):
        self.path = Path(out_dir) / RESULTS_NAME
        self.data = {"tasks": list(tasks), "selection": SELECTION_RULE, "config": config,
                     "evaluations": [], "best": None}
        if resumed_at is not None and self.path.is_file():
            # the evaluations up to the resumed step happened in this run's history
            old = json.loads(self.path.read_text(encoding="utf-8"))
            self.data["evaluations"] = [e for e in old.get("evaluations", [])
                                        if e["iter_num"] <= resumed_at]
            best = old.get("best")
            if best and best["iter_num"] <= resumed_at:
                self.data["best"] = best

    def evaluated_at(self, iter_num: int) -> bool:
        return any(e["iter_num"] == iter_num for e in self.data["evaluations"])

    def add(self, epoch: int, iter_num: int, results: dict) -> bool:
        """Record an evaluation (per-sample predictions left out); True when it is the new best
        (`selection`: eligible first, then the score; a tie goes to this later evaluation)."""
        sel = selection(results)
        record = {"epoch": epoch, "iter_num": iter_num,
                  "mean_val_balanced_accuracy": mean_val_balanced_accuracy(results),
                  "selection": sel, "results": publishable(results)}
        self.data["evaluations"].append(record)
        best = self.data["best"]
        improved = math.isfinite(sel["score"]) and (
            best is None or best.get("eligible") is None
            or (sel["eligible"], sel["score"]) >= (best["eligible"], best["score"]))
        if improved:
            best = {"epoch": epoch, "iter_num": iter_num, "score": sel["score"],
                    "eligible": sel["eligible"], "checkpoint": BEST_NAME}
        if best is not None:
            chosen = next(e for e in reversed(self.data["evaluations"])
                          if e["iter_num"] == best["iter_num"])
            best["reason"] = selection_reason(chosen, self.data["evaluations"])
        self.data["best"] = best
        utils.write_json(self.path, self.data)
        return improved


def write_results(out_dir: Path, tasks: list[str], checkpoint, iter_num: int | None,
                  results: dict, config: dict | None = None) -> Path:
    """results.json of one evaluation of a checkpoint file (train_instruction.py --eval_only),
    with its predictions CSVs, confusion matrices and report.md beside it."""
    path = Path(out_dir) / RESULTS_NAME
    data = {"tasks": list(tasks), "selection": SELECTION_RULE, "config": config,
            "checkpoint": str(checkpoint),
            "evaluations": [{"epoch": None, "iter_num": iter_num,
                             "mean_val_balanced_accuracy": mean_val_balanced_accuracy(results),
                             "selection": selection(results),
                             "results": publishable(results)}]}
    utils.write_json(path, data)
    report.write_predictions(results, out_dir)
    report.plot_confusions(data["evaluations"][0]["results"], out_dir)
    report.write_report(out_dir, data)
    return path


class TrainingEvaluation:
    """`Stage.validate` of instruction tuning. After every `every_epochs` epochs and at the end of
    training, rank 0 evaluates the unwrapped model on `eval_sets`, records the evaluation in
    results.json, prints the table, redraws the validation plot and, on a new best, writes
    best.pt: the very checkpoint state fit saves next. The other ranks wait at a barrier.
    Returns summary_metrics for metrics.jsonl ({} on other ranks and skipped epochs)."""

    def __init__(self, model, eval_sets: dict, runtime, out_dir, tasks: list[str],
                 every_epochs: int = 1, batch_size: int = 16,
                 modes: Iterable[str] = EVAL_MODES, max_rows: int | None = None,
                 config: dict | None = None):
        self.model, self.eval_sets, self.runtime = model, eval_sets, runtime
        self.out_dir, self.tasks = Path(out_dir), list(tasks)
        self.config = config
        self.every_epochs, self.batch_size = every_epochs, batch_size
        self.modes, self.max_rows = tuple(modes), max_rows
        self.book: ResultsBook | None = None     # opened at the first call: needs resumed_from

    def __call__(self, at: utils.Progress) -> dict:
        if (at.epoch + 1) % self.every_epochs and not at.is_last:
            return {}       # the same decision on every rank: no barrier needed
        summary = {}
        if self.runtime.is_main:
            if self.book is None:
                self.book = ResultsBook(self.out_dir, self.tasks, at.resumed_from,
                                        self.config)
            if not self.book.evaluated_at(at.iter_num):    # a resumed, already evaluated end
                summary = self.evaluate(at)
        self.runtime.barrier()
        return summary

    def evaluate(self, at: utils.Progress) -> dict:
        results = evaluate_tasks(utils.unwrap(self.model), self.eval_sets, self.runtime,
                                 self.batch_size, self.modes, self.max_rows)
        improved = self.book.add(at.epoch, at.iter_num, results)
        self.runtime.print(f"evaluation after epoch {at.epoch} (step {at.iter_num}):\n"
                           + format_table(results) + "\n" + self.book.data["best"]["reason"])
        plot_validation(self.book.data["evaluations"], self.out_dir / VAL_PLOT_NAME)
        if improved:
            utils.atomic_torch_save(at.state(), self.out_dir / BEST_NAME)
            # the published files are those of best.pt
            report.write_predictions(results, self.out_dir)
            report.plot_confusions(self.book.data["evaluations"][-1]["results"], self.out_dir)
        report.write_report(self.out_dir, self.book.data)
        return summary_metrics(results)


# ----------------------------------------------------------------------------- command line

def run_evaluation(run) -> tuple[dict, dict]:
    """(results.json record, the evaluation it stands for: best.pt's, else the last) of a run
    folder or a results.json path."""
    path = Path(run)
    path = path / RESULTS_NAME if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no {RESULTS_NAME} (a train_instruction.py --out_dir)")
    record = json.loads(path.read_text(encoding="utf-8"))
    evaluations = record.get("evaluations") or []
    if not evaluations:
        raise ValueError(f"{path}: holds no evaluation")
    best = record.get("best")
    chosen = next((e for e in evaluations if best and e["iter_num"] == best["iter_num"]),
                  evaluations[-1])
    return record, chosen


def compare_runs(runs: list, split: str = "test") -> str:
    """One table of every task's `split` metrics (window level, both modes) across runs (e.g.
    seeds): mean ± sample std, and the number of runs that have it."""
    evaluations = [run_evaluation(run)[1]["results"] for run in runs]
    names = list(dict.fromkeys(n for e in evaluations for n in e))
    lines = [f"{len(runs)} runs, {split} split, best.pt of each (else its last evaluation); "
             "mean ± std over runs",
             f"{'task':<9} {'mode':<10} {'runs':>4}  metrics"]
    for name in names:
        metrics = ("balanced_accuracy", *[m for m in TASKS[name].metrics
                                          if m != "balanced_accuracy"])
        for mode in EVAL_MODES:
            found = [e[name][split][mode] for e in evaluations
                     if name in e and mode in e[name].get(split, {})]
            if not found:
                continue
            cells = []
            for metric in (*metrics, "invalid_rate") if mode == "generation" else metrics:
                values = np.array([m.get(metric, math.nan) for m in found], dtype=np.float64)
                values = values[np.isfinite(values)]
                if values.size:
                    std = values.std(ddof=1) if values.size > 1 else 0.0
                    cells.append(f"{metric} {values.mean():.3f} ± {std:.3f}")
            lines.append(f"{name:<9} {mode:<10} {len(found):>4}  " + "  ".join(cells))
    return "\n".join(lines)


def model_card(config: dict, run_dir: Path) -> str:
    """README.md of an exported model: what it is, and the test metrics of its run's report."""
    from model.checkpoints import ITER_NUM_KEY
    lines = [f"# NeuroLM {config['kind']} weights", "",
             f"Exported from `{config['source']}` (step {config['checkpoint'].get(ITER_NUM_KEY)})."
             " Load with `model.load_neurolm(FOLDER)` / `model.load_vq(FOLDER)` or "
             "`simple_inference.py --model_path FOLDER`.", ""]
    if (run_dir / RESULTS_NAME).is_file():
        record, chosen = run_evaluation(run_dir)
        header, rows = report.metrics_rows(chosen["results"], splits=("test",))
        rows = [r for r in rows if r[3] == "window"]
        data = [f"{t} {s}: {e.get('data', {}).get('samples')} samples, "
                f"{e.get('data', {}).get('subjects') or '?'} subjects"
                for t, splits in chosen["results"].items() for s, e in splits.items()]
        lines += [f"Tasks: {', '.join(chosen['results'])}.", "",
                  "Data evaluated: " + "; ".join(data) + ".", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                  *("| " + " | ".join(r) + " |" for r in rows), "",
                  f"From `{run_dir / report.REPORT_NAME}` (full report: confusion matrices, "
                  "recording and subject levels, training curves)."]
    return "\n".join(lines) + "\n"


def export(checkpoint, out_dir, tokenizer_path=None) -> Path:
    """model.safetensors + config.json (+ README.md, a model card from the checkpoint's run
    folder) in out_dir: the weights alone, which load_neurolm / load_vq read directly."""
    from safetensors.torch import save_file

    from model.checkpoints import EXPORT_CONFIG, EXPORT_WEIGHTS, exported_state
    tensors, config = exported_state(checkpoint, tokenizer_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    utils.atomic_write(out_dir / EXPORT_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
    utils.write_json(out_dir / EXPORT_CONFIG, config)
    card = model_card(config, Path(checkpoint).parent)
    utils.atomic_write(out_dir / "README.md", lambda tmp: tmp.write_text(card, encoding="utf-8"))
    return out_dir


def main(argv=None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m evaluation", description=(
        "compare: one table of test metrics across runs (mean ± std, e.g. over seeds); "
        "export: a checkpoint's weights as model.safetensors + config.json + a model card"))
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="python -m evaluation compare RUN_A RUN_B ...")
    cmp.add_argument("runs", nargs="+", help="train_instruction.py --out_dir folders "
                                             "(or their results.json)")
    cmp.add_argument("--split", default="test", choices=SPLITS_EVALUATED)
    exp = sub.add_parser("export", help="python -m evaluation export CKPT OUT_DIR")
    exp.add_argument("checkpoint", help="a NeuroLM (best.pt, last.pt) or VQ checkpoint")
    exp.add_argument("out_dir", help="folder for model.safetensors, config.json, README.md")
    exp.add_argument("--tokenizer_path", default=None,
                     help="the VQ checkpoint, when the LM checkpoint lacks the encoder")
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            print(compare_runs(args.runs, args.split))
        else:
            out = export(args.checkpoint, args.out_dir, args.tokenizer_path)
            size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
            print(f"exported {args.checkpoint} -> {out} ({size:.1f} MB)")
    except (FileNotFoundError, ValueError) as err:      # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
