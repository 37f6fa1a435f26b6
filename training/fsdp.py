"""Fully sharded data parallel (FSDP2) for the large LMs, and its checkpoints.

`shard_model(model, runtime, blocks, replicate)` applies `torch.distributed.fsdp.fully_shard` to
every GPT block and then to the whole model: each rank keeps 1/world of the trainable
parameters, their gradients and their AdamW moments, and gathers a block's weights only while
it runs. Modules in `replicate` (the frozen EEG tokenizer) stay whole on every rank: they have no
gradient or optimizer state to shard, and keeping them replicated saves their all-gathers.

Checkpoints: `training_state` / `restore_training_state` (training.checkpoint) call
`full_model_state` / `full_optimizer_state` / `load_full_state` for a sharded model, so a
FSDP run writes the same single-file layout as a DDP or single-process run (the public NeuroLM
keys, the optimizer state keyed by parameter index in group order) and either mode resumes the
other's checkpoints. Rank 0 gathers the whole state to write it: per-rank sharded checkpoint
files (torch.distributed.checkpoint) are not wired in, since nothing here needs them yet.
"""
from __future__ import annotations

import torch
from torch import nn

from .runtime import Runtime


def is_sharded(model: nn.Module) -> bool:
    """Whether fully_shard has been applied to `model` (or to what compile wraps)."""
    from torch.distributed.fsdp import FSDPModule

    model = getattr(model, "_orig_mod", model)
    return isinstance(model, FSDPModule)


def shard_model(model: nn.Module, runtime: Runtime, blocks, replicate=()) -> nn.Module:
    """fully_shard each of `blocks`, then the root; parameters of `replicate` are left whole."""
    from torch.distributed.fsdp import fully_shard

    if not runtime.ddp:
        raise ValueError("--fsdp needs several ranks: start the run with torchrun")
    model = model.to(runtime.device)
    ignored = {p for module in replicate for p in module.parameters()}
    for block in blocks:
        fully_shard(block, ignored_params=ignored or None)
    fully_shard(model, ignored_params=ignored or None)
    return model


def _options(**kwargs):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kwargs)


def full_model_state(model: nn.Module) -> dict:
    """The whole (unsharded) state dict on CPU on rank 0 (empty elsewhere: only rank 0 writes
    checkpoints); a collective: call it on every rank."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def _param_names(model: nn.Module, optimizer) -> list[list[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def full_optimizer_state(model: nn.Module, optimizer) -> dict:
    """The optimizer's whole state in torch's own layout (parameters numbered in group order),
    as optimizer.state_dict() gives it for an unsharded model, on rank 0; a collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    by_name = get_optimizer_state_dict(model, optimizer, options=_options())
    if "param_groups" not in by_name:   # gathered on rank 0 only (the rank that writes)
        return {}
    state, groups, index = {}, [], 0
    for names, group in zip(_param_names(model, optimizer), by_name["param_groups"]):
        ids = []
        for name in names:
            if name in by_name["state"]:
                state[index] = by_name["state"][name]
            ids.append(index)
            index += 1
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
    return {"state": state, "param_groups": groups}


def load_full_state(model: nn.Module, optimizer, model_state: dict,
                    optimizer_state: dict | None, strict: bool = True) -> None:
    """Load a single-file checkpoint's model (and optimizer) state into the sharded model: every
    rank reads the file and keeps its own shards."""
    from torch.distributed.checkpoint.state_dict import (
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    set_model_state_dict(model, model_state, options=_options(strict=strict))
    if optimizer is None or optimizer_state is None:
        return
    names = _param_names(model, optimizer)
    by_name, groups = {}, []
    for group_names, group in zip(names, optimizer_state["param_groups"]):
        for name, i in zip(group_names, group["params"]):
            if i in optimizer_state["state"]:
                by_name[name] = optimizer_state["state"][i]
        groups.append({**{k: v for k, v in group.items() if k != "params"},
                       "params": group_names})
    set_optimizer_state_dict(model, optimizer, {"state": by_name, "param_groups": groups},
                             options=_options())


def grad_norm_value(norm) -> float:
    """clip_grad_norm_'s result as a float (a DTensor under FSDP)."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(torch.as_tensor(norm))
