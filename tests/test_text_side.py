"""The text side follows the model's text tokenizer (model.text): prompts, answers, [SEP], padding
and end ids, option scoring and decoded answers come from a Hugging Face folder's tokenizer when
the model has one, and stay the public GPT-2 ids (literal here) when it has not."""
import pytest
import torch
from test_downstream_support import write_samples
from torch.utils.data import DataLoader

import answering
import downstream_dataset as dd
from model.text_tokenizer import GPT2_TEXT
from tasks import instruction_text, task_tokens

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """A tiny random Llama with a byte-level BPE of its own (not GPT-2's vocabulary)."""
    from tests.test_backbone import tiny_config
    from tests.test_backbone_neurolm import save_small_tokenizer

    folder = tmp_path_factory.mktemp("llama_text")
    n = save_small_tokenizer(folder)
    torch.manual_seed(0)
    config = tiny_config("llama")
    config.vocab_size = n
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_text(small_folder):
    from model.text_tokenizer import HFTextTokenizer

    return HFTextTokenizer.from_folder(small_folder)


# ---------------------------------------------------------------------------------------------
# GPT-2: the public ids, literally

TUAB_PROMPT = (50257, 24361, 25, 1148, 428, 48749, 10618, 18801, 30, 23998, 25)


def test_gpt2_ids_are_the_public_ones():
    tokens = task_tokens("TUAB")
    assert task_tokens("TUAB", GPT2_TEXT) is tokens
    assert tokens.prompt == TUAB_PROMPT
    assert tokens.answers == ((1400, 220, 50256), (3363, 220, 50256))     # " No <|endoftext|>"
    assert task_tokens("TUEV").answers[0] == (32, 8, 220, 50256)          # "A) <|endoftext|>"
    x_text, y_text, prompt_len = instruction_text("TUAB", 1, 16)
    assert prompt_len == 11
    assert x_text.tolist() == list(TUAB_PROMPT) + [3363, 220, 50256] + [50256] * 2
    assert y_text.tolist() == [-1] * 10 + [3363, 220, 50256] + [-1] * 3


def test_gpt2_dataset_items_keep_their_ids(tmp_path):
    write_samples(tmp_path, [0, 1])
    item = dd.InstructionDataset("TUAB", tmp_path, eeg_max_tokens=12, text_max_tokens=16)[1]
    assert item["prompt_ids"].tolist() == list(TUAB_PROMPT) + [50256] * 5
    assert item["x_text"].tolist() == list(TUAB_PROMPT) + [3363, 220, 50256, 50256, 50256]


# ---------------------------------------------------------------------------------------------
# A Hugging Face folder's tokenizer

def test_task_ids_come_from_the_folders_tokenizer(hf_text):
    assert hf_text.identity() != GPT2_TEXT.identity()
    for name in ("TUAB", "TUEV", "HMC"):
        task = dd.TASKS[name]
        tokens = task_tokens(name, hf_text)
        assert tokens.prompt == (hf_text.sep_id, *hf_text.encode(task.prompt))
        assert tokens.prompt != task_tokens(name).prompt
        for label, answer in enumerate(tokens.answers):
            assert answer[-1] == hf_text.eot_id and hf_text.eot_id not in answer[:-1]
            whole = hf_text.encode(task.prompt + task.answer_text(label))
            assert list(tokens.prompt[1:] + answer[:-1]) == whole
            assert dd.parse_answer(task, hf_text.decode(answer)) == label
    assert task_tokens("TUAB", hf_text) is task_tokens("TUAB", hf_text)     # cached per tokenizer


