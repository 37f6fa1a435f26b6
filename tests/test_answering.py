"""answering.answer_batch, the one answering path, with a tiny real NeuroLM: option
log-likelihoods against the full forward, greedy answers against NeuroLM.generate, and
training-time evaluation and simple_inference.py giving identical answers through it."""
import pytest
import torch
from test_downstream_support import write_samples
from torch.utils.data import DataLoader

import answering
import downstream_dataset as dd
import evaluation as ev
from dataset import load_sample
from inference.answers import answer_windows
from model.model import GPTConfig, KVCache
from model.model_neural_transformer import NTConfig
from model.model_neurolm import NeuroLM

EEG_TOKENS = 12


def random_lm(n_embd: int = 16, encoder_embd: int = 16) -> NeuroLM:
    """A tiny NeuroLM whose random weights are large enough that answers and scores vary with
    the EEG."""
    torch.manual_seed(0)
    model = NeuroLM(GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=n_embd),
                    NTConfig(n_layer=1, n_head=2, n_embd=encoder_embd, out_chans=4),
                    n_eeg_codes=8)
    with torch.no_grad():
        for p in model.GPT2.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def lm():
    return random_lm()


def _batch(folder, task, labels, seconds=2, eeg_tokens=EEG_TOKENS):
    paths = write_samples(folder, labels, seconds=seconds)
    dataset = dd.InstructionDataset(task, folder, eeg_max_tokens=eeg_tokens)
    return paths, dataset, next(iter(DataLoader(dataset, batch_size=len(labels))))


@pytest.mark.parametrize("task", ["TUAB", "TUSL"])
def test_option_log_likelihoods_equal_the_full_forward(tmp_path, lm, task):
    """Each option's score is its answer tokens' log-softmax (text vocabulary) read from one
    full forward of EEG + prompt + that option: the cached scorer reads what training reads."""
    _, _, batch = _batch(tmp_path, task, [0, 1, 1])
    answers = answering.answer_batch(lm, batch, task)
    tokens = dd.task_tokens(task)
    prompt = list(tokens.prompt)
    assert answers.log_likelihoods.shape == (3, dd.TASKS[task].n_classes)
    for b in range(3):
        for option, ids in enumerate(tokens.answers):
            with torch.no_grad():
                _, _, logits = lm(x_eeg=batch["x_eeg"][b:b + 1],
                                  x_text=torch.tensor([prompt + list(ids)]),
                                  input_chans=batch["input_chans"][b:b + 1],
                                  input_time=batch["input_time"][b:b + 1],
                                  input_mask=batch["input_mask"][b:b + 1])
            read = logits[0, EEG_TOKENS + len(prompt) - 1:, :50257].float()
            expected = sum(float(torch.log_softmax(read[j], -1)[tok]) for j, tok in enumerate(ids))
            assert float(answers.log_likelihoods[b, option]) == pytest.approx(expected, abs=1e-4)
    torch.testing.assert_close(answers.probabilities().sum(-1), torch.ones(3))


def test_scoring_in_chunks_and_greedy_answers_equal_generate(tmp_path, lm):
    _, _, batch = _batch(tmp_path, "HMC", [4, 1, 0])
    whole = answering.answer_batch(lm, batch, "HMC")
    chunked = answering.answer_batch(lm, batch, "HMC", max_rows=4)   # 15 rows in forwards of 4
    torch.testing.assert_close(whole.log_likelihoods, chunked.log_likelihoods)
    assert whole.texts == chunked.texts
    scoring_only = answering.answer_batch(lm, batch, "HMC", max_new_tokens=0)
    assert scoring_only.texts == [""] * 3 and scoring_only.labels == [None] * 3
    torch.testing.assert_close(scoring_only.log_likelihoods, whole.log_likelihoods)
    # scoring first leaves the prefix as it was: decoding after it is NeuroLM.generate
    n = len(dd.task_tokens("HMC").prompt)
    out = lm.generate(batch["x_eeg"], batch["prompt_ids"][:, :n], batch["input_chans"],
                      batch["input_time"], batch["input_mask"],
                      max_new_tokens=dd.task_tokens("HMC").max_answer_len)
    for text, row in zip(whole.texts, out[:, n:].tolist()):
        row = row[:row.index(50256)] if 50256 in row else row
        assert text == lm.text.decode(row)
    assert whole.labels == [dd.parse_answer("HMC", t) for t in whole.texts]


def test_cache_rows_copies_and_leaves_the_cache_alone():
    cache = KVCache(1, capacity=6)
    k = torch.randn(2, 1, 3, 4)
    cache.append(0, k, k + 1)
    copy = cache.rows(torch.tensor([1, 1, 0]))
    assert torch.equal(copy.keys[0], k[[1, 1, 0]]) and torch.equal(copy.values[0], k[[1, 1, 0]] + 1)
    copy.append(0, torch.zeros(3, 1, 2, 4), torch.zeros(3, 1, 2, 4))
    assert copy.length == 5 and cache.length == 3 and torch.equal(cache.keys[0], k)


def test_a_batch_of_several_tasks_is_refused(tmp_path, lm):
    _, _, batch = _batch(tmp_path, "TUAB", [0, 1])
    batch["prompt_len"] = torch.tensor([14, 60])
    with pytest.raises(ValueError, match="one task"):
        answering.answer_batch(lm, batch, "TUAB")


@pytest.mark.parametrize("task", ["Workload", "TUEV"])
def test_evaluation_and_inference_answer_identically_through_one_function(tmp_path, lm,
                                                                          monkeypatch, task):
    """Training-time evaluation (evaluate_task over sample files) and simple_inference.py (the
    same windows as segments) reach answering.answer_batch and give the same texts, labels and
    probabilities, bit for bit."""
    n_classes = dd.TASKS[task].n_classes
    paths = write_samples(tmp_path, [i % n_classes for i in range(5)], seconds=3)
    calls = []
    real = answering.answer_batch

    def counted(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)
    monkeypatch.setattr(answering, "answer_batch", counted)

    dataset = dd.InstructionDataset(task, tmp_path)
    evaluated = ev.evaluate_task(lm, dataset, task, batch_size=5, device="cpu", progress=False)
    assert len(calls) == 1
    samples = [load_sample(p) for p in paths]
    asked = answer_windows(lm, dd.TASKS[task], [s["X"] for s in samples],
                           samples[0]["ch_names"], torch.device("cpu"))
    assert len(calls) == 2

    pred = evaluated["predictions"]
    assert asked.texts == pred["generated_text"]
    assert asked.labels == pred["generation"]
    assert asked.probs.tolist() == pred["probs"]
    assert len(set(map(tuple, pred["probs"]))) > 1     # the answers do depend on the EEG
