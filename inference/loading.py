"""A trained NeuroLM ready to answer, with what its checkpoint says about its tasks: their
definitions, calibration temperatures and training profile."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from model.precision import resolve_inference_dtype
from tasks import (
    BUILTIN_TASKS,
    TASKS_KEY,
    Task,
    TaskError,
    get_task,
    read_task_file,
    tasks_from_record,
)
from utils import UserError, release_freed_memory, resolve_device, reuse_freed_memory

from .ood import TRAINING_PROFILE_KEY

CALIBRATION_KEY = "calibration"            # {task: {"temperature": T, ...}} (helper eval)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tasks: dict = field(default_factory=dict)          # name -> Task
    calibration: dict = field(default_factory=dict)    # name -> {"temperature": ...}
    training_profile: dict = field(default_factory=dict)
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32                 # what the weights are held in
    model_path: str = ""
    tokenizer_path: str | None = None

    def temperature(self, task: Task) -> float | None:
        value = (self.calibration.get(task.name) or {}).get("temperature")
        return float(value) if value is not None else None


def _stored_tasks(entries, model_path) -> dict:
    """The tasks the checkpoint carries (none: a public or older checkpoint)."""
    if not entries:
        return {}
    try:
        return tasks_from_record(entries, f"--model_path {model_path}")
    except TaskError as err:
        raise UserError(str(err)) from None


def load_model(model_path, tokenizer_path=None, device="auto", dtype="auto",
               base_folder=None) -> LoadedModel:
    """An eval-mode NeuroLM on `device` ("auto": CUDA when present) with its weights in `dtype`
    ("auto": bf16 where it is native, else fp32: model/precision.py); every way a checkpoint
    can be wrong becomes one UserError naming the file. base_folder: where the base model of a
    LoRA checkpoint is now, when it moved."""
    from model import CheckpointError
    from model.backbone import BackboneError
    from model.build import read_neurolm
    from model.export import is_exported

    try:
        device = device if isinstance(device, torch.device) else resolve_device(device)
        dtype = resolve_inference_dtype(dtype, device)
    except (RuntimeError, ValueError) as err:
        raise UserError(str(err)) from None
    if device.type == "cpu":
        reuse_freed_memory()
    for flag, path in (("--model_path", model_path), ("--tokenizer_path", tokenizer_path)):
        if path is not None and not (Path(path).is_file() or is_exported(path)):
            raise UserError(f"{flag} {path}: checkpoint not found")
    try:
        model, ckpt = read_neurolm(model_path, tokenizer_path, device, base_folder)
    except (CheckpointError, BackboneError) as err:
        raise UserError(f"cannot load the checkpoint: {err}") from None
    model = model.to_inference_precision(dtype)
    extras = {k: ckpt.get(k) for k in (CALIBRATION_KEY, TRAINING_PROFILE_KEY, TASKS_KEY)}
    del ckpt   # the weights now live in the model
    release_freed_memory()
    return LoadedModel(model, {**BUILTIN_TASKS, **_stored_tasks(extras[TASKS_KEY], model_path)},
                       dict(extras[CALIBRATION_KEY] or {}),
                       dict(extras[TRAINING_PROFILE_KEY] or {}), device, dtype, str(model_path),
                       None if tokenizer_path is None else str(tokenizer_path))


def resolve_task(task, loaded: LoadedModel | None = None, task_file: str | None = None) -> Task:
    """A Task from a Task, a name (built-in or stored in the checkpoint), a task file, or None
    (the task of --task_file, else the checkpoint's only stored task)."""
    if isinstance(task, Task):
        return task
    custom = None
    if task_file is not None:
        try:
            custom = read_task_file(task_file)
        except TaskError as err:
            raise UserError(str(err)) from None
    known = dict(BUILTIN_TASKS) if loaded is None else dict(loaded.tasks)
    if custom is not None:
        known[custom.name] = custom
    if task is None:
        if custom is not None:
            return custom
        stored = [name for name in known if name not in BUILTIN_TASKS]
        if len(stored) == 1:
            return known[stored[0]]
        raise UserError("give --task (a task name, e.g. TUAB) or --task_file")
    if str(task).endswith((".toml", ".json")) and Path(task).is_file():
        return resolve_task(None, loaded, str(task))
    try:
        return get_task(task, known)
    except KeyError:
        raise UserError(f"unknown task {task!r}; known tasks: {', '.join(known)}") from None
