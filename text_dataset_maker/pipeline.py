"""Documents (a Hugging Face `datasets.Dataset` with one text column) -> train.bin / val.bin of
one text tokenizer's ids.

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

from model.gpt2_bpe import get_gpt2_encoding
from model.text_tokenizer import GPT2_TEXT
from text_dataset_maker.corpus import token_dtype
from text_dataset_maker.sources import CorpusSourceError

SPLITS = ("train", "val")
MAP_BATCH = 256                       # documents per tokenising call
WRITE_BATCH = 1024                    # documents per streamed record batch


class DocumentEncoder:
    """Documents -> ids of one text tokenizer (model.text_tokenizer: GPT2_TEXT, the default, or a
    Hugging Face folder's), each followed by its end token, in `dtype` (token_dtype of its
    vocabulary).

    A literal special token inside a document ('<|endoftext|>') stays text (tiktoken's
    encode_ordinary; the Hugging Face tokenizer with encode_special_tokens), so document
    boundaries in the stream are only the ones written here."""

    def __init__(self, text=GPT2_TEXT):
        self.eot_id = int(text.eot_id)
        self.dtype = token_dtype(text.n_words)
        self.backend = None
        if text != GPT2_TEXT:
            from tokenizers import Tokenizer

            # a copy: the model's own tokenizer keeps reading special tokens as such
            self.backend = Tokenizer.from_str(text.tokenizer.backend_tokenizer.to_str())
            self.backend.no_truncation()
            self.backend.no_padding()

    def encode(self, texts: list[str]) -> list[np.ndarray | None]:
        """ids + end token of each document; None for a blank one."""
        kept = [t for t in texts if t.strip()]
        if self.backend is None:
            encoding = get_gpt2_encoding()
            ids = [encoding.encode_ordinary(t) for t in kept]
        else:
            # set here, not once: the setting does not survive pickling into worker processes
            self.backend.encode_special_tokens = True
            ids = [e.ids for e in self.backend.encode_batch(kept, add_special_tokens=False)]
        encoded = iter(ids)
        return [np.asarray([*next(encoded), self.eot_id], dtype=self.dtype) if t.strip()
                else None for t in texts]

    def __call__(self, texts: list[str]) -> dict:
        empty = np.zeros(0, dtype=self.dtype)
        return {"ids": [empty if ids is None else ids for ids in self.encode(texts)]}


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


def tokenize(documents, text_field: str, num_proc: int, encoder: DocumentEncoder):
    """The documents' ids (one list per document in the encoder's dtype, blank documents
    empty), as Arrow."""
    from datasets import Features, Sequence, Value

    get_gpt2_encoding()  # built once here, so forked workers inherit it instead of rebuilding
    return documents.map(encoder, batched=True, batch_size=MAP_BATCH,
                         input_columns=[text_field], remove_columns=documents.column_names,
                         features=Features({"ids": Sequence(Value(encoder.dtype.name))}),
                         num_proc=num_proc if num_proc > 1 and len(documents) > 1 else None,
                         desc="tokenising")


def write_splits(ids, out_dir: Path, val_fraction: float, seed: int, dtype: np.dtype) -> dict:
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
                    train_f.write(values[~to_val].astype(dtype, copy=False).tobytes())
                    val_f.write(values[to_val].astype(dtype, copy=False).tobytes())
                    bar.update(len(values))
                    start += n
        for split in SPLITS:
            os.replace(temp[split], final[split])
    finally:
        for path in temp.values():
            path.unlink(missing_ok=True)
    return {"documents": documents, "tokens": tokens,
            "skipped_empty_documents": int((~kept).sum())}
