"""Where and how a training process runs: device, torchrun/DDP, seeds and mixed precision.

Every trainer starts with `runtime = setup_runtime(args.device, args.seed, args.dtype)` and ends
with `cleanup_runtime()`. Under `torchrun` the usual variables (RANK, LOCAL_RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) are read; multi-node works because the process
group is initialised from them (`env://`), never from hard-coded addresses.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from model import precision

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_CHOICES = ("auto", *DTYPES)


@dataclass
class Runtime:
    """One process's view of the run. `amp_dtype` None means plain float32 (no autocast)."""

    device: torch.device
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    ddp: bool = False
    amp_dtype: torch.dtype | None = None
    seed: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device_type(self) -> str:
        return self.device.type

    @property
    def data_seed(self) -> int:
        """Seed for per-rank data randomness (e.g. random text batches): differs on each rank."""
        return self.seed + self.rank

    @property
    def dtype_name(self) -> str:
        return "float32" if self.amp_dtype is None else str(self.amp_dtype).removeprefix("torch.")

    @property
    def needs_grad_scaler(self) -> bool:
        # float16 has too few exponent bits for raw gradients; bfloat16 and float32 do not need it
        return self.amp_dtype == torch.float16

    @property
    def kernels(self) -> str:
        """What besides the seed decides the numbers: CPU runs repeat bit for bit with the same
        intra-op thread count (OMP_NUM_THREADS) on the same vector ISA; a machine with more
        cores (torch's default thread count) or without AVX-512 computes other last bits."""
        if self.device_type == "cuda":
            return f"CUDA {torch.version.cuda}, {torch.cuda.get_device_name(self.device)}"
        return (f"{torch.get_num_threads()} CPU threads, "
                f"{torch.backends.cpu.get_cpu_capability()} kernels")

    def autocast(self):
        """Mixed-precision context for forward passes (a no-op in float32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.amp_dtype)

    def make_grad_scaler(self) -> torch.amp.GradScaler:
        """A GradScaler that is active only for float16 (disabled scalers are harmless no-ops)."""
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_grad_scaler)

    def barrier(self) -> None:
        if self.ddp:
            dist.barrier()

    def mean_across_ranks(self, value: float) -> float:
        """Average a scalar over all ranks (for validation metrics); identity without DDP."""
        if not self.ddp:
            return float(value)
        t = torch.tensor(float(value), dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def print(self, *args, **kwargs) -> None:
        """print() on rank 0 only, so torchrun output is not repeated per process."""
        if self.is_main:
            print(*args, **kwargs, flush=True)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from e


def distributed_env() -> dict:
    """Rank layout from torchrun's variables (a single process when they are absent)."""
    world_size = _env_int("WORLD_SIZE", 1)
    local_world_size = _env_int("LOCAL_WORLD_SIZE", world_size)
    return {
        "rank": _env_int("RANK", 0),
        "local_rank": _env_int("LOCAL_RANK", 0),
        "world_size": world_size,
        "local_world_size": local_world_size,
    }


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """None / "auto": CUDA when available (this process's GPU under torchrun), else CPU."""
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:  # torch's message names neither the flag nor the choices
        raise ValueError(
            f"--device {device!r} is not a device name (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device} was asked for but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    return dev


def resolve_amp_dtype(dtype: str | None, device: torch.device) -> torch.dtype | None:
    """"auto": bf16 where it is native (GPUs that support it, CPUs with bf16 matrix units:
    model.precision), fp16 (+ GradScaler) on older GPUs, fp32 elsewhere."""
    if dtype in (None, "", "auto"):
        return precision.auto_amp_dtype(device)
    if dtype not in DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}; choose one of {', '.join(DTYPE_CHOICES)}")
    if dtype == "bfloat16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError("--dtype bfloat16 was asked for but this GPU does not support it; "
                           "use --dtype float16 (or auto)")
    return None if dtype == "float32" else DTYPES[dtype]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all GPUs) so that runs repeat."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def _glibc_function(name: str):
    """A function of the C library when it is glibc's (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def reuse_freed_memory() -> bool:
    """Have glibc keep freed blocks for reuse instead of handing them back to the OS.

    By default every allocation above 32 MB (an activation of a few windows, a head-sized
    gradient) is a fresh mmap, released when freed: each one is page-faulted in anew, which cost
    as much as the arithmetic on it here (a 45 MB subtraction: 21 ms fresh, 4 ms reused). This
    is what PyTorch's CPU guides get from preloading jemalloc or tcmalloc. Served from the heap
    instead, the B pretraining step in bf16 took 16 s instead of 18.5, at the same peak memory.
    Called once per process on CPU runs; False where the C library has no mallopt (not glibc).
    """
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return False
    # trim only above 2 GB free at the heap's top (mallopt takes an int)
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


def release_freed_memory() -> None:
    """Give the heap's free pages back to the OS (glibc's malloc_trim). Under
    reuse_freed_memory what loading a checkpoint or building a model freed stays resident
    otherwise (1.6 GB more for generation at B); called once the model is ready, before a loop
    whose own allocations the heap then keeps."""
    trim = _glibc_function("malloc_trim")
    if trim is not None:
        trim(0)


def setup_runtime(device: str | None = None, seed: int = 0, dtype: str | None = "auto",
                  backend: str | None = None) -> Runtime:
    """Pick the device, join the torchrun process group if there is one, seed, choose precision.

    The global RNGs get the same `seed` on every rank, so models built before DDP wrapping start
    identical; use `runtime.data_seed` where ranks must draw different data.
    """
    env = distributed_env()
    ddp = env["world_size"] > 1
    dev = resolve_device(device, env["local_rank"])
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        # TF32 matmuls: large speed-up on Ampere+, precision ample for training
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if ddp and not dist.is_initialized():
        backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
        init_kwargs = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend=backend, init_method="env://", **init_kwargs)
    if dev.type == "cpu":
        reuse_freed_memory()
    seed_everything(seed)
    return Runtime(device=dev, rank=env["rank"], local_rank=env["local_rank"],
                   world_size=env["world_size"], local_world_size=env["local_world_size"],
                   ddp=ddp, amp_dtype=resolve_amp_dtype(dtype, dev), seed=seed)


def cleanup_runtime() -> None:
    """Leave the process group (safe to call when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
