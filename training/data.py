"""Data loading that can stop mid-epoch and continue on exactly the same batches.

`make_loader` returns a `ResumableLoader`. Before each epoch call
`loader.set_epoch(epoch, skip_batches=k)`: the epoch's order depends only on (seed, epoch), is
split across DDP ranks like DistributedSampler, and the first k batches are skipped without
being loaded, so a resumed run sees the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch.utils.data.dataloader import default_collate

from .runtime import Runtime


class ResumableSampler(Sampler[int]):
    """Per-epoch permutation seeded by (seed, epoch), sharded by rank, able to skip a prefix.

    Ranks see disjoint interleaved slices of one shared permutation. When the dataset does not
    split evenly, `drop_last=False` repeats the first indices (every rank gets as many samples,
    so DDP ranks never wait on each other); `drop_last=True` drops the tail instead.
    """

    def __init__(self, dataset_len: int, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, drop_last: bool = False):
        if dataset_len <= 0:
            raise ValueError("ResumableSampler: the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"ResumableSampler: rank {rank} outside world size {world_size}")
        self.dataset_len = dataset_len
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        if drop_last:
            self.per_rank = dataset_len // world_size
        else:
            self.per_rank = math.ceil(dataset_len / world_size)
        if self.per_rank == 0:
            raise ValueError(f"ResumableSampler: {dataset_len} samples cannot feed "
                             f"{world_size} ranks")
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip its first `start` samples (of this rank)."""
        if not 0 <= start <= self.per_rank:
            raise ValueError(f"cannot skip {start} samples of an epoch of {self.per_rank}")
        self.epoch = epoch
        self.start = start

    def epoch_indices(self) -> list[int]:
        """This rank's whole epoch, before skipping."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            order = list(range(self.dataset_len))
        total = self.per_rank * self.world_size
        if total > len(order):
            order += order[: total - len(order)]
        return order[:total][self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start


class EpochKeyedSampler(ResumableSampler):
    """Yields (epoch, index): for datasets whose windows depend on the epoch
    (sample_store.MixedStores, `epoch_keyed = True`), read the same in every worker."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, i) for i in self.epoch_indices()[self.start:])


def default_num_workers(local_world_size: int = 1) -> int:
    """A few loader workers per process, sharing the cores with the other local ranks."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(4, cpus // max(1, local_world_size))


class ResumableLoader:
    """A DataLoader plus its ResumableSampler; iterate it like the DataLoader."""

    def __init__(self, loader: DataLoader, sampler: ResumableSampler, batch_size: int,
                 drop_last: bool, seed: int):
        self.loader = loader
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.seed = seed

    @property
    def batches_per_epoch(self) -> int:
        n = self.sampler.per_rank
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Start `epoch` after its first `skip_batches` batches (0 for a fresh epoch)."""
        if not 0 <= skip_batches <= self.batches_per_epoch:
            raise ValueError(f"cannot skip {skip_batches} batches of an epoch of "
                             f"{self.batches_per_epoch}")
        self.sampler.set_epoch(epoch, min(skip_batches * self.batch_size, self.sampler.per_rank))
        # the loader's own generator seeds worker processes: make it depend on the epoch only,
        # and keep the loader from drawing on the global RNG (which the checkpoint restores)
        self.loader.generator.manual_seed(self.seed + epoch)

    def __iter__(self):
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def make_loader(dataset: Dataset, batch_size: int, runtime: Runtime, shuffle: bool = True,
                num_workers: int | None = None, seed: int = 0, drop_last: bool = False,
                collate_fn=None) -> ResumableLoader:
    """A resumable, DDP-aware loader: pinned memory on CUDA, persistent workers when used.

    `num_workers=None` picks `default_num_workers`; 0 loads in the main process.
    """
    sampler_type = EpochKeyedSampler if getattr(dataset, "epoch_keyed", False) else ResumableSampler
    sampler = sampler_type(len(dataset), shuffle=shuffle, seed=seed, rank=runtime.rank,
                               world_size=runtime.world_size, drop_last=drop_last)
    if num_workers is None:
        num_workers = default_num_workers(runtime.local_world_size)
    generator = torch.Generator()
    generator.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        pin_memory=runtime.device.type == "cuda", drop_last=drop_last,
                        persistent_workers=num_workers > 0, collate_fn=collate_fn,
                        generator=generator)
    return ResumableLoader(loader, sampler, batch_size, drop_last, seed)


def resume_position(epoch: int, step_in_epoch: int, batches_per_epoch: int) -> tuple[int, int]:
    """Where to continue: a checkpoint taken after an epoch's last batch starts the next epoch."""
    if step_in_epoch >= batches_per_epoch:
        return epoch + 1, 0
    return epoch, step_in_epoch


def spread_indices(n_items: int, n: int) -> list[int]:
    """At most n indices spread evenly from the first item to the last."""
    if n_items <= n:
        return list(range(n_items))
    return sorted({round(i * (n_items - 1) / (n - 1)) for i in range(n)}) if n > 1 else [0]


def spread_batch(dataset: Dataset, n: int, collate_fn=default_collate):
    """One batch of up to n items spread over the whole dataset: the same on every rank, so
    a data-dependent init computed from it needs no broadcast."""
    return collate_fn([dataset[i] for i in spread_indices(len(dataset), n)])


def collate_tensors(items: list[dict]) -> dict:
    """A batch of items whose tensors have the same shapes in every item (e.g. the tasks of a
    mixed instruction stream): default collation of the tensors, other entries (a per-item
    task name) dropped."""
    return default_collate([{k: v for k, v in item.items() if torch.is_tensor(v)}
                            for item in items])
