"""Preparing a model for a run: a data-dependent init, device, torch.compile, DDP.

The plain module under the wrappers is `model.checkpoints.unwrap` (exported here as well).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from .data import spread_batch
from .loop import to_device
from .runtime import Runtime

CENTERING_SAMPLES = 32   # recordings whose EEG features start a new LM's channel embedding


def maybe_compile(model: nn.Module, enabled: bool, **compile_kwargs) -> nn.Module:
    """torch.compile(model) when `enabled`, the model itself otherwise (compilation is lazy)."""
    if not enabled:
        return model
    return torch.compile(model, **compile_kwargs)


@torch.no_grad()
def center_channel_embedding(model: nn.Module, dataset, device) -> None:
    """NeuroLM.center_channel_embedding on CENTERING_SAMPLES recordings spread over `dataset`
    (items with x_eeg, input_chans, input_time, input_mask), the same on every rank, so no
    broadcast is needed. For a new LM only; a resumed run then loads its own weights over it."""
    look = to_device(spread_batch(dataset, CENTERING_SAMPLES), device)
    model.center_channel_embedding(look["x_eeg"], look["input_chans"], look["input_time"],
                                   look["input_mask"])


def find_ddp(model: nn.Module) -> DDP | None:
    """The DDP wrapper inside `model` (compile may sit outside it), or None."""
    while True:
        if isinstance(model, DDP):
            return model
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.DataParallel):
            model = model.module
        else:
            return None


def prepare_model(model: nn.Module, runtime: Runtime, compile: bool = False,
                  **ddp_kwargs) -> nn.Module:
    """Move to the runtime's device, optionally compile, and wrap in DDP under torchrun."""
    model = model.to(runtime.device)
    model = maybe_compile(model, compile)
    if runtime.ddp:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        model = DDP(model, device_ids=device_ids, **ddp_kwargs)
    return model


def accumulation_context(model: nn.Module, micro_step: int, grad_accum: int):
    """Skip DDP's gradient all-reduce on all but the last micro-step of an accumulation.

    DDP decides at forward time whether the backward will sync, so wrap both:
    `with accumulation_context(model, i, grad_accum): loss = model(x); loss.backward()`
    for `i in range(grad_accum)`. Without DDP it does nothing.
    """
    ddp = find_ddp(model)
    if ddp is None or micro_step == grad_accum - 1:
        return contextlib.nullcontext()
    return ddp.no_sync()
