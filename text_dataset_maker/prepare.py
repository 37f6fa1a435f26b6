"""A text corpus -> train.bin / val.bin of GPT-2 ids, for the text batches every stage mixes in.

    python text_dataset_maker/prepare.py --out_dir data/text                  # offline default
    python text_dataset_maker/prepare.py --out_dir data/text --input 'books/**/*.txt' web.jsonl
    python text_dataset_maker/prepare.py --out_dir data/text --dataset openwebtext   # needs the hub

Each file is one flat stream of uint16 GPT-2 ids with <|endoftext|> after every document; the
train/val split is by whole documents. meta.json records the source and the counts.
"""
from __future__ import annotations

import sys
from pathlib import Path

# Runnable as a file path from the repo root: `model` lives one folder up.
_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

import argparse  # noqa: E402
import ast  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import glob  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import socket  # noqa: E402
import sysconfig  # noqa: E402
import threading  # noqa: E402
import urllib.parse  # noqa: E402
from collections.abc import Iterable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from model.gpt2_bpe import EOT_TOKEN_ID, GPT2_VOCAB_SIZE, get_gpt2_encoding  # noqa: E402

BUILTIN_DATASET = "python-docs"       # the offline default: Python's own documentation text
DEFAULT_HF_DATASET = "openwebtext"    # what NeuroLM (and nanoGPT) train the text side on
DEFAULT_VAL_FRACTION = 0.02       # ~14 documents / ~10k tokens of the offline corpus
MIN_USEFUL_TOKENS = 1025           # one GPT-2 window (block_size 1024 + 1 target)
TOKEN_DTYPE = np.uint16               # all 50257 GPT-2 ids fit; half the bytes of int32 (nanoGPT)
SPLITS = ("train", "val")
HUB_PROBE_TIMEOUT_S = 3.0
TEXT_SUFFIXES = (".txt",)
JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES
INPUT_FORM = ("python text_dataset_maker/prepare.py --out_dir DIR --input 'my_corpus/**/*.txt' "
              "docs.jsonl  (.txt: one document per file; .jsonl/.json: one per record's "
              "--text_field; folders are searched recursively)")
# Standard-library folders that are not documentation, or absent from slim installs.
_STDLIB_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


class CorpusSourceError(RuntimeError):
    """A corpus source that cannot be used; the message says what to run instead."""


@dataclass
class Corpus:
    source: str                 # recorded in meta.json
    documents: Iterable[str]    # sized (len) and iterated once, in order
    skipped_empty: int = 0


# ---------------------------------------------------------------------------- local files

def expand_inputs(patterns: Iterable[str]) -> list[Path]:
    """Files named by --input: plain files, folders (recursive) and globs, sorted, no repeats."""
    found: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files = _supported_files_under(path)
            if not files:
                raise FileNotFoundError(
                    f"--input {pattern}: the folder holds no {'/'.join(SUPPORTED_SUFFIXES)} files")
        elif path.is_file():
            _check_suffix(path)
            files = [path]
        elif any(c in pattern for c in "*?["):
            matches = [Path(m) for m in sorted(glob.glob(pattern, recursive=True))]
            files = [m for m in matches if m.is_file() and m.suffix.lower() in SUPPORTED_SUFFIXES]
            for folder in (m for m in matches if m.is_dir()):
                files += _supported_files_under(folder)
            if not files:
                raise FileNotFoundError(
                    f"--input {pattern}: the pattern matches no {'/'.join(SUPPORTED_SUFFIXES)} files")
        else:
            raise FileNotFoundError(f"--input {pattern}: no such file or folder")
        found += files
    return list(dict.fromkeys(found))


def _supported_files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)


def _check_suffix(path: Path) -> None:
    if path.suffix.lower() not in SUPPORTED_SUFFIXES:
        raise CorpusSourceError(
            f"{path}: unsupported file type '{path.suffix}'; --input reads "
            f"{', '.join(SUPPORTED_SUFFIXES)} files")


