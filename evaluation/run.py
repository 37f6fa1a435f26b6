"""Running an evaluation: answering a batch (option scoring, greedy generation), one task's
evaluation over a dataset, and every task's evaluated splits.

Two modes per task (README "Evaluation"): *generation* decodes greedily after the prompt and
reads the answer with downstream_dataset.parse_answer (an unreadable answer is invalid, never a
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
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

import utils
from downstream_dataset import (
    EEG_MAX_TOKENS,
    TEXT_MAX_TOKENS,
    InstructionDataset,
    Task,
    get_task,
    parse_answer,
    task_tokens,
)
from evaluation.metrics import N_BOOTSTRAP, analyse_mode, get_metrics
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
PREDICTIONS = "predictions"


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
