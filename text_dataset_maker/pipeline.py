"""Documents (a Hugging Face `datasets.Dataset` with one text column) -> train.bin / val.bin.

The documents live in Arrow files on disk (memory-mapped); tokenising is a `Dataset.map` over
`num_proc` processes that writes the ids to Arrow as well; the split by whole documents and the
writing stream record batches. Peak memory is a few batches of documents plus one byte per
document for the split, whatever the corpus size.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.gpt2_bpe import EOT_TOKEN_ID, get_gpt2_encoding
from text_dataset_maker.sources import CorpusSourceError

TOKEN_DTYPE = np.uint16               # all 50257 GPT-2 ids fit; half the bytes of int32 (nanoGPT)
SPLITS = ("train", "val")
MAP_BATCH = 256                       # documents per tokenising call
WRITE_BATCH = 1024                    # documents per streamed record batch


def encode_document(text: str) -> np.ndarray | None:
    """GPT-2 ids of one document followed by <|endoftext|>; None for a blank document.

    encode_ordinary: a literal '<|endoftext|>' inside a document stays text, so document
    boundaries in the stream are only the ones written here."""
    if not text.strip():
        return None
    ids = get_gpt2_encoding().encode_ordinary(text)
    ids.append(EOT_TOKEN_ID)
    return np.asarray(ids, dtype=TOKEN_DTYPE)


def _encode_batch(texts: list[str]) -> dict:
    empty = np.zeros(0, dtype=TOKEN_DTYPE)
    return {"ids": [ids if (ids := encode_document(t)) is not None else empty for t in texts]}


def default_num_proc() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours CPU limits of containers and taskset
    except AttributeError:
        return os.cpu_count() or 1


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


def tokenize(documents, text_field: str, num_proc: int):
    """The documents' ids (one uint16 list per document, blank documents empty), as Arrow."""
    from datasets import Features, Sequence, Value

    get_gpt2_encoding()  # built once here, so forked workers inherit it instead of rebuilding
    return documents.map(_encode_batch, batched=True, batch_size=MAP_BATCH,
                         input_columns=[text_field], remove_columns=documents.column_names,
                         features=Features({"ids": Sequence(Value("uint16"))}),
                         num_proc=num_proc if num_proc > 1 and len(documents) > 1 else None,
                         desc="tokenising")


def write_splits(ids, out_dir: Path, val_fraction: float, seed: int) -> dict:
    """Split the tokenised documents (blank ones dropped first, so a blank document can never be
    the whole val split) and stream them into train.bin / val.bin (temp names, renamed)."""
    import pyarrow.compute as pc

    column = ids.data.column("ids")
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    kept = lengths > 0
    is_val_kept = val_document_mask(int(kept.sum()), val_fraction, seed)
    is_val = np.zeros(len(lengths), dtype=bool)
    is_val[kept] = is_val_kept
    documents = {"train": int((kept & ~is_val).sum()), "val": int(is_val.sum())}
    tokens = {"train": int(lengths[kept & ~is_val].sum()), "val": int(lengths[is_val].sum())}

    out_dir.mkdir(parents=True, exist_ok=True)
    final = {s: out_dir / f"{s}.bin" for s in SPLITS}
    temp = {s: out_dir / f".{s}.bin.tmp-{os.getpid()}" for s in SPLITS}
    try:
        with open(temp["train"], "wb") as train_f, open(temp["val"], "wb") as val_f, \
                tqdm(total=sum(tokens.values()), desc="writing", unit="tok",
                     unit_scale=True, disable=None) as bar:
            start = 0
            for chunk in column.chunks:
                for offset in range(0, len(chunk), WRITE_BATCH):
                    part = chunk.slice(offset, WRITE_BATCH)
                    values = part.flatten().to_numpy(zero_copy_only=False)
                    n = len(part)
                    to_val = np.repeat(is_val[start:start + n], lengths[start:start + n])
                    train_f.write(values[~to_val].astype(TOKEN_DTYPE, copy=False).tobytes())
                    val_f.write(values[to_val].astype(TOKEN_DTYPE, copy=False).tobytes())
                    bar.update(len(values))
                    start += n
        for split in SPLITS:
            os.replace(temp[split], final[split])
    finally:
        for path in temp.values():
            path.unlink(missing_ok=True)
    return {"documents": documents, "tokens": tokens,
            "skipped_empty_documents": int((~kept).sum())}
