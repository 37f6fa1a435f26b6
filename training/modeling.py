"""Wrapping a model for a run: device, torch.compile, DDP, and getting the plain module back."""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from .runtime import Runtime


def maybe_compile(model: nn.Module, enabled: bool, **compile_kwargs) -> nn.Module:
    """torch.compile(model) when `enabled`, the model itself otherwise (compilation is lazy)."""
    if not enabled:
        return model
    return torch.compile(model, **compile_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under any DDP / DataParallel / torch.compile wrappers (for state_dicts)."""
    while True:
        if isinstance(model, (DDP, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


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
