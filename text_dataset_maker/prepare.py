"""A text corpus -> train.bin / val.bin of token ids, for the text batches every stage mixes in.

    python text_dataset_maker/prepare.py --out_dir data/text                  # offline default
    python text_dataset_maker/prepare.py --out_dir data/text --input 'books/**/*.txt' web.jsonl
    python text_dataset_maker/prepare.py --out_dir data/text --dataset openwebtext   # needs the hub
    python text_dataset_maker/prepare.py --out_dir data/text_qwen --tokenizer models/Qwen3-0.6B

Each file is one flat stream of token ids with the end token after every document: GPT-2's BPE
(uint16, <|endoftext|>) by default, or with --tokenizer the tokenizer of a local Hugging Face
model folder (the --init_from folder of the runs that read it; uint32 when its vocabulary
outgrows 16 bits). The train/val split is by whole documents. meta.json records the source, the
counts and the tokenizer (its identity, which the trainers check against the model's). The corpus
goes through Hugging Face `datasets` (Arrow on disk, memory-mapped: sources.py streams local
files into it, pipeline.py tokenises it with --num_proc processes), so memory stays bounded
however large the corpus; the Arrow files live in a temporary folder under --out_dir.
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)
except ModuleNotFoundError:
    sys.exit("error: not set up: run `bash scripts/setup_env.sh`, then `source .venv/bin/activate`")
# isort: split

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import socket
import threading
import urllib.parse

from model.text_tokenizer import GPT2_TEXT, HFTextTokenizer
from text_dataset_maker import pipeline, sources
from text_dataset_maker.corpus import describe_tokenizer, read_meta
from text_dataset_maker.sources import CorpusSourceError, expand_inputs
from utils import number

BUILTIN_DATASET = "python-docs"       # the offline default: Python's own documentation text
DEFAULT_HF_DATASET = "openwebtext"    # what NeuroLM (and nanoGPT) train the text side on
DEFAULT_VAL_FRACTION = 0.02       # ~14 documents / ~10k tokens of the offline corpus
MIN_USEFUL_TOKENS = 1025           # one GPT-2 window (block_size 1024 + 1 target)
SPLITS = pipeline.SPLITS
HUB_PROBE_TIMEOUT_S = 3.0
INPUT_FORM = ("python text_dataset_maker/prepare.py --out_dir DIR --input 'my_corpus/**/*.txt' "
              "docs.jsonl  (.txt: one document per file; .jsonl/.json: one per record's "
              "--text_field; folders are searched recursively)")


# ------------------------------------------------------------------------ Hugging Face hub

def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the hub's host accepts a TCP connection within `timeout` seconds.

    The connect runs in a daemon thread because a DNS lookup ignores socket timeouts and can
    block far longer on a machine with no resolver."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urllib.parse.urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    answered: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _datasets_importable() -> bool:
    return importlib.util.find_spec("datasets") is not None


def _load_hf_dataset(name: str, num_proc: int):
    from datasets import load_dataset

    return load_dataset(name, split="train", num_proc=num_proc if num_proc > 1 else None)


def hub_documents(name: str, text_field: str, num_proc: int, max_documents: int | None):
    """The corpus's train split from the hub (or the local `datasets` cache), as Arrow."""
    offer_local = (f"Use local files instead:\n  {INPUT_FORM}\nor run without --dataset/--input "
                   f"for the built-in offline corpus ({BUILTIN_DATASET}).")
    if not _datasets_importable():
        raise CorpusSourceError(
            f"--dataset {name}: the Hugging Face hub is not available here: the `datasets` "
            f"package is not installed (pip install datasets). {offer_local}")
    why_offline = ""
    if _env_flag("HF_HUB_OFFLINE") or _env_flag("HF_DATASETS_OFFLINE"):
        why_offline = "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set"
    elif not hub_reachable():
        why_offline = f"the hub did not answer within {HUB_PROBE_TIMEOUT_S:g} s"
        # Offline mode lets `datasets` use its local cache instead of retrying the network.
        os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        dataset = _load_hf_dataset(name, num_proc)
    except Exception as err:  # datasets raises many types (connection, missing config, offline)
        where = f"{why_offline}, and it is not in the local cache" if why_offline else "the hub"
        raise CorpusSourceError(
            f"--dataset {name}: could not load it from the Hugging Face hub ({where}: "
            f"{type(err).__name__}: {err}). {offer_local}") from err
    if text_field not in dataset.column_names:
        raise CorpusSourceError(
            f"--dataset {name}: no column '{text_field}' (columns: {dataset.column_names}); "
            "choose one with --text_field")
    if max_documents is not None:
        dataset = dataset.select(range(min(max_documents, len(dataset))))
    return dataset.select_columns([text_field])


