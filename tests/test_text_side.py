"""The text side follows the model's text tokenizer (model.text): prompts, answers, [SEP], padding
and end ids, option scoring and decoded answers come from a Hugging Face folder's tokenizer when
the model has one, and stay the public GPT-2 ids (literal here) when it has not."""
import argparse
import json

import numpy as np
import pytest
import torch
from test_downstream_support import write_samples
from torch.utils.data import DataLoader

import answering
import downstream_dataset as dd
import utils
from model.text_tokenizer import GPT2_TEXT
from tasks import instruction_text, task_tokens, text_length
from text_dataset_maker import TextCorpus, prepare
from text_dataset_maker.corpus import read_meta
from text_dataset_maker.prepare import prepare_corpus

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """A tiny random Llama with a byte-level BPE of its own (not GPT-2's vocabulary)."""
    from tests.test_backbone_neurolm import save_tiny_lm_with_tokenizer

    folder = tmp_path_factory.mktemp("llama_text")
    save_tiny_lm_with_tokenizer(folder, "llama")
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

def word_level_folder(folder, vocab: dict):
    """A tokenizer folder reading whitespace-separated words of `vocab` ("<eos>": its end)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<eos>",
                                         unk_token="[UNK]").save_pretrained(folder)
    return folder


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
    # what text_max_tokens must hold: every built-in task fits GPT-2's 80, not this tokenizer's
    assert max(text_length(name) for name in dd.TASKS) <= dd.TEXT_MAX_TOKENS
    tokens = task_tokens("TUEV", hf_text)
    assert text_length("TUEV", hf_text) == len(tokens.prompt) + 4 > dd.TEXT_MAX_TOKENS


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


def test_a_tokenizer_merging_across_the_seam_gets_the_answer_alone(tmp_path):
    """A word-level tokenizer reads 'Answer: (A)' as other words than 'Answer: (' + 'A)': the
    answer is tokenised alone (GPT-2 would refuse such a task); training and answering read
    those same ids, and they decode to the answer."""
    import dataclasses

    from model.text_tokenizer import HFTextTokenizer

    words = ["<eos>", "[UNK]", "Answer:", "(", "(A)", "(B)", "A)", "B)"]
    folder = word_level_folder(tmp_path / "words", {w: i for i, w in enumerate(words)})
    text = HFTextTokenizer.from_folder(folder)
    task = dataclasses.replace(dd.TASKS["TUAB"], name="seam", prompt="Answer: (",
                               answers=("A)", "B)"), label_names=("a", "b"))
    tokens = task_tokens(task, text)
    assert text.encode("Answer: (A) ") == [2, 4]                 # merged across the seam
    assert tokens.prompt == (text.sep_id, 2, 3)
    assert tokens.answers == ((6, 0), (7, 0))
    assert [dd.parse_answer(task, text.decode(a)) for a in tokens.answers] == [0, 1]


@pytest.fixture(scope="module")
def hf_lm(small_folder):
    from model.build import neurolm_on_hf
    from tests.test_model_vq import tiny_vq

    return neurolm_on_hf(tiny_vq().VQ, small_folder).eval()


def hf_batch(folder, lm, task, labels, eeg_max_tokens=12):
    write_samples(folder, labels)
    data = dd.InstructionDataset(task, folder, eeg_max_tokens=eeg_max_tokens, text_max_tokens=96,
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


# ---------------------------------------------------------------------------------------------
# The text corpus in the folder's tokenizer

DOCS = ["Question: Is this EEG segment abnormal? Answer: Yes", "the quick brown fox <|eos|> jumps",
        "Which sleep type does this EEG segment belong to?", "Answer: No, the lazy dog"] * 3


def write_docs(folder, docs):
    folder.mkdir()
    for i, doc in enumerate(docs):
        (folder / f"d{i:02d}.txt").write_text(doc, encoding="utf-8")
    return [str(folder)]


def split_documents(ids, eot):
    docs, start = [], 0
    for end in np.flatnonzero(ids == eot):
        docs.append(ids[start:end])
        start = end + 1
    assert start == len(ids)                              # the stream ends with an end token
    return docs


def test_corpus_in_the_folders_tokenizer_reads_back_and_is_checked(small_folder, hf_text,
                                                                  tmp_path, capsys):
    inputs = write_docs(tmp_path / "docs", DOCS)
    meta = prepare_corpus(tmp_path / "out", inputs=inputs, num_proc=2, val_fraction=0.25,
                          text=hf_text)
    assert meta["tokenizer_identity"] == hf_text.identity() and meta["dtype"] == "uint16"
    assert meta["eot_token_id"] == hf_text.eot_id and meta["vocab_size"] == hf_text.n_words
    assert meta["tokenizer"] == str(small_folder)
    decoded = []
    for split in ("train", "val"):
        ids = np.fromfile(tmp_path / "out" / f"{split}.bin", dtype=np.uint16)
        assert len(ids) == meta["tokens"][split] and int(ids.max()) < hf_text.n_words
        docs = split_documents(ids, hf_text.eot_id)
        assert len(docs) == meta["documents"][split]
        decoded += [hf_text.tokenizer.decode(d.tolist()) for d in docs]
    assert sorted(decoded) == sorted(DOCS)          # the literal '<|eos|>' stayed text
    # the same files with one tokenising process
    prepare_corpus(tmp_path / "one", inputs=inputs, num_proc=1, val_fraction=0.25, text=hf_text)
    for split in ("train", "val"):
        assert (tmp_path / "one" / f"{split}.bin").read_bytes() == \
            (tmp_path / "out" / f"{split}.bin").read_bytes()

    args = argparse.Namespace(text_dir=str(tmp_path / "out"), text_block_size=8, seed=0)
    x, y = utils.text_corpus(args, 0, hf_text).get_batch(2)
    assert torch.equal(x[:, 1:], y[:, :-1])
    for text in (None, GPT2_TEXT):          # a GPT-2 model is refused the corpus, in one line
        with pytest.raises(utils.UserError) as err:
            utils.text_corpus(args, 0, text)
        message = str(err.value)
        assert message.startswith("--text_dir") and "\n" not in message
        assert str(small_folder) in message and "prepare.py" in message

    # a rerun into the folder with another tokenizer is refused, the corpus left alone
    before = (tmp_path / "out" / "train.bin").read_bytes()
    capsys.readouterr()
    assert prepare.main(["--out_dir", str(tmp_path / "out"), "--input", *inputs,
                         "--num_proc", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--out_dir" in err and str(small_folder) in err
    assert (tmp_path / "out" / "train.bin").read_bytes() == before
    assert prepare.main(["--out_dir", str(tmp_path / "x"), "--input", *inputs,
                         "--tokenizer", str(tmp_path / "nowhere")]) == 2
    assert "--tokenizer" in capsys.readouterr().err


def big_vocabulary_folder(folder, n_words):
    """A word-level tokenizer of n_words + 2 ids (an id beyond 16 bits per word 'w<i>')."""
    return word_level_folder(folder, {"<eos>": 0, "[UNK]": 1,
                                      **{f"w{i}": i + 2 for i in range(n_words)}})


def test_a_vocabulary_beyond_16_bits_is_stored_in_uint32(tmp_path):
    folder = big_vocabulary_folder(tmp_path / "big", 70_000)
    docs = [" ".join(f"w{(i * 7919 + j * 104729) % 70_000}" for j in range(40))
            for i in range(6)]
    inputs = write_docs(tmp_path / "docs", docs)
    assert prepare.main(["--out_dir", str(tmp_path / "out"), "--input", *inputs,
                         "--num_proc", "1", "--val_fraction", "0.3",
                         "--tokenizer", str(folder)]) == 0
    meta = read_meta(tmp_path / "out")
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_003       # + [SEP]
    ids = np.fromfile(tmp_path / "out" / "train.bin", dtype=np.uint32)
    assert len(ids) == meta["tokens"]["train"] and int(ids.max()) > 65_535
    want = [[int(w[1:]) + 2 for w in d.split()] for d in docs]
    assert all(d.tolist() in want for d in split_documents(ids, 0))
    corpus = TextCorpus(tmp_path / "out" / "train.bin", 16)
    assert corpus.dtype == np.uint32 and len(corpus) == len(ids)
    x, y = corpus.get_batch(3)
    assert int(torch.cat([x, y]).max()) > 65_535                 # read as uint32, not uint16
    assert all(any(np.array_equal(row.numpy(), ids[s:s + 16]) for s in range(len(ids) - 15))
               for row in x)


def test_a_corpus_without_tokenizer_identity_is_gpt2(tmp_path, hf_text):
    """Corpora written before meta.json named its tokenizer (or without meta.json) hold GPT-2
    ids in uint16: a GPT-2 model reads them, another tokenizer's model is refused."""
    np.arange(100, dtype=np.uint16).tofile(tmp_path / "train.bin")
    assert TextCorpus(tmp_path / "train.bin", 8, text=GPT2_TEXT).dtype == np.uint16
    (tmp_path / "meta.json").write_text(json.dumps({"tokenizer": "gpt2", "dtype": "uint16"}))
    args = argparse.Namespace(text_dir=str(tmp_path), text_block_size=8, seed=0)
    assert len(utils.text_corpus(args, 0)) == 100
    with pytest.raises(utils.UserError, match="--text_dir.*tokenised by gpt2"):
        utils.text_corpus(args, 0, hf_text)
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "int8"}))
    with pytest.raises(utils.UserError, match="meta.json: dtype 'int8'"):
        utils.text_corpus(args, 0)


def test_inference_answers_a_hf_neurolm_in_its_tokenizer(hf_lm, tmp_path):
    """simple_inference's path (windows -> answer_windows) builds the prompt in the model's
    ids and gives what the dataset path gives."""
    from dataset import load_sample
    from inference.answers import answer_windows

    batch = hf_batch(tmp_path, hf_lm, "SEED", [0, 1, 2], dd.EEG_MAX_TOKENS)   # as inference
    samples = [load_sample(p) for p in sorted(tmp_path.glob("*.pkl"))]
    asked = answer_windows(hf_lm, dd.TASKS["SEED"], [s["X"] for s in samples],
                           samples[0]["ch_names"], torch.device("cpu"))
    got = answering.answer_batch(hf_lm, batch, "SEED")
    assert asked.texts == got.texts and asked.labels == got.labels
    np.testing.assert_array_equal(asked.probs, got.probabilities().numpy())