def test_instruction_text_and_dataset_in_the_folders_tokenizer(hf_text, tmp_path):
    tokens = task_tokens("TUAB", hf_text)
    n_prompt, answer = len(tokens.prompt), tokens.answers[1]
    x_text, y_text, prompt_len = instruction_text("TUAB", 1, 40, text=hf_text)
    n = n_prompt + len(answer)
    assert prompt_len == n_prompt and x_text[0] == hf_text.sep_id
    assert x_text[:n].tolist() == list(tokens.prompt + answer)
    assert (x_text[n:] == hf_text.eot_id).all()                          # padded with its end
    # the logits at the prompt's last position predict the first answer token, ... the end
    assert y_text[n_prompt - 1:n - 1].tolist() == list(answer)
    assert (y_text[:n_prompt - 1] == -1).all() and (y_text[n - 1:] == -1).all()

    write_samples(tmp_path, [0, 1])
    data = dd.InstructionDataset("TUAB", tmp_path, eeg_max_tokens=12, text_max_tokens=40,
                                 text=hf_text)
    item = data[1]
    assert torch.equal(item["x_text"], x_text) and torch.equal(item["y_text"], y_text)
    assert item["prompt_ids"][:n_prompt].tolist() == list(tokens.prompt)
    assert (item["prompt_ids"][n_prompt:] == hf_text.eot_id).all()
    assert int(item["prompt_len"]) == n_prompt
    options, lengths = answering.answer_options(dd.TASKS["TUAB"], "cpu", hf_text)
    width = max(len(a) for a in tokens.answers)
    assert options.tolist() == [list(a) + [hf_text.eot_id] * (width - len(a))
                                for a in tokens.answers]
    assert lengths.tolist() == [len(a) for a in tokens.answers]


@pytest.fixture(scope="module")
def hf_lm(small_folder):
    from model.build import neurolm_on_hf
    from tests.test_model_vq import tiny_vq

    return neurolm_on_hf(tiny_vq().VQ, small_folder).eval()


def hf_batch(folder, lm, task, labels):
    write_samples(folder, labels)
    data = dd.InstructionDataset(task, folder, eeg_max_tokens=12, text_max_tokens=96,
                                 text=lm.text)
    return next(iter(DataLoader(data, batch_size=len(labels))))


@pytest.mark.parametrize("task", ["TUAB", "SEED"])
def test_answers_of_a_hf_neurolm_are_read_with_its_tokenizer(hf_lm, tmp_path, task):
    """Greedy answers are the model's own generation cut at its end id and decoded with its
    tokenizer; options are scored in its ids (each option's score is its tokens' log-softmax
    from one full forward)."""
    batch = hf_batch(tmp_path, hf_lm, task, [0, 1, 1])
    got = answering.answer_batch(hf_lm, batch, task)
    tokens = task_tokens(task, hf_lm.text)
    n = len(tokens.prompt)
    args = (batch["x_eeg"], batch["prompt_ids"][:, :n], batch["input_chans"],
            batch["input_time"], batch["input_mask"])
    rows = hf_lm.generate(*args, max_new_tokens=tokens.max_answer_len)[:, n:].tolist()
    eot = hf_lm.text.eot_id
    assert got.texts == [hf_lm.text.decode(r[:r.index(eot)] if eot in r else r) for r in rows]
    assert got.labels == [dd.parse_answer(task, t) for t in got.texts]
    for option, ids in enumerate(tokens.answers):
        with torch.no_grad():
            text = torch.cat((args[1], torch.tensor(ids).expand(3, -1)), dim=1)
            logp = hf_lm.text_logits(args[0], text, *args[2:], last_n=len(ids) + 1)
        logp = logp[:, :-1].float().log_softmax(-1)
        want = logp.gather(-1, torch.tensor(ids).expand(3, -1)[..., None]).sum((1, 2))
        torch.testing.assert_close(got.log_likelihoods[:, option], want, atol=1e-4, rtol=0)


def test_a_planted_answer_in_the_folders_ids_is_read_as_its_label(hf_lm, tmp_path,
                                                                    monkeypatch):
    """Answer ids of the folder's tokenizer decode (with it) to the answer; read with GPT-2
    they would be other text."""
    batch = hf_batch(tmp_path, hf_lm, "HMC", [0, 3])
    answers = task_tokens("HMC", hf_lm.text).answers
    width = max(len(a) for a in answers) + 2
    planted = [list(answers[3]), list(answers[1])]
    planted = torch.tensor([a + [hf_lm.text.eot_id] * (width - len(a)) for a in planted])
    monkeypatch.setattr(hf_lm, "decode", lambda prefix, n: planted)
    got = answering.answer_batch(hf_lm, batch, "HMC")
    assert got.labels == [3, 1]
    assert [t.strip() for t in got.texts] == ["D)", "B)"]
    assert dd.parse_answer("HMC", GPT2_TEXT.decode(planted[0][:len(answers[3]) - 1])) != 3
