"""Helpers of the downstream tests (no tests here): sample files and planted-logit stand-in
models with NeuroLM's answering interface."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model.text_tokenizer import GPT2_TEXT

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
    """NeuroLM's answering interface (prefill -> continuation_log_likelihoods, decode) over
    planted logits, random but fixed per (position, token); the answer tokens of the sample's
    planted label (x_eeg[:, 0, 0]) get +`bonus` at the positions that predict them. decode()
    emits the planted answer, or `garbage_ids` for rows in `garbage_rows`. `calls` counts
    prefills. Its text side is GPT-2's (`text`, as a native NeuroLM's)."""

    text = GPT2_TEXT

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

    def logits(self, labels, n_eeg, width):
        """(B, n_eeg + width, vocab) planted logits of samples with these planted labels."""
        gen = torch.Generator().manual_seed(self.seed)
        base = torch.randn(n_eeg + width, self.vocab, generator=gen)
        out = base.unsqueeze(0).repeat(len(labels), 1, 1)
        for row, label in enumerate(labels):
            for j, tok in enumerate(self.answers[label]):
                out[row, n_eeg + self.prompt_len - 1 + j, tok] += self.bonus
        return out.to(self.anchor.device)

    def prefill(self, x_eeg, x_text, input_chans, input_time, input_mask, eeg_text_mask=None,
                room=0, use_cache=True):
        self.calls += 1
        return {"labels": self.planted(x_eeg), "n_eeg": x_eeg.shape[1], "width": x_text.size(1)}

    def continuation_log_likelihoods(self, prefix, continuations, lengths, max_rows=None):
        n_eeg, start = prefix["n_eeg"], prefix["n_eeg"] + prefix["width"] - 1
        width = prefix["width"] + continuations.shape[1]
        logp = torch.log_softmax(self.logits(prefix["labels"], n_eeg, width), dim=-1)
        scores = torch.zeros(len(prefix["labels"]), len(continuations))
        for k, (ids, n) in enumerate(zip(continuations.tolist(), lengths.tolist())):
            for j, tok in enumerate(ids[:n]):
                scores[:, k] += logp[:, start + j, tok].cpu()
        return scores.to(self.anchor.device)

    def decode(self, prefix, max_new_tokens, temperature=1.0, top_k=None, do_sample=False):
        rows = []
        for row, label in enumerate(prefix["labels"]):
            new = self.garbage_ids if row in self.garbage_rows else self.answers[label]
            rows.append((list(new) + [50256] * max_new_tokens)[:max_new_tokens])
        return torch.tensor(rows, device=self.anchor.device)
