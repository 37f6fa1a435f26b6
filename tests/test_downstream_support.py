"""Helpers of the downstream tests (no tests here): sample files and planted-logit stand-in
models with NeuroLM's call signature."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

CHANNELS = ["FP1", "FP2", "CZ"]


def write_samples(folder: Path, labels, seconds: int = 2, channels=CHANNELS, seed: int = 0):
    """One pickle per label, {"X", "ch_names", "y"}; X[0, 0] encodes the label so a stand-in
    model can plant an answer per sample. Returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, y in enumerate(labels):
        X = rng.normal(0, 10, (len(channels), 200 * seconds)).astype(np.float32)
        X[0, 0] = 100.0 * y          # x_eeg = X / 100, so x_eeg[0, 0] == y
        path = folder / f"s{i:03d}.pkl"
        with open(path, "wb") as f:
            pickle.dump({"X": X, "ch_names": list(channels), "y": int(y)}, f)
        paths.append(path)
    return paths


class PlantedModel(nn.Module):
    """Same call signature as NeuroLM: forward -> (loss, log, logits over every position) and
    generate -> prompt + new ids. Logits are random but fixed per (position, token); the answer
    tokens of the sample's planted label (x_eeg[:, 0, 0]) get +`bonus` at the positions that
    predict them. generate() emits the planted answer, or `garbage_ids` for rows in
    `garbage_rows`."""

    def __init__(self, answers, prompt_len, vocab=50257, bonus=8.0, seed=0, garbage_rows=(),
                 garbage_ids=(1234, 5678)):
        super().__init__()
        self.answers = [list(a) for a in answers]
        self.prompt_len = prompt_len
        self.vocab = vocab
        self.bonus = bonus
        self.seed = seed
        self.garbage_rows = set(garbage_rows)
        self.garbage_ids = list(garbage_ids)
        self.anchor = nn.Parameter(torch.zeros(1))   # gives the module a device
        self.calls = 0

    def planted(self, x_eeg):
        return x_eeg[:, 0, 0].round().long().tolist()

    def forward(self, x_eeg=None, y_eeg=None, x_text=None, y_text=None, input_chans=None,
                input_time=None, input_mask=None, eeg_mask=None, eeg_text_mask=None):
        self.calls += 1
        n_rows, n_eeg = x_eeg.shape[:2]
        width = x_text.size(1)
        gen = torch.Generator().manual_seed(self.seed)
        base = torch.randn(n_eeg + width, self.vocab, generator=gen)
        logits = base.unsqueeze(0).repeat(n_rows, 1, 1)
        for row, label in enumerate(self.planted(x_eeg)):
            for j, tok in enumerate(self.answers[label]):
                logits[row, n_eeg + self.prompt_len - 1 + j, tok] += self.bonus
        return None, {}, logits.to(self.anchor.device)

    def text_logits(self, x_eeg=None, x_text=None, input_chans=None, input_time=None,
                    input_mask=None, last_n=1):
        _, _, logits = self(x_eeg=x_eeg, x_text=x_text)
        return logits[:, -last_n:, :50257]

    def generate(self, x_eeg, x_text, input_chans, input_time, input_mask, eeg_mask=None,
                 eeg_text_mask=None, max_new_tokens=10, temperature=1.0, top_k=None):
        rows = []
        for row, label in enumerate(self.planted(x_eeg)):
            new = self.garbage_ids if row in self.garbage_rows else self.answers[label]
            new = (list(new) + [50256] * max_new_tokens)[:max_new_tokens]
            rows.append(new)
        return torch.cat([x_text, torch.tensor(rows, device=x_text.device)], dim=1)
