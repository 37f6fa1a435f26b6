import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model.gpt2_bpe import EOT_TOKEN_ID, GPT2_VOCAB_SIZE, decode
from text_dataset_maker import TextCorpus, prepare
from text_dataset_maker.prepare import CorpusSourceError, prepare_corpus
from utils import draw_text_batch

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "text_dataset_maker" / "prepare.py"
EOT = "<|endoftext|>"

# Runs prepare.py with every network connect refused, so "works offline" is checked, not
# assumed (local Unix sockets stay: `datasets` talks to its worker processes through them).
_OFFLINE_RUNNER = """
import runpy, socket, sys
def refuse(*args, **kwargs):
    raise OSError("network disabled by the test")
connect = socket.socket.connect
def connect_locally(self, address):
    if self.family != socket.AF_UNIX:
        refuse()
    return connect(self, address)
socket.socket.connect = connect_locally
socket.create_connection = refuse
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_prepare_offline(*args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, "-c", _OFFLINE_RUNNER, str(SCRIPT), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def read_ids(path):
    return np.fromfile(path, dtype=np.uint16)


def decoded_documents(path):
    text = decode(read_ids(path))
    assert text.endswith(EOT)
    return text.split(EOT)[:-1]


@pytest.fixture
def local_corpus(tmp_path):
    """Three .txt documents (one nested), a .jsonl and a .json file; returns (inputs, docs)."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    txt_docs = ["First file.\nIt has two lines.\n", "Zweite Datei: Grüße, naïve café ☕.",
                "  leading spaces and a trailing newline\n\n"]
    for name, doc in zip(["a.txt", "b.txt", "sub/c.txt"], txt_docs):
        (root / name).write_text(doc, encoding="utf-8")
    (root / "notes.md").write_text("not a corpus file")
    jsonl_docs = [f"JSON line document number {i}, with some words." for i in range(5)]
    jsonl = tmp_path / "records.jsonl"
    jsonl.write_text("\n".join(json.dumps({"id": i, "text": t}) for i, t in enumerate(jsonl_docs))
                     + "\n\n", encoding="utf-8")
    json_docs = ["A JSON array record.", "Another one, with \"quotes\"."]
    json_file = tmp_path / "array.json"
    json_file.write_text(json.dumps([{"text": t} for t in json_docs]), encoding="utf-8")
    # Folders are read in sorted path order, then each argument in the order given.
    docs = txt_docs + jsonl_docs + json_docs
    return [str(root), str(jsonl), str(json_file)], docs


def test_local_corpus_decodes_to_its_documents_each_ended_by_eot(local_corpus, tmp_path):
    inputs, docs = local_corpus
    meta = prepare_corpus(tmp_path / "out", inputs=inputs, num_proc=1, val_fraction=0.3, seed=3)
    out = tmp_path / "out"

    train_docs, val_docs = decoded_documents(out / "train.bin"), decoded_documents(out / "val.bin")
    assert sorted(train_docs + val_docs) == sorted(docs)         # nothing lost, nothing added
    assert not set(train_docs) & set(val_docs)                   # disjoint by document
    assert train_docs == [d for d in docs if d not in val_docs]  # original order kept
    assert len(val_docs) == round(0.3 * len(docs))

    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta
    for split, split_docs in (("train", train_docs), ("val", val_docs)):
        ids = read_ids(out / f"{split}.bin")
        assert meta["documents"][split] == len(split_docs) == int((ids == EOT_TOKEN_ID).sum())
        assert meta["tokens"][split] == len(ids)
        assert ids[-1] == EOT_TOKEN_ID
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == GPT2_VOCAB_SIZE
    assert meta["tokenizer"] == "gpt2" and meta["source"].startswith("local")
    assert not list(out.glob(".*tmp*"))                          # temp files renamed away


def test_parallel_tokenising_and_seed_give_the_same_files(local_corpus, tmp_path):
    inputs, _ = local_corpus
    prepare_corpus(tmp_path / "one", inputs=inputs, num_proc=1, val_fraction=0.3, seed=5)
    prepare_corpus(tmp_path / "two", inputs=inputs, num_proc=2, val_fraction=0.3, seed=5)
    prepare_corpus(tmp_path / "other", inputs=inputs, num_proc=1, val_fraction=0.3, seed=6)
    for split in ("train", "val"):
        assert np.array_equal(read_ids(tmp_path / "one" / f"{split}.bin"),
                              read_ids(tmp_path / "two" / f"{split}.bin"))
    assert not np.array_equal(read_ids(tmp_path / "one" / "val.bin"),
                              read_ids(tmp_path / "other" / "val.bin"))


def test_literal_end_token_in_a_document_stays_text(tmp_path):
    (tmp_path / "a.txt").write_text("talking about <|endoftext|> in prose")
    (tmp_path / "b.txt").write_text("second")
    meta = prepare_corpus(tmp_path / "out", inputs=[str(tmp_path / "*.txt")], num_proc=1)
    ids = np.concatenate([read_ids(tmp_path / "out" / f"{s}.bin") for s in ("train", "val")])
    assert (ids == EOT_TOKEN_ID).sum() == meta["documents"]["train"] + meta["documents"]["val"] == 2


