"""The reader every trainer shares: random windows of token ids from train.bin / val.bin, and the
corpus folder's meta.json (which tokenizer wrote the ids, in which integer type)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

META_FILE = "meta.json"
TOKEN_DTYPES = ("uint16", "uint32")
# what a corpus written before meta.json said more (or without meta.json) holds: GPT-2 ids
LEGACY_META = {"tokenizer": "gpt2", "tokenizer_identity": "gpt2", "dtype": "uint16"}


def prepare_command(out_dir: str | os.PathLike, tokenizer: str | None = None) -> str:
    return (f"python text_dataset_maker/prepare.py --out_dir {out_dir}"
            + (f" --tokenizer {tokenizer}" if tokenizer else ""))


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest stored type of a vocabulary's ids: uint16 (nanoGPT's, half of int32) while
    every id fits, uint32 beyond (Qwen's 151k ids)."""
    return np.dtype(np.uint16 if vocab_size - 1 <= np.iinfo(np.uint16).max else np.uint32)


def read_meta(folder: str | os.PathLike) -> dict:
    """A corpus folder's meta.json with the LEGACY_META keys filled in where it does not say
    them (or has no meta.json); ValueError naming the file when it is unreadable or names an
    unknown dtype."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        return dict(LEGACY_META)
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({' '.join(str(err).split())})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a JSON object")
    meta = {**LEGACY_META, **meta}
    if meta["dtype"] not in TOKEN_DTYPES:
        raise ValueError(f"{path}: dtype {meta['dtype']!r}, expected one of {TOKEN_DTYPES}")
    if not isinstance(meta["tokenizer_identity"], str):
        raise ValueError(f"{path}: tokenizer_identity is not a string")
    return meta


def short_identity(identity: str) -> str:
    return identity[:len("sha256:") + 12] if identity.startswith("sha256:") else identity


def describe_tokenizer(name: str, identity: str) -> str:
    """'gpt2', or a folder and the start of its identity hash, for messages."""
    short = short_identity(identity)
    return name if name == short else f"{name} ({short})"


class TextCorpus:
    """Random windows of `block_size + 1` tokens from one .bin file of token ids (uint16 or
    uint32, as meta.json beside it says; GPT-2's uint16 without it). `text` (a model's text
    tokenizer, model.text_tokenizer) makes a corpus written by another tokenizer a ValueError;
    None reads any.

    The memory map is reopened for every batch: a map kept open accumulates resident pages of
    a multi-GB file (nanoGPT's remedy). Batches come from this object's own `generator`, seeded
    from (seed, rank), so each DDP rank draws its own stream. The trainers reseed it for every
    step (utils.draw_text_batch), so a resumed run draws the same text without saved state.
    """

    def __init__(self, path: str | os.PathLike, block_size: int, seed: int = 0, rank: int = 0,
                 text=None):
        self.path = Path(path)
        self.block_size = int(block_size)
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        meta = read_meta(self.path.parent)
        self.dtype = np.dtype(meta["dtype"])
        self.tokenizer_identity = meta["tokenizer_identity"]
        wanted = None if text is None else text.identity()
        if wanted is not None and wanted != self.tokenizer_identity:
            folder = None if wanted == LEGACY_META["tokenizer_identity"] else "FOLDER"
            raise ValueError(
                f"{self.path} was tokenised by "
                f"{describe_tokenizer(meta['tokenizer'], self.tokenizer_identity)}, not by the "
                f"model's text tokenizer ({short_identity(wanted)}); build a corpus with it: "
                f"{prepare_command('DIR', folder)}"
                + (" (FOLDER: the model's --init_from folder)" if folder else ""))
        self.num_tokens = self._count_tokens()
        self.seed, self.rank = seed, rank
        self.generator = torch.Generator()
        self.generator.manual_seed(_mixed_seed(seed, rank))

    def _count_tokens(self) -> int:
        if not self.path.is_file():
            raise FileNotFoundError(
                f"Text corpus file {self.path} not found. Create it with:\n"
                f"  {prepare_command(self.path.parent)}\n"
                "(offline default corpus; add --input FILES... for your own text, or --dataset "
                "openwebtext when the Hugging Face hub is reachable)")
        size = self.path.stat().st_size
        itemsize = self.dtype.itemsize
        if size % itemsize:
            raise ValueError(f"{self.path}: {size} bytes is not a whole number of {self.dtype} "
                             "tokens; the file is damaged, rebuild it with "
                             f"{prepare_command(self.path.parent)}")
        num_tokens = size // itemsize
        if num_tokens < self.block_size + 1:
            raise ValueError(
                f"{self.path} holds {num_tokens} tokens, fewer than one window of block_size + 1 "
                f"= {self.block_size + 1}; use a larger corpus (or --val_fraction for val.bin) "
                "or a smaller block_size")
        return num_tokens

    def __len__(self) -> int:
        return self.num_tokens

    def get_batch(self, batch_size: int, device: str | torch.device = "cpu"
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y: long (batch_size, block_size) on `device`; y is x shifted left by one token."""
        data = np.memmap(self.path, dtype=self.dtype, mode="r")
        starts = torch.randint(self.num_tokens - self.block_size, (batch_size,),
                               generator=self.generator).tolist()
        windows = np.stack([data[s:s + self.block_size + 1] for s in starts]).astype(np.int64)
        del data  # drops the map (and its resident pages) before the next batch
        x = torch.from_numpy(np.ascontiguousarray(windows[:, :-1]))  # (B, T)
        y = torch.from_numpy(np.ascontiguousarray(windows[:, 1:]))   # (B, T)
        device = torch.device(device)
        if device.type == "cuda":
            # Pinned host memory lets the copy overlap with the compute already queued.
            return (x.pin_memory().to(device, non_blocking=True),
                    y.pin_memory().to(device, non_blocking=True))
        return x.to(device), y.to(device)


def _mixed_seed(*values: int) -> int:
    """One 64-bit seed from several ints; SeedSequence keeps distinct tuples on distinct streams."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(
        1, dtype=np.uint64)[0])
