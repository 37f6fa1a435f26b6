"""Where the text comes from: local files and the offline Python-docs corpus, as document streams.

Every reader is a generator holding one document (one line of a .jsonl, one parquet batch) at a
time, so `datasets.Dataset.from_generator` can spill a corpus of any size to Arrow on disk.
Exceptions: a whole .txt file is one document, and a .json array is read whole (JSON has no
record boundaries to stream by; JSON lines under a .json name are streamed).
"""
from __future__ import annotations

import ast
import contextlib
import glob
import importlib.util
import json
import multiprocessing
import sysconfig
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

TEXT_SUFFIXES = (".txt",)
JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + JSON_SUFFIXES + PARQUET_SUFFIXES
# Standard-library folders that are not documentation, or absent from slim installs.
_STDLIB_SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"}


class CorpusSourceError(RuntimeError):
    """A corpus source that cannot be used; the message says what to run instead."""


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
                    f"--input {pattern}: the pattern matches no "
                    f"{'/'.join(SUPPORTED_SUFFIXES)} files")
        else:
            raise FileNotFoundError(f"--input {pattern}: no such file or folder")
        found += files
    return list(dict.fromkeys(found))


def _supported_files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and p.suffix.lower() in SUPPORTED_SUFFIXES)


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
        yield from _json_lines_documents(path, text_field)
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


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file, one line in memory at a time."""
    line_no = 0
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                yield line_no, line
    except UnicodeDecodeError as err:
        raise CorpusSourceError(f"{path}:{line_no + 1}: not UTF-8 text ({err})") from err


def _json_lines_documents(path: Path, text_field: str) -> Iterator[str]:
    for line_no, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusSourceError(f"{path}:{line_no}: not a JSON record ({err})") from err
        yield _record_text(record, text_field, f"{path}:{line_no}")


def _json_documents(path: Path, text_field: str) -> Iterator[str]:
    """A JSON array or object (read whole: JSON has no record boundaries to stream by), or JSON
    lines under a .json name (many exports, Hugging Face's to_json among them), streamed."""
    first_line = next((line for _, line in _lines(path) if line.strip()), "")
    try:
        json.loads(first_line)
        looks_like_lines = first_line.lstrip().startswith("{")
    except json.JSONDecodeError:
        looks_like_lines = False
    if looks_like_lines:
        yield from _json_lines_documents(path, text_field)
        return
    try:
        data = json.loads(_read_utf8(path))
    except json.JSONDecodeError as err:
        raise CorpusSourceError(f"{path}: not valid JSON ({err})") from err
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


@contextlib.contextmanager
def process_map(num_proc: int):
    """An ordered, lazy map(fn, items, chunksize) over `num_proc` processes (in-process for 1)."""
    if num_proc <= 1:
        yield lambda fn, items, chunksize: map(fn, items)
        return
    with multiprocessing.get_context().Pool(num_proc) as pool:
        yield pool.imap


def local_documents(files: list[str], text_field: str, limit: int | None) -> Iterator[dict]:
    """{"text": document} of every file in order, at most `limit` documents."""
    paths = [Path(f) for f in files]
    bar = tqdm(paths, desc="reading", unit="file", disable=True if len(paths) < 2 else None)
    yield from _first(({"text": t} for path in bar for t in read_documents(path, text_field)),
                      limit)


def _first(items: Iterable, limit: int | None) -> Iterator:
    for n, item in enumerate(items):
        if limit is not None and n >= limit:
            return
        yield item


# ------------------------------------------------------------------ the offline default corpus

def builtin_documents(num_proc: int, limit: int | None) -> Iterator[dict]:
    """Python's documentation, present wherever Python is: the pydoc topics, then the docstrings
    of each standard-library module (one document per topic / per module)."""
    yield from _first(({"text": t} for t in _builtin_documents(num_proc, limit)), limit)


def _builtin_documents(num_proc: int, limit: int | None) -> Iterator[str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some slim distributions drop pydoc_data; the docstrings remain
        topics = {}
    for name in sorted(topics):
        yield topics[name]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py")
                   if not _STDLIB_SKIP_DIRS & set(p.relative_to(stdlib).parts))
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