def read_documents(path: Path, text_field: str = "text") -> Iterator[str]:
    """The documents of one input file: a whole .txt, or each JSON / parquet record's text."""
    suffix = path.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        yield _read_utf8(path)
    elif suffix == ".jsonl":
        yield from _json_lines_documents(path, _read_utf8(path), text_field)
    elif suffix == ".json":
        yield from _json_documents(path, text_field)
    elif suffix in PARQUET_SUFFIXES:
        yield from _parquet_documents(path, text_field)
    else:
        _check_suffix(path)


def _read_utf8(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise CorpusSourceError(f"{path}: not UTF-8 text ({err})") from err


def _json_lines_documents(path: Path, content: str, text_field: str) -> Iterator[str]:
    for line_no, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusSourceError(f"{path}:{line_no}: not a JSON record ({err})") from err
        yield _record_text(record, text_field, f"{path}:{line_no}")


def _json_documents(path: Path, text_field: str) -> Iterator[str]:
    content = _read_utf8(path)
    try:
        data = json.loads(content)
    except json.JSONDecodeError as err:
        if err.msg != "Extra data":
            raise CorpusSourceError(f"{path}: not valid JSON ({err})") from err
        # Many exports (Hugging Face's to_json among them) write JSON lines under a .json name.
        yield from _json_lines_documents(path, content, text_field)
        return
    records = data if isinstance(data, list) else [data]
    for i, record in enumerate(records):
        yield _record_text(record, text_field, f"{path}[{i}]")


def _parquet_documents(path: Path, text_field: str) -> Iterator[str]:
    if importlib.util.find_spec("pyarrow") is None:
        raise CorpusSourceError(
            f"{path}: reading .parquet needs the 'pyarrow' package, which is not installed "
            "(pip install pyarrow), or convert the file to .jsonl")
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    if text_field not in parquet.schema_arrow.names:
        raise CorpusSourceError(
            f"{path}: no column '{text_field}' (columns: {parquet.schema_arrow.names}); "
            "choose one with --text_field")
    for batch in parquet.iter_batches(columns=[text_field]):
        for i, text in enumerate(batch.column(0).to_pylist()):
            yield _record_text(text, text_field, f"{path} row {i}")


def _record_text(record, text_field: str, where: str) -> str:
    text = record.get(text_field) if isinstance(record, dict) else record
    if isinstance(record, dict) and text_field not in record:
        raise CorpusSourceError(
            f"{where}: record has no '{text_field}' field (fields: {sorted(record)}); "
            "choose one with --text_field")
    if not isinstance(text, str):
        raise CorpusSourceError(f"{where}: the text is a {type(text).__name__}, not a string")
    return text


def local_corpus(patterns: list[str], text_field: str, max_documents: int | None) -> Corpus:
    files = expand_inputs(patterns)
    texts = _take(_chain_documents(files, text_field), max_documents)
    return _non_blank(Corpus(source="local: " + ", ".join(patterns), documents=texts))


def _chain_documents(files: list[Path], text_field: str) -> Iterator[str]:
    for path in tqdm(files, desc="reading", unit="file", disable=len(files) < 2):
        yield from read_documents(path, text_field)


# ------------------------------------------------------------------ the offline default corpus

def builtin_corpus(max_documents: int | None = None, num_proc: int = 1) -> Corpus:
    """Python's documentation, present wherever Python is: the pydoc topics, then the docstrings
    of each standard-library module (one document per topic / per module)."""
    texts = _take(_builtin_documents(num_proc, max_documents), max_documents)
    source = (f"{BUILTIN_DATASET}: pydoc_data.topics + standard-library docstrings of "
              f"Python {platform.python_version()}")
    return _non_blank(Corpus(source=source, documents=texts))


def _builtin_documents(num_proc: int, limit: int | None) -> Iterator[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some slim distributions drop pydoc_data; the docstrings remain
        topics = {}
    for name in sorted(topics):
        yield topics[name]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if not _STDLIB_SKIP_DIRS & set(p.relative_to(stdlib).parts))
    items = [(str(p), _module_name(p, stdlib)) for p in files]
    if limit is not None:
        items = items[:max(0, limit - len(topics))]
    # Parsing the whole standard library takes seconds: spread it like the tokenising.
    with process_map(num_proc) as pmap:
        yield from pmap(_module_docstrings, items, 8)


def _module_name(path: Path, stdlib: Path) -> str:
    parts = list(path.relative_to(stdlib).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_docstrings(item: tuple[str, str]) -> str:
    """'qualified.name' headings each followed by that object's docstring, in source order."""
    path, module = item
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (SyntaxError, ValueError, OSError):  # e.g. lib2to3's deliberately broken fixtures
        return ""
    sections: list[str] = []

    def visit(node: ast.AST, qualname: str) -> None:
        doc = ast.get_docstring(node)
        if doc:
            sections.append(f"{qualname}\n\n{doc}")
        for child in getattr(node, "body", []):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, f"{qualname}.{child.name}")

    visit(tree, module)
    return "\n\n".join(sections)


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


class _HFTextColumn:
    """One text column of a Hugging Face dataset, read in batches so it never sits in memory."""

    def __init__(self, dataset, text_field: str):
        self.dataset, self.text_field = dataset, text_field

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[str]:
        for batch in self.dataset.iter(batch_size=1000):
            yield from batch[self.text_field]


def hub_corpus(name: str, text_field: str, num_proc: int, max_documents: int | None) -> Corpus:
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
    return Corpus(source=f"huggingface: {name}", documents=_HFTextColumn(dataset, text_field))


# ------------------------------------------------------------- split, tokenise, write

def _take(texts: Iterable[str], limit: int | None) -> list[str]:
    out = []
    for text in texts:
        if limit is not None and len(out) >= limit:
            break
        out.append(text)
    return out


def _non_blank(corpus: Corpus) -> Corpus:
    # Dropped before the split so a blank document can never be the whole val split.
    kept = [t for t in corpus.documents if t.strip()]
    corpus.skipped_empty += len(corpus.documents) - len(kept)
    corpus.documents = kept
    return corpus


def val_document_mask(n_documents: int, val_fraction: float, seed: int) -> np.ndarray:
    """bool (n_documents,): which documents go to val; at least one in each split."""
    if n_documents < 2:
        raise CorpusSourceError(
            f"the corpus has {n_documents} non-empty document(s); a train/val split needs at "
            "least 2 (.txt files are one document each)")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"--val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    n_val = min(n_documents - 1, max(1, round(val_fraction * n_documents)))
    is_val = np.zeros(n_documents, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n_documents)[:n_val]] = True
    return is_val