# ------------------------------------------------------------------------ the pipeline

def _from_generator(generate, gen_kwargs: dict, cache_dir: Path):
    """Stream a document generator into Arrow files under cache_dir; the generator's own
    errors come out as themselves, not wrapped by `datasets`."""
    from datasets import Dataset, Features, Value
    from datasets.exceptions import DatasetGenerationError

    try:
        return Dataset.from_generator(generate, features=Features({"text": Value("string")}),
                                      gen_kwargs=gen_kwargs, cache_dir=str(cache_dir))
    except DatasetGenerationError as err:
        cause = err.__cause__ or err.__context__
        while cause is not None and not isinstance(cause, (CorpusSourceError, OSError)):
            cause = cause.__cause__ or cause.__context__
        raise (cause or err) from None


def prepare_corpus(out_dir, *, dataset: str | None = None, inputs: list[str] | None = None,
                   text_field: str = "text", num_proc: int | None = None,
                   val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0,
                   max_documents: int | None = None, text=GPT2_TEXT) -> dict:
    """Build OUT_DIR/train.bin, val.bin and meta.json; returns the meta dict.

    Source: `inputs` (local paths/globs), else `dataset` (a Hugging Face name, or
    "python-docs"), else the built-in offline corpus. text: the text tokenizer
    (model.text_tokenizer; GPT-2's by default). An OUT_DIR holding a corpus of another tokenizer
    is refused (ValueError), never overwritten."""
    if dataset and inputs:
        raise ValueError("give either --dataset or --input, not both")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    out_dir = Path(out_dir)
    name, identity = "gpt2" if text == GPT2_TEXT else text.source, text.identity()
    check_same_tokenizer(out_dir, name, identity)
    num_proc = max(1, num_proc or pipeline.default_num_proc())
    files = [str(p) for p in expand_inputs(inputs)] if inputs else None
    encoder = pipeline.DocumentEncoder(text)
    cache_dir = out_dir / f".hf-cache-{os.getpid()}"
    try:
        if files:
            source = "local: " + ", ".join(inputs)
            documents = _from_generator(sources.local_documents, {
                "files": files, "text_field": text_field, "limit": max_documents}, cache_dir)
            field = "text"
        elif dataset and dataset != BUILTIN_DATASET:
            source = f"huggingface: {dataset}"
            documents = hub_documents(dataset, text_field, num_proc, max_documents)
            field = text_field
        else:
            source = (f"{BUILTIN_DATASET}: pydoc_data.topics + standard-library docstrings of "
                      f"Python {platform.python_version()}")
            documents = _from_generator(sources.builtin_documents, {
                "num_proc": num_proc, "limit": max_documents}, cache_dir)
            field = "text"
        ids = pipeline.tokenize(documents, field, num_proc, encoder)
        stats = pipeline.write_splits(ids, out_dir, val_fraction, seed, encoder.dtype)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    meta = {
        "source": source,
        "documents": stats["documents"],
        "tokens": stats["tokens"],   # <|endoftext|> included
        "skipped_empty_documents": stats["skipped_empty_documents"],
        "tokenizer": name,
        "tokenizer_identity": identity,
        "vocab_size": text.n_words,
        "eot_token_id": text.eot_id,
        "dtype": encoder.dtype.name,
        "files": {s: f"{s}.bin" for s in SPLITS},
        "val_fraction": val_fraction,
        "seed": seed,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_json(out_dir / "meta.json", meta)
    for split in SPLITS:
        if meta["tokens"][split] < MIN_USEFUL_TOKENS:
            print(f"warning: {split}.bin holds {meta['tokens'][split]} tokens, fewer than one "
                  f"GPT-2 window of {MIN_USEFUL_TOKENS}; readers need block_size + 1 tokens "
                  "(add documents or raise --val_fraction)", file=sys.stderr)
    return meta


def check_same_tokenizer(out_dir: Path, name: str, identity: str) -> None:
    """ValueError when out_dir already holds a corpus written by another tokenizer: one folder,
    one tokenizer (a rerun with the same one replaces the files)."""
    if not any((out_dir / name).is_file() for name in ("meta.json", "train.bin", "val.bin")):
        return
    meta = read_meta(out_dir)
    if meta["tokenizer_identity"] != identity:
        raise ValueError(f"--out_dir {out_dir} holds a corpus tokenised by "
                         f"{describe_tokenizer(meta['tokenizer'], meta['tokenizer_identity'])}, "
                         f"not by this run's tokenizer ({describe_tokenizer(name, identity)}); "
                         "choose another --out_dir")


def _write_json(path: Path, data: dict) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"With neither --dataset nor --input: the offline corpus '{BUILTIN_DATASET}'.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dataset", nargs="?", const=DEFAULT_HF_DATASET, default=None,
                        help=f"Hugging Face dataset name (bare flag: {DEFAULT_HF_DATASET}); "
                             f"'{BUILTIN_DATASET}' names the offline corpus")
    source.add_argument("--input", nargs="+", metavar="PATH",
                        help=".txt (one document per file), .jsonl/.json (one per record), "
                             ".parquet (needs pyarrow); folders are searched recursively, globs "
                             "may use **")
    parser.add_argument("--out_dir", required=True, help="where train.bin, val.bin, meta.json go")
    parser.add_argument("--tokenizer", metavar="FOLDER", default=None,
                        help="a local Hugging Face model folder whose tokenizer writes the ids "
                             "(the --init_from folder of the runs that read this corpus); "
                             "default: GPT-2's BPE")
    parser.add_argument("--text_field", default="text", help="JSON field / column with the text")
    parser.add_argument("--num_proc", type=number(int, 1, 4096), default=None,
                        help="tokenising processes (default: all usable cores)")
    parser.add_argument("--val_fraction", type=number(float, 0.0, 1.0, low_open=True),
                        default=DEFAULT_VAL_FRACTION,
                        help="share of documents for val (at least one document)")
    parser.add_argument("--seed", type=number(int, 0, 2**32 - 1), default=0,
                        help="seed of the document split")
    parser.add_argument("--max_documents", type=number(int, 1, 10**12), default=None,
                        help="use only the first N documents (quick runs and tests)")
    return parser.parse_args(argv)


def tokenizer_of(folder: str) -> HFTextTokenizer:
    if not Path(folder).is_dir():
        raise ValueError(f"--tokenizer {folder}: no such folder (a local Hugging Face model "
                         "folder with tokenizer files)")
    try:
        return HFTextTokenizer.from_folder(folder)
    except ValueError as err:      # BackboneError: the folder, then what is wrong
        raise ValueError(f"--tokenizer {err}") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        text = GPT2_TEXT if args.tokenizer is None else tokenizer_of(args.tokenizer)
        meta = prepare_corpus(args.out_dir, dataset=args.dataset, inputs=args.input,
                              text_field=args.text_field, num_proc=args.num_proc,
                              val_fraction=args.val_fraction, seed=args.seed,
                              max_documents=args.max_documents, text=text)
    except (CorpusSourceError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{meta['source']}\n"
          f"train: {meta['documents']['train']:,} documents, {meta['tokens']['train']:,} tokens\n"
          f"val:   {meta['documents']['val']:,} documents, {meta['tokens']['val']:,} tokens\n"
          f"written to {Path(args.out_dir).resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
