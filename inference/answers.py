"""Windows in, answers out: the model's greedy answer, its label and the (calibrated)
probability of every option, a batch at a time through the one answering path."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

import answering
from dataset import eeg_tokens
from tasks import EEG_MAX_TOKENS, Task, task_tokens
from utils import UserError


@dataclass
class BatchAnswers:
    texts: list[str]
    labels: list[int | None]
    probs: np.ndarray           # (B, n_classes), softmax(log-likelihood / temperature)
    seconds: float              # wall time of the batch
    seconds_seen: list[int]     # whole seconds of each window the model read


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def answer_windows(model, task: Task, windows, ch_names: list[str], device: torch.device,
                   temperature: float | None = None,
                   max_new_tokens: int | None = None) -> BatchAnswers:
    """windows: (B, C, T) microvolts at 200 Hz (or a list of (C, T)), answered together."""
    try:
        eegs = [eeg_tokens(X, ch_names, EEG_MAX_TOKENS) for X in windows]
    except ValueError as err:   # e.g. more channels than EEG tokens
        raise UserError(f"cannot turn the EEG into tokens: {err}") from None
    prompt = task_tokens(task, model.text).prompt
    batch = {k: torch.stack([e[k] for e in eegs]).to(device)
             for k in ("x_eeg", "input_chans", "input_time", "input_mask")}
    n = len(eegs)
    batch["prompt_ids"] = torch.tensor([prompt] * n, dtype=torch.long, device=device)
    batch["prompt_len"] = torch.full((n,), len(prompt), dtype=torch.long, device=device)
    _synchronise(device)
    start = time.perf_counter()
    got = answering.answer_batch(model, batch, task, max_new_tokens)
    probs = got.probabilities(1.0 if temperature is None else float(temperature)).cpu().numpy()
    texts, labels = got.texts, got.labels
    _synchronise(device)
    seen = [int(e["input_mask"].sum()) // len(ch_names) for e in eegs]
    return BatchAnswers(list(texts), list(labels), probs, time.perf_counter() - start, seen)