def encode_document(text: str) -> np.ndarray | None:
    """GPT-2 ids of one document followed by <|endoftext|>; None for a blank document.

    encode_ordinary: a literal '<|endoftext|>' inside a document stays text, so document
    boundaries in the stream are only the ones written here."""
    if not text.strip():
        return None
    ids = get_gpt2_encoding().encode_ordinary(text)
    ids.append(EOT_TOKEN_ID)
    return np.asarray(ids, dtype=TOKEN_DTYPE)


@contextlib.contextmanager
def process_map(num_proc: int):
    """An ordered, lazy map(fn, items, chunksize) over `num_proc` processes (in-process for 1)."""
    if num_proc <= 1:
        yield lambda fn, items, chunksize: map(fn, items)
        return
    with multiprocessing.get_context().Pool(num_proc) as pool:
        yield pool.imap


def default_num_proc() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours CPU limits of containers and taskset
    except AttributeError:
        return os.cpu_count() or 1


def write_splits(corpus: Corpus, out_dir: Path, is_val: np.ndarray, num_proc: int) -> dict:
    """Tokenise the documents and stream them into train.bin / val.bin (temp names, renamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    final = {s: out_dir / f"{s}.bin" for s in SPLITS}
    temp = {s: out_dir / f".{s}.bin.tmp-{os.getpid()}" for s in SPLITS}
    documents = {s: 0 for s in SPLITS}
    tokens = {s: 0 for s in SPLITS}
    skipped = 0
    get_gpt2_encoding()  # built once here, so forked workers inherit it instead of rebuilding
    try:
        # The pool starts before the progress bars, so no bar thread exists when it forks.
        with process_map(num_proc) as pmap, \
                open(temp["train"], "wb") as train_f, open(temp["val"], "wb") as val_f, \
                tqdm(total=len(is_val), desc="tokenising", unit="doc") as doc_bar, \
                tqdm(desc="writing", unit="tok", unit_scale=True) as tok_bar:
            ids_stream = pmap(encode_document, iter(corpus.documents), 16)
            n_seen = 0
            for n_seen, (ids, to_val) in enumerate(zip(ids_stream, is_val), start=1):
                doc_bar.update(1)
                if ids is None:
                    skipped += 1
                    continue
                split = "val" if to_val else "train"
                (val_f if to_val else train_f).write(ids.tobytes())
                documents[split] += 1
                tokens[split] += len(ids)
                tok_bar.update(len(ids))
            if n_seen != len(is_val):
                raise RuntimeError(f"the source gave {n_seen} documents, expected {len(is_val)}")
        for split in SPLITS:
            if documents[split] == 0:
                raise CorpusSourceError(f"the {split} split came out empty (all its documents "
                                        "were blank); add documents or change --seed")
        for split in SPLITS:
            os.replace(temp[split], final[split])
    finally:
        for path in temp.values():
            path.unlink(missing_ok=True)
    return {"documents": documents, "tokens": tokens, "skipped_empty_documents": skipped}


def _write_json(path: Path, data: dict) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(temp, path)


def prepare_corpus(out_dir, *, dataset: str | None = None, inputs: list[str] | None = None,
                   text_field: str = "text", num_proc: int | None = None,
                   val_fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0,
                   max_documents: int | None = None) -> dict:
    """Build OUT_DIR/train.bin, val.bin and meta.json; returns the meta dict.

    Source: `inputs` (local paths/globs), else `dataset` (a Hugging Face name, or
    "python-docs"), else the built-in offline corpus."""
    if dataset and inputs:
        raise ValueError("give either --dataset or --input, not both")
    num_proc = max(1, num_proc or default_num_proc())
    if inputs:
        corpus = local_corpus(inputs, text_field, max_documents)
    elif dataset and dataset != BUILTIN_DATASET:
        corpus = hub_corpus(dataset, text_field, num_proc, max_documents)
    else:
        corpus = builtin_corpus(max_documents, num_proc)
    is_val = val_document_mask(len(corpus.documents), val_fraction, seed)
    out_dir = Path(out_dir)
    stats = write_splits(corpus, out_dir, is_val, num_proc)
    meta = {
        "source": corpus.source,
        "documents": stats["documents"],
        "tokens": stats["tokens"],   # <|endoftext|> included
        "skipped_empty_documents": stats["skipped_empty_documents"] + corpus.skipped_empty,
        "tokenizer": "gpt2",
        "vocab_size": GPT2_VOCAB_SIZE,
        "eot_token_id": EOT_TOKEN_ID,
        "dtype": np.dtype(TOKEN_DTYPE).name,
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
    parser.add_argument("--text_field", default="text", help="JSON field / column with the text")
    parser.add_argument("--num_proc", type=int, default=None,
                        help="tokenising processes (default: all usable cores)")
    parser.add_argument("--val_fraction", type=float, default=DEFAULT_VAL_FRACTION,
                        help="share of documents for val (at least one document)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the document split")
    parser.add_argument("--max_documents", type=int, default=None,
                        help="use only the first N documents (quick runs and tests)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        meta = prepare_corpus(args.out_dir, dataset=args.dataset, inputs=args.input,
                              text_field=args.text_field, num_proc=args.num_proc,
                              val_fraction=args.val_fraction, seed=args.seed,
                              max_documents=args.max_documents)
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