def test_blank_documents_are_skipped_and_counted(tmp_path):
    for name, text in {"a.txt": "alpha", "b.txt": " \n\n", "c.txt": "gamma"}.items():
        (tmp_path / name).write_text(text)
    meta = prepare_corpus(tmp_path / "out", inputs=[str(tmp_path)], num_proc=1)
    assert meta["skipped_empty_documents"] == 1
    assert meta["documents"] == {"train": 1, "val": 1}


def test_cli_reads_recursive_globs(tmp_path, capsys):
    for i in range(4):
        path = tmp_path / "deep" / f"d{i}" / f"doc{i}.txt"
        path.parent.mkdir(parents=True)
        path.write_text(f"Document {i} speaks of EEG and language.")
    argv = ["--out_dir", str(tmp_path / "out"), "--input", str(tmp_path / "deep" / "**" / "*.txt"),
            "--num_proc", "1"]
    assert prepare.main(argv) == 0
    assert "train: 3 documents" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["documents"] == {"train": 3, "val": 1}


def test_missing_input_names_the_path(tmp_path, capsys):
    missing = tmp_path / "nowhere.txt"
    with pytest.raises(FileNotFoundError, match="nowhere.txt"):
        prepare_corpus(tmp_path / "out", inputs=[str(missing)], num_proc=1)
    with pytest.raises(FileNotFoundError, match="matches no"):
        prepare_corpus(tmp_path / "out", inputs=[str(tmp_path / "*.jsonl")], num_proc=1)
    assert prepare.main(["--out_dir", str(tmp_path / "out"), "--input", str(missing)]) == 2
    assert "nowhere.txt" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_records_say_where(tmp_path):
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "no text"}) + "\n")
    with pytest.raises(CorpusSourceError, match=r"bad.jsonl:2: .*'text'.*--text_field"):
        prepare_corpus(tmp_path / "out", inputs=[str(jsonl)], num_proc=1)
    (tmp_path / "one.txt").write_text("only one document")
    with pytest.raises(CorpusSourceError, match="at least 2"):
        prepare_corpus(tmp_path / "out", inputs=[str(tmp_path / "one.txt")], num_proc=1)
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(CorpusSourceError, match="unsupported file type"):
        prepare_corpus(tmp_path / "out", inputs=[str(tmp_path / "x.csv")], num_proc=1)


def test_json_lines_under_a_json_name_and_text_field(tmp_path):
    path = tmp_path / "export.json"
    path.write_text("\n".join(json.dumps({"content": f"doc {i}"}) for i in range(3)))
    prepare_corpus(tmp_path / "out", inputs=[str(path)], text_field="content", num_proc=1)
    docs = (decoded_documents(tmp_path / "out" / "train.bin")
            + decoded_documents(tmp_path / "out" / "val.bin"))
    assert sorted(docs) == ["doc 0", "doc 1", "doc 2"]


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path):
    if prepare.importlib.util.find_spec("pyarrow") is not None:
        pytest.skip("pyarrow is installed, so the missing-pyarrow error cannot happen")
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(CorpusSourceError, match="pyarrow"):
        prepare_corpus(tmp_path / "out", inputs=[str(path)], num_proc=1)


def test_dataset_without_datasets_package_points_to_input(tmp_path, capsys):
    if prepare._datasets_importable():
        pytest.skip("the `datasets` package is installed here")
    start = time.monotonic()
    assert prepare.main(["--out_dir", str(tmp_path / "out"), "--dataset"]) == 2
    assert time.monotonic() - start < 5
    err = capsys.readouterr().err
    assert "hub is not available" in err and "`datasets`" in err and "openwebtext" in err
    assert "--input" in err


def test_unreachable_hub_says_so_and_shows_input_form(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "_datasets_importable", lambda: True)
    monkeypatch.setattr(prepare, "hub_reachable", lambda timeout=3.0: False)

    def no_cache(name, num_proc):
        raise ConnectionError("offline and not cached")

    monkeypatch.setattr(prepare, "_load_hf_dataset", no_cache)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    with pytest.raises(CorpusSourceError) as err:
        prepare_corpus(tmp_path / "out", dataset="openwebtext", num_proc=1)
    message = str(err.value)
    assert "did not answer" in message and "not in the local cache" in message
    assert "--input" in message and "openwebtext" in message


def test_hub_probe_never_hangs():
    start = time.monotonic()
    assert prepare.hub_reachable(timeout=0.5) in (True, False)
    assert time.monotonic() - start < 2.0


@pytest.fixture(scope="module")
def default_corpus(tmp_path_factory):
    """The no-argument run, with the network refused."""
    out = tmp_path_factory.mktemp("default_text")
    start = time.monotonic()
    result = run_prepare_offline("--out_dir", out)
    return out, result, time.monotonic() - start


