"""The reader every trainer shares: random GPT-2 windows from train.bin / val.bin."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

TOKEN_DTYPE = np.uint16  # what prepare.py writes


def prepare_command(out_dir: str | os.PathLike) -> str:
    return f"python text_dataset_maker/prepare.py --out_dir {out_dir}"


class TextCorpus:
    """Random windows of `block_size + 1` tokens from one .bin file of uint16 GPT-2 ids.

    The memory map is reopened for every batch: a map kept open accumulates resident pages of
    a multi-GB file (nanoGPT's remedy). Batches come from this object's own `generator`, seeded
    from (seed, rank), so each DDP rank draws its own stream. The trainers reseed it for every
    step (utils.draw_text_batch), so a resumed run draws the same text without saved state.
    """

    def __init__(self, path: str | os.PathLike, block_size: int, seed: int = 0, rank: int = 0):
        self.path = Path(path)
        self.block_size = int(block_size)
        if self.block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
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
        itemsize = np.dtype(TOKEN_DTYPE).itemsize
        if size % itemsize:
            raise ValueError(f"{self.path}: {size} bytes is not a whole number of uint16 tokens; "
                             f"the file is damaged, rebuild it with "
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
        data = np.memmap(self.path, dtype=TOKEN_DTYPE, mode="r")
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
