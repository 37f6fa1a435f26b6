"""A task's texts: the token ids of its prompt and answers, the instruction text of a labelled
sample, and the parser of generated answers. A task is a Task, or a built-in task's name.

A task sample becomes one sequence (spec section 5):

    EEG tokens (padded to 276) | [SEP] prompt answer <end> (padded with <end> to 80)

The ids come from the model's text tokenizer (`model.text`: model.text_tokenizer.GPT2_TEXT, the
paper's, whose <end> is <|endoftext|> 50256 and [SEP] 50257, or a Hugging Face folder's), passed
as `text=`; the default is GPT-2.

Target convention (the usual shifted-by-one LM target, as model/model_neurolm.py scores it: the
logits at text position k predict text token k + 1): ``y_text[k] = x_text[k + 1]`` when text token
k + 1 is an answer token or the end token, and -1 everywhere else.
"""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass

import torch

from model.text_tokenizer import GPT2_TEXT
from tasks.builtin import get_task
from tasks.task import END_TEXT, TEXT_MAX_TOKENS, Task


def check_answers(task: Task) -> None:
    """The texts of a task: they tokenise as the public training texts do and every answer is
    read back as its own class; ValueError otherwise."""
    task_tokens(task)
    if any(parse_answer(task, task.answers[label]) != label for label in range(task.n_classes)):
        raise ValueError("two answers are read as the same class; make them distinct")


# ---------------------------------------------------------------------------------------------
# Token ids of prompts and answers, the instruction text

@dataclass(frozen=True)
class TaskTokens:
    prompt: tuple[int, ...]              # [SEP] + prompt
    answers: tuple[tuple[int, ...], ...]  # per label: answer tokens + end token

    @property
    def max_answer_len(self) -> int:
        return max(len(a) for a in self.answers)


# per text tokenizer (weak: a model's tokenizer goes with the model), per task
_TOKEN_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def task_tokens(task: Task | str, text=GPT2_TEXT) -> TaskTokens:
    """Prompt and answer ids in the text tokenizer `text`. The answer's ids are those that follow
    the prompt's in the ids of the whole text (prompt, answer, one space), so that a model reads
    at training and answering exactly what the tokenizer makes of the whole text; then the end
    token. For GPT-2 the prompt's ids must begin the whole text's (else ValueError), which makes
    them the public training text's ids; another tokenizer merging across the prompt/answer seam
    gets the answer tokenised alone."""
    task = get_task(task)
    per_task = _TOKEN_CACHE.setdefault(text, {})
    if task not in per_task:
        per_task[task] = _tokenise(task, text)
    return per_task[task]


def _tokenise(task: Task, text) -> TaskTokens:
    prompt = tuple(text.encode(task.prompt))
    answers = []
    for label in range(task.n_classes):
        whole = tuple(text.encode(task.prompt + task.answer_text(label)))
        if whole[:len(prompt)] == prompt:
            answer = whole[len(prompt):]
        elif text == GPT2_TEXT:
            raise ValueError(f"task {task.name}: answer {task.answers[label]!r} does not "
                             "tokenise as a continuation of the prompt")
        else:
            answer = tuple(text.encode(task.answer_text(label)))
        answers.append(answer + (text.eot_id,))
    return TaskTokens((text.sep_id,) + prompt, tuple(answers))


def text_length(task: Task | str, text=GPT2_TEXT) -> int:
    """Text tokens of the task's longest instruction text ([SEP], prompt, answer, end) in the
    text tokenizer `text`: the least text_max_tokens that holds it. Every built-in task fits
    GPT-2's TEXT_MAX_TOKENS; another tokenizer may need more."""
    tokens = task_tokens(task, text)
    return len(tokens.prompt) + tokens.max_answer_len


def instruction_text(task: Task | str, label: int, text_max_tokens: int = TEXT_MAX_TOKENS,
                     text=GPT2_TEXT):
    """(x_text, y_text, prompt_len) long tensors of one labelled instruction text, in the text
    tokenizer `text`.

    x_text = [SEP] prompt answer <end>, padded with <end>; y_text[k] is the target of the logits
    at text position k: x_text[k + 1] for answer and end tokens, -1 otherwise.
    """
    task = get_task(task)
    tokens = task_tokens(task, text)
    ids = tokens.prompt + tokens.answers[label]
    if len(ids) > text_max_tokens:
        raise ValueError(f"task {task.name}: instruction text has {len(ids)} tokens, more than "
                         f"text_max_tokens={text_max_tokens}")
    x_text = torch.full((text_max_tokens,), text.eot_id, dtype=torch.long)
    x_text[:len(ids)] = torch.tensor(ids, dtype=torch.long)
    y_text = torch.full((text_max_tokens,), -1, dtype=torch.long)
    start = len(tokens.prompt)
    y_text[start - 1:len(ids) - 1] = x_text[start:len(ids)]
    return x_text, y_text, len(tokens.prompt)


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
