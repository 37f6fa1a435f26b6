"""The one way a NeuroLM answers a task's prompt: training-time evaluation, --eval_only and
simple_inference.py all call `answer_batch`.

EEG + prompt are read once (NeuroLM.prefill, one key/value cache); every answer option is scored
from that cache (its log-likelihood, which gives class probabilities), and greedy decoding
continues it (the generated text, read by downstream_dataset.parse_answer: an unreadable answer
is invalid, None, never a class). Batches must hold one task's samples.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from downstream_dataset import Task, get_task, parse_answer, task_tokens
from model.text_tokenizer import GPT2_TEXT


@dataclass
class Answers:
    """A batch's answers: greedy `texts`, their parsed `labels` (None: matches no option), and
    `log_likelihoods` (B, n_options) of every option (answer tokens + end token)."""
    texts: list[str]
    labels: list[int | None]
    log_likelihoods: torch.Tensor

    def probabilities(self, temperature: float = 1.0) -> torch.Tensor:
        """(B, n_options) softmax(log_likelihoods / temperature); temperature from calibration
        (1: as scored)."""
        return torch.softmax(self.log_likelihoods.float() / temperature, dim=-1)


def shared_prompt_len(batch: dict, task: Task) -> int:
    """The prompt length of every sample of the batch; ValueError when they differ (samples of
    several tasks)."""
    lengths = batch["prompt_len"]
    prompt_len = int(lengths[0])
    if bool((lengths != prompt_len).any()):
        raise ValueError(f"task {task.name}: a batch for evaluation must hold one task's samples "
                         f"(prompt lengths {sorted(set(lengths.tolist()))})")
    return prompt_len


def answer_options(task: Task, device, text=GPT2_TEXT) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_options, W) ids of every answer option in the text tokenizer `text`, end-token padded
    to the longest, and their (n_options,) lengths."""
    answers = task_tokens(task, text).answers
    width = max(len(a) for a in answers)
    ids = torch.full((len(answers), width), text.eot_id, dtype=torch.long, device=device)
    for label, answer in enumerate(answers):
        ids[label, :len(answer)] = torch.tensor(answer, device=device)
    return ids, torch.tensor([len(a) for a in answers], device=device)


@torch.no_grad()
def answer_batch(model, batch: dict, task: Task | str, max_new_tokens: int | None = None,
                 max_rows: int | None = None) -> Answers:
    """Answer a batch of one task (downstream_dataset.InstructionDataset items, or the same keys
    built by simple_inference.py: x_eeg, input_chans, input_time, input_mask, prompt_ids,
    prompt_len), its ids in the model's text tokenizer (model.text). max_new_tokens: greedy
    tokens (default: the longest option; 0: scoring only, empty texts); max_rows: at most this
    many (sample, option) rows per scoring forward (NeuroLM.continuation_log_likelihoods)."""
    task, text = get_task(task), model.text
    if max_new_tokens is None:
        max_new_tokens = task_tokens(task, text).max_answer_len
    prompt = batch["prompt_ids"][:, :shared_prompt_len(batch, task)]
    prefix = model.prefill(batch["x_eeg"], prompt, batch["input_chans"], batch["input_time"],
                           batch["input_mask"], room=max_new_tokens)
    options, lengths = answer_options(task, prompt.device, text)
    scores = model.continuation_log_likelihoods(prefix, options, lengths, max_rows)
    texts = []
    for row in model.decode(prefix, max_new_tokens).tolist():   # after scoring: grows the cache
        texts.append(text.decode(row[:row.index(text.eot_id)] if text.eot_id in row else row))
    return Answers(texts, [parse_answer(task, t) for t in texts], scores)
