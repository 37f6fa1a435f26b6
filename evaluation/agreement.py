"""Fidelity of a precision, measured: a checkpoint's answers in bf16 (or int8) against its
answers in fp32.

    python -m evaluation agree --model_path runs/instruction/best.pt --data_root data/processed \
        [--tasks TUAB HMC] [--task_dir TASK=DIR] [--split test] [--dtypes bfloat16 int8] \
        [--max_samples N] [--json agreement.json]

The tasks are those the checkpoint carries (a task-file run's definitions included: no task
file needed; the built-in ones for a checkpoint that carries none). Each task's split is
answered once per precision through answering.answer_batch (the weights cast once:
NeuroLM.to_inference_precision) and compared window by window with fp32: the share of windows
with the same answer (generation: the parsed label, an invalid answer included; scoring: the
most probable option) and the largest and mean difference of an option probability. Goals
(issue 26): same answer on at least 99 % of windows, probabilities within 0.02. A table is
printed and, with --json, written.
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

import utils
from downstream_dataset import InstructionDataset
from evaluation.run import evaluate_task, evenly_spaced
from model.precision import INFERENCE_DTYPES
from tasks import (
    BUILTIN_TASKS,
    TASKS_KEY,
    TEXT_MAX_TOKENS,
    TaskError,
    get_task,
    tasks_from_record,
    text_length,
)

SAME_ANSWER_GOAL = 0.99
PROB_DIFF_GOAL = 0.02
COMPARED_DTYPES = ("bfloat16",)


def compare(reference: dict, other: dict) -> dict:
    """Agreement of two evaluate_task predictions of the same windows."""
    ref_probs, probs = np.asarray(reference["probs"]), np.asarray(other["probs"])
    if ref_probs.shape != probs.shape:
        raise ValueError(f"different windows answered: {ref_probs.shape} vs {probs.shape}")
    n = len(ref_probs)
    diff = np.abs(ref_probs - probs)
    same_scoring = float(np.mean(ref_probs.argmax(-1) == probs.argmax(-1))) if n else None
    out = {"windows": n, "same_scoring_answer": same_scoring,
           "max_prob_diff": float(diff.max()) if n else None,
           "mean_prob_diff": float(diff.mean()) if n else None}
    if "generation" in reference and "generation" in other:
        same = [a == b for a, b in zip(reference["generation"], other["generation"])]
        out["same_generated_answer"] = float(np.mean(same)) if n else None
    answers = [v for k, v in out.items() if k.startswith("same_") and v is not None]
    out["meets_goals"] = (bool(n) and min(answers) >= SAME_ANSWER_GOAL
                          and out["max_prob_diff"] <= PROB_DIFF_GOAL)
    return out


def agreement(model, datasets: dict, dtypes=COMPARED_DTYPES, device="cpu",
              batch_size: int = 16, tasks=BUILTIN_TASKS) -> dict:
    """{task: {dtype: compare(fp32, dtype) + seconds}, ...} of an fp32 NeuroLM over datasets
    {task name: dataset} (tasks: the Tasks by name); each other precision answers with its own
    inference copy of the model."""
    device = torch.device(device)
    results: dict = {name: {} for name in datasets}
    reference: dict = {}
    for dtype_name in ("float32", *dtypes):
        copied = model if dtype_name == "float32" else copy.deepcopy(model)
        copied = copied.to_inference_precision(INFERENCE_DTYPES[dtype_name])
        for name, dataset in datasets.items():
            start = time.perf_counter()
            got = evaluate_task(copied, dataset, tasks[name], batch_size, device,
                                progress=False)
            seconds = time.perf_counter() - start
            if dtype_name == "float32":
                reference[name] = got["predictions"]
                results[name]["float32_seconds"] = seconds
            else:
                results[name][dtype_name] = {**compare(reference[name], got["predictions"]),
                                             "seconds": seconds}
        del copied
    return results


def format_table(results: dict) -> str:
    rows = [f"{'task':<12} {'dtype':<9} {'windows':>7} {'same gen':>9} {'same score':>10} "
            f"{'max |dp|':>9} {'mean |dp|':>9} {'time vs fp32':>12}  goals"]

    def pct(v):
        return "n/a" if v is None else f"{100 * v:.1f}%"
    for name, per_dtype in results.items():
        for dtype, r in per_dtype.items():
            if dtype.endswith("_seconds"):
                continue
            ratio = r["seconds"] / per_dtype["float32_seconds"]
            rows.append(f"{name:<12} {dtype:<9} {r['windows']:>7} "
                        f"{pct(r.get('same_generated_answer')):>9} "
                        f"{pct(r['same_scoring_answer']):>10} "
                        f"{r['max_prob_diff'] if r['windows'] else float('nan'):>9.4f} "
                        f"{r['mean_prob_diff'] if r['windows'] else float('nan'):>9.4f} "
                        f"{ratio:>11.2f}x  {'met' if r['meets_goals'] else 'NOT met'}")
    rows.append(f"goals: same answer on >= {100 * SAME_ANSWER_GOAL:g} % of windows, option "
                f"probabilities within {PROB_DIFF_GOAL}")
    return "\n".join(rows)


def add_parser(sub) -> None:
    p = sub.add_parser("agree", help="python -m evaluation agree --model_path CKPT --data_root "
                                     "DIR: bf16 answers against fp32 (" + __name__ + ")")
    p.add_argument("--model_path", required=True)
    p.add_argument("--tokenizer_path", default=None)
    p.add_argument("--data_root", default=None, help="processed data of the built-in tasks")
    p.add_argument("--task_dir", action="append", default=[], metavar="TASK=DIR",
                   help="processed folder of one task (holding its split folders)")
    p.add_argument("--tasks", nargs="+", default=None,
                   help="default: those of --task_dir, else every task found under --data_root")
    p.add_argument("--split", default="test")
    p.add_argument("--dtypes", nargs="+", default=list(COMPARED_DTYPES),
                   choices=[name for name in INFERENCE_DTYPES if name != "float32"])
    p.add_argument("--max_samples", type=int, default=None,
                   help="at most this many windows per task, spread over the split")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", type=Path, default=None)


def folders(args, known=BUILTIN_TASKS) -> dict[str, Path]:
    """{task name: processed folder} of the tasks to compare; `known`: the tasks the checkpoint
    carries (the built-in ones for a checkpoint that carries none)."""
    lowered = {name.lower() for name in known}
    unknown = [name for name in (args.tasks or []) if name.lower() not in lowered]
    unknown += [item.partition("=")[0] for item in args.task_dir
                if item.partition("=")[0].lower() not in lowered]
    if unknown:
        raise utils.UserError(f"unknown task {unknown[0]!r}; the checkpoint knows: "
                              f"{', '.join(known)}")
    chosen = {}
    for item in args.task_dir:
        name, sep, folder = item.partition("=")
        if not sep or not folder:
            raise utils.UserError(f"--task_dir {item!r}: expected TASK=DIR")
        chosen[get_task(name, known).name] = Path(folder)
    if args.data_root is not None:
        for name in args.tasks or known:
            name = get_task(name, known).name
            folder = Path(args.data_root) / get_task(name, known).processed_dir
            if name not in chosen and (args.tasks or (folder / args.split).is_dir()):
                chosen[name] = folder
    if args.tasks:
        chosen = {get_task(name, known).name: chosen[get_task(name, known).name]
                  for name in args.tasks if get_task(name, known).name in chosen}
    if not chosen:
        raise utils.UserError("no task data: give --data_root or --task_dir TASK=DIR")
    for name, folder in chosen.items():
        if not any((folder / args.split).glob("*.pkl")):
            raise utils.UserError(f"{folder / args.split}: no sample files of {name}")
    return chosen


def load_fp32(model_path, tokenizer_path, device):
    """(the fp32 NeuroLM, the tasks its checkpoint carries: those of a task-file run are
    defined there, so its task files are not needed; the built-in ones when it carries none)."""
    from model import CheckpointError
    from model.build import read_neurolm

    try:
        model, ckpt = read_neurolm(model_path, tokenizer_path, map_location=device)
        known = tasks_from_record(ckpt.get(TASKS_KEY), f"--model_path {model_path}")
    except (CheckpointError, TaskError) as err:
        raise utils.UserError(f"cannot load the checkpoint: {err}") from None
    return model, known


def run(args) -> int:
    if args.max_samples is not None and args.max_samples < 1:
        raise utils.UserError(f"--max_samples must be at least 1, got {args.max_samples}")
    if args.batch_size < 1:
        raise utils.UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    for flag, path in (("--model_path", args.model_path),
                       ("--tokenizer_path", args.tokenizer_path)):
        if path is not None and not Path(path).exists():
            raise utils.UserError(f"{flag} {path}: checkpoint not found")
    try:
        device = utils.resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise utils.UserError(str(err)) from None
    model, known = load_fp32(args.model_path, args.tokenizer_path, device)
    text = model.text     # the prompts' ids in the checkpoint's own tokenizer
    datasets = {name: evenly_spaced(InstructionDataset(
        known[name], folder / args.split, text_max_tokens=max(
            TEXT_MAX_TOKENS, text_length(known[name], text)), text=text), args.max_samples)
        for name, folder in folders(args, known).items()}
    results = agreement(model, datasets, args.dtypes, device, args.batch_size, known)
    print(f"{args.model_path}, {args.split} split, {device}, {torch.get_num_threads()} threads")
    print(format_table(results))
    if args.json is not None:
        utils.write_json(args.json, {"model_path": str(args.model_path), "split": args.split,
                                     "device": str(device), "goals": {
                                         "same_answer": SAME_ANSWER_GOAL,
                                         "max_prob_diff": PROB_DIFF_GOAL},
                                     "results": results}, indent=2)
        print(f"saved    {args.json}", file=sys.stderr)
    return 0