def test_no_arguments_and_no_network_give_a_usable_corpus(default_corpus):
    out, result, seconds = default_corpus
    assert result.returncode == 0, result.stderr
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"].startswith(prepare.BUILTIN_DATASET)
    assert meta["tokens"]["train"] > 300_000 and meta["tokens"]["val"] > 1025
    assert meta["documents"]["val"] >= 1
    for split in ("train", "val"):
        assert (out / f"{split}.bin").stat().st_size == 2 * meta["tokens"][split]
    x, y = TextCorpus(out / "val.bin", block_size=1024).get_batch(2, "cpu")
    assert x.shape == (2, 1024)
    assert "python" in decode(x[0]).lower() or "the" in decode(x[0]).lower()
    assert seconds < 120


def write_ids(path, ids):
    np.asarray(ids, dtype=np.uint16).tofile(path)
    return path


def test_reader_windows_are_shifted_by_one(tmp_path):
    ids = np.arange(5000) % GPT2_VOCAB_SIZE
    corpus = TextCorpus(write_ids(tmp_path / "train.bin", ids), block_size=64, seed=0)
    x, y = corpus.get_batch(8, "cpu")
    assert x.shape == y.shape == (8, 64)
    assert x.dtype == y.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(y, x + 1)                      # consecutive ids: each window is contiguous
    assert int(x.max()) < GPT2_VOCAB_SIZE and int(y.max()) < GPT2_VOCAB_SIZE
    assert len(corpus) == 5000


def test_reader_covers_the_whole_file_with_exact_fit(tmp_path):
    ids = np.arange(11)
    corpus = TextCorpus(write_ids(tmp_path / "t.bin", ids), block_size=10)
    x, y = corpus.get_batch(4, "cpu")
    assert torch.equal(x, torch.arange(10).expand(4, 10))
    assert torch.equal(y, torch.arange(1, 11).expand(4, 10))


def test_reader_on_real_corpus_ids_below_vocab(local_corpus, tmp_path):
    inputs, _ = local_corpus
    prepare_corpus(tmp_path / "out", inputs=inputs, num_proc=1)
    x, y = TextCorpus(tmp_path / "out" / "train.bin", block_size=16).get_batch(
        4, torch.device("cpu"))
    assert int(torch.cat([x, y]).max()) < GPT2_VOCAB_SIZE
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_reader_stream_is_seeded_resumable_and_per_rank(tmp_path):
    path = write_ids(tmp_path / "train.bin", np.arange(20000) % 1000)
    a, b = TextCorpus(path, 8, seed=1), TextCorpus(path, 8, seed=1)
    assert torch.equal(a.get_batch(4)[0], b.get_batch(4)[0])
    assert not torch.equal(TextCorpus(path, 8, seed=1, rank=1).get_batch(4)[0],
                           TextCorpus(path, 8, seed=1).get_batch(4)[0])
    assert not torch.equal(TextCorpus(path, 8, seed=2).get_batch(4)[0],
                           TextCorpus(path, 8, seed=1).get_batch(4)[0])

    # Resuming: the trainers reseed the stream per step, so a fresh reader at step 3 draws what
    # the running one drew there, without saved state; another rank draws other windows.
    running = [draw_text_batch(a, 4, "cpu", step)[0] for step in range(4)]
    resumed = TextCorpus(path, 8, seed=1)
    assert torch.equal(draw_text_batch(resumed, 4, "cpu", 3)[0], running[3])
    assert not torch.equal(draw_text_batch(resumed, 4, "cpu", 2)[0], running[3])
    other_rank = TextCorpus(path, 8, seed=1, rank=1)
    assert not torch.equal(draw_text_batch(other_rank, 4, "cpu", 3)[0], running[3])


def test_reader_missing_file_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        TextCorpus(tmp_path / "text" / "train.bin", block_size=8)
    message = str(err.value)
    assert str(tmp_path / "text" / "train.bin") in message
    assert f"python text_dataset_maker/prepare.py --out_dir {tmp_path / 'text'}" in message


def test_reader_rejects_a_file_shorter_than_one_window(tmp_path):
    path = write_ids(tmp_path / "val.bin", np.arange(10))
    with pytest.raises(ValueError, match=r"val.bin holds 10 tokens.*block_size \+ 1 = 11"):
        TextCorpus(path, block_size=10)
    TextCorpus(path, block_size=9)  # exactly one window fits


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_reader_batches_land_on_cuda(tmp_path):
    corpus = TextCorpus(write_ids(tmp_path / "t.bin", np.arange(100)), block_size=8)
    x, y = corpus.get_batch(2, "cuda")
    assert x.is_cuda and y.is_cuda and torch.equal(x[:, 1:], y[:, :-1])


@pytest.mark.parametrize("flag, value", [("--num_proc", "0"), ("--num_proc", "-2"),
                                         ("--num_proc", "nan"), ("--max_documents", "0"),
                                         ("--seed", "-1"), ("--val_fraction", "inf"),
                                         ("--val_fraction", "0")])
def test_out_of_range_numbers_are_refused_naming_the_flag(tmp_path, capsys, flag, value):
    """--num_proc 0 used to become 1 silently; every number is checked at the door."""
    with pytest.raises(SystemExit) as exit_:
        prepare.main(["--out_dir", str(tmp_path / "out"), flag, value])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert flag in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
