r"""Stage 4: multi-task instruction tuning and evaluation of NeuroLM.

    python train_instruction.py --model_path runs/pretrain/last.pt --data_root data/processed \
        --text_dir data/text --out_dir runs/instruction [--tasks TUAB HMC] [--preset tiny]
    python train_instruction.py --init_from scratch --tokenizer_path runs/vq/last.pt ...
    python train_instruction.py --eval_only --model_path runs/instruction/best.pt --data_root ...

Data: every task of --tasks (default all six) reads the output of its prepare script,
`<data_root>/<processed_dir>/{train,val,test}/*.pkl` (`--task_dir TUAB=/elsewhere` overrides one).
The train splits of all tasks are mixed in one shuffled stream; every optimizer step adds the
LM loss of a batch of `<text_dir>/train.bin` windows, so the model keeps its language ability:
loss = answer-token CE + text CE. The VQ encoder inside NeuroLM stays frozen.

Model: --model_path loads a NeuroLM checkpoint (ours or the public code's; --tokenizer_path is the
VQ checkpoint when it lacks the encoder's shape or weights); else --init_from builds a new LM as
train_pretrain.py does. --lora_rank R: LoRA adapters (a LoRA --model_path continues its own).

Evaluation, after every --eval_every_epochs epochs and at the end (rank 0): every task on its
validation and test splits, in both modes (greedy generation + strict answer parser with its
invalid rate; option scoring with class probabilities). Writes into --out_dir: results.json,
report.md / report.html, val_balanced_accuracy.png, best.pt beside last.pt / ckpt-*.pt (the
public NeuroLM layout), metrics.jsonl, curves.png, run_config.json. best.pt is the checkpoint
with the best mean validation balanced accuracy over the tasks and both modes, among those whose
generated answers are mostly valid (at most half invalid on every task); ties go to the later
one. Resume as the other trainers (--resume auto, mid-epoch exact).

Presets (explicit flags win; configs/instruction_*.json hold the paper's):
  paper: --model shape (default gpt2) when built here, 64 EEG-text pairs + 16 text sequences of
         1024 per step, AdamW lr 5e-4 -> 5e-5, betas (0.9, 0.95), wd 0.1, clip 1.0, 5 epochs,
         warm-up 10 % of the steps.
  tiny:  (new LM) GPT 2 layers x 64 as train_pretrain.py --preset tiny; 16 pairs + 2 text
         sequences of 64 per step, lr 1e-3 -> 1e-4, 5 epochs, warm-up 10 %.
"""
from __future__ import annotations

import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)

# isort: split

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import ConcatDataset

import utils
from downstream_dataset import EEG_MAX_TOKENS, TEXT_MAX_TOKENS, InstructionDataset
from evaluation import (
    EVAL_MODES,
    TrainingEvaluation,
    evaluate_tasks,
    evaluation_sets,
    format_table,
    write_results,
)
from inference.ood import TRAINING_PROFILE_KEY, profile_of_folders
from model import NeuroLM, load_neurolm, neurolm_layout
from report import REPORT_NAME
from tasks import (
    BUILTIN_TASKS,
    TASKS_KEY,
    TaskError,
    get_task,
    run_tasks,
    task_records,
    tasks_from_record,
)
from utils import Stage, draw_text_batch, to_device

PRESETS = {
    "paper": dict(batch_size=64, text_batch_size=16, text_block_size=1024, lr=5e-4, min_lr=5e-5,
                  max_epochs=5, beta1=0.9, beta2=0.95, weight_decay=0.1, grad_clip=1.0),
    "tiny": dict(batch_size=16, text_batch_size=2, text_block_size=64, lr=1e-3, min_lr=1e-4,
                 max_epochs=5, beta1=0.9, beta2=0.95, weight_decay=0.1, grad_clip=1.0),
}
WARMUP_FRACTION = 0.1          # the paper's warm-up: 10 % of the steps
PLOTTED = ("loss", "answer_loss", "text_loss", "val_mean_balanced_accuracy")


# ----------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = utils.stage_parser(__doc__, "train_instruction.py")
    g = parser.add_argument_group("model")
    g.add_argument("--model_path", default=None,
                   help="NeuroLM checkpoint to start from (train_pretrain.py's, this script's or "
                        "the public code's); required with --eval_only")
    g.add_argument("--tokenizer_path", default=None,
                   help="VQ checkpoint (train_vq.py): the encoder of a new LM, or the encoder's "
                        "shape/weights when --model_path lacks them")
    utils.add_lm_args(g, PRESETS, new_lm_only=True)

    g = parser.add_argument_group("data")
    g.add_argument("--data_root", default=None,
                   help="folder holding one processed folder per task (" + ", ".join(
                            f"{t.name}->{t.processed_dir}" for t in BUILTIN_TASKS.values()) + ")")
    g.add_argument("--task_dir", action="append", default=[], metavar="TASK=DIR",
                   help="processed folder of one task, overriding --data_root (repeatable)")
    g.add_argument("--tasks", nargs="+", default=None,
                   help="tasks to train and evaluate (default: all six built-in ones, or only "
                        "the --task_file tasks when some are given)")
    g.add_argument("--task_file", nargs="+", default=[], metavar="FILE",
                   help="your own task(s): TOML/JSON files (README 'Your own data and tasks'), "
                        "trained and evaluated with the --tasks ones; data from their data_dir")
    utils.add_text_args(g, required=False, can_turn_off=True)
    g.add_argument("--eeg_max_tokens", type=utils.number(int, 1, 1 << 20),
                   default=EEG_MAX_TOKENS,
                   help="EEG tokens per sequence, padded; longer samples lose trailing seconds "
                        "(default: %(default)s)")
    g.add_argument("--text_max_tokens", type=utils.number(int, 2, 1 << 20), default=None,
                   help=f"text tokens per sequence, padded (default: {TEXT_MAX_TOKENS}, or the "
                        "tasks' longest text in the model's tokenizer when longer)")
    g.add_argument("--warmup_fraction", type=utils.number(float, 0.0, 1.0),
                   default=WARMUP_FRACTION,
                   help="warm-up as a fraction of all steps, unless --warmup_steps or "
                        "--warmup_epochs is given (default: %(default)s)")

    g = parser.add_argument_group("evaluation")
    g.add_argument("--eval_only", action="store_true",
                   help="evaluate --model_path on validation and test and write results.json, "
                        "without training")
    g.add_argument("--base_folder", help="a LoRA --model_path's moved base folder (checked)")
    g.add_argument("--eval_every_epochs", type=utils.number(int, 1, 1 << 20), default=1,
                   help="evaluate after every N epochs; the end of training is always "
                        "evaluated (default: %(default)s)")
    g.add_argument("--eval_modes", nargs="+", choices=EVAL_MODES, default=list(EVAL_MODES),
                   help="generation (greedy + strict parser) and/or scoring (option "
                        "log-likelihoods) (default: both)")
    g.add_argument("--eval_batch_size", type=utils.number(int, 1, 1 << 20), default=16,
                   help="samples per evaluation batch (default: %(default)s)")
    g.add_argument("--eval_max_rows", type=utils.number(int, 1, 1 << 20), default=32,
                   help="option scoring: at most this many (sample, option) rows per forward, "
                        "bounding the memory of the full-vocabulary logits (default: %(default)s)")
    g.add_argument("--eval_max_samples", type=utils.number(int, 1, 1 << 30), default=None,
                   help="evaluate at most this many samples per task and split, spread evenly "
                        "over the sorted files (default: all)")
    # the public code's names (its README's commands)
    utils.add_public_alias(parser, "--NeuroLM_path", "--model_path")
    utils.add_public_alias(parser, "--dataset_dir", "--data_root")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    # warmup_epochs None = "not given", so --warmup_fraction applies unless warm-up is explicit
    args = utils.parse_with_preset(parser, PRESETS, argv, warmup_epochs=None)
    if args.eval_only and args.model_path is None:
        parser.error("--eval_only needs --model_path")
    if args.eval_only and args.lora_rank:   # adapters are trained, never added for evaluation
        parser.error("--lora_rank with --eval_only: evaluation takes --model_path as it is")
    try:
        args.tasks = list(run_task_set(args))
    except (TaskError, utils.CheckpointError) as err:
        parser.error(str(err))
    if args.model_path is None and args.tokenizer_path is None:
        parser.error("a new LM (no --model_path) needs --tokenizer_path, the VQ checkpoint")
    if not args.eval_only and args.text_batch_size > 0 and args.text_dir is None:
        parser.error("--text_dir is required for the text replay loss "
                     "(or turn it off with --text_batch_size 0)")
    return args


# ----------------------------------------------------------------------------- data

def run_task_set(args) -> dict:
    """The run's tasks by name: --tasks among the built-in ones, the --task_file definitions
    and, with --eval_only, those the checkpoint carries (its own tasks by default). They travel
    with the run in results.json and every checkpoint."""
    stored = None
    if args.eval_only:
        entries = utils.load_checkpoint(args.model_path).get(TASKS_KEY)
        stored = tasks_from_record(entries, args.model_path) if entries else None
    return run_tasks(args.tasks, args.task_file, stored)


def task_folders(args, tasks: dict | None = None) -> dict[str, Path]:
    """Processed folder of every task of --tasks; missing ones are one error naming them all."""
    tasks = run_task_set(args) if tasks is None else tasks
    overrides = {}
    for item in args.task_dir:
        name, sep, folder = item.partition("=")
        if not sep or not folder:
            raise utils.UserError(f"--task_dir {item!r}: expected TASK=DIR")
        overrides[get_task(name, tasks).name] = Path(folder)
    folders, missing = {}, []
    for name, task in tasks.items():
        if name in overrides:
            folder = overrides[name]
        elif task.source != "built-in":   # a task file's data_dir
            if not task.processed_dir:
                missing.append(f"{name} (its task file {task.source} has no data_dir; "
                               f"or give --task_dir {name}=DIR)")
                continue
            folder = Path(task.processed_dir)
        elif args.data_root is not None:
            folder = Path(args.data_root) / task.processed_dir
        else:
            missing.append(f"{name} (no --data_root or --task_dir {name}=DIR)")
            continue
        check_task_of_folder(name, folder)
        absent = [s for s in task.splits if not any((folder / s).glob("*.pkl"))]
        if absent:
            missing.append(f"{name}: {folder} has no *.pkl in {', '.join(absent)}")
        folders[name] = folder
    if missing:
        raise utils.UserError("processed data missing for task(s): " + "; ".join(missing)
                              + " (run dataset_maker/prepare_<TASK>.py --out_dir DIR, or "
                              "leave the task out of --tasks)")
    return folders


def check_task_of_folder(task: str, folder: Path) -> None:
    """The prepare script's splits.json names its dataset: another task's samples are refused
    (their labels mean other classes)."""
    splits = folder / "splits.json"
    if not splits.is_file():
        return
    try:
        made_for = json.loads(splits.read_text()).get("dataset")
    except (OSError, ValueError, AttributeError):
        return
    # "custom": prepare_custom.py without a task file, class numbers of any task
    if made_for is not None and made_for not in (task, "custom"):
        raise utils.UserError(f"{folder} holds {made_for} samples (its splits.json), not {task}: "
                              f"give --task_dir {task}=DIR the output of prepare_{task}.py")


# ----------------------------------------------------------------------------- model

def build_model(args, runtime) -> NeuroLM:
    """NeuroLM from --model_path, or a new LM around the --tokenizer_path encoder; with LoRA
    adapters when --lora_rank asks or the checkpoint has them (utils.add_adapters)."""
    with utils.reading("--model_path"):   # (new_lm names --init_from itself)
        model = (utils.new_lm(args)[0] if args.model_path is None else load_neurolm(
            args.model_path, args.tokenizer_path, runtime.device, args.base_folder).train())
    utils.add_adapters(model, args, runtime)
    return model.to(runtime.device)


# ----------------------------------------------------------------------------- stage

def build_stage(args) -> Stage:
    """The training Stage that utils.train_main runs; evaluation.TrainingEvaluation is its
    validate hook (results.json, best.pt, the validation plot, the printed table)."""
    runtime = utils.setup_runtime(args.device, args.seed, args.dtype)
    tasks = run_task_set(args)
    folders = task_folders(args, tasks)
    raw = build_model(args, runtime)
    utils.size_text(args, tasks, raw.text)
    raw.backbone.set_recompute(args.activation_checkpointing)
    utils.check_text_block(args, raw)
    model = utils.prepare_model(raw, runtime, compile=args.compile)
    optimizer = utils.configure_optimizer(raw, args.lr, args.weight_decay,
                                          (args.beta1, args.beta2), runtime.device_type)
    scaler = runtime.make_grad_scaler()
    train_set = ConcatDataset([InstructionDataset(tasks[name], folder / "train",
                                                  args.eeg_max_tokens, args.text_max_tokens,
                                                  text=raw.text)
                               for name, folder in folders.items()])
    if args.model_path is None:   # a new LM: see utils.center_channel_embedding
        utils.center_channel_embedding(raw, train_set, runtime.device)
    loader = utils.make_loader(train_set, args.batch_size, runtime, shuffle=True,
                               num_workers=args.num_workers, seed=args.seed, drop_last=True,
                               collate_fn=utils.collate_tensors)
    eval_sets = (evaluation_sets(folders, args.eval_max_samples, args.eeg_max_tokens,
                                 args.text_max_tokens, tasks, raw.text)
                 if runtime.is_main else {})
    evaluate = TrainingEvaluation(model, eval_sets, runtime, args.out_dir, list(tasks.values()),
                                  every_epochs=args.eval_every_epochs,
                                  batch_size=args.eval_batch_size, modes=args.eval_modes,
                                  max_rows=args.eval_max_rows, config=utils.run_config(args))
    text = (utils.text_corpus(args, runtime.rank, text=raw.text) if args.text_batch_size > 0
            else None)

    def train_step(batches, iter_num, total_steps):
        # text windows, then EEG-text pairs, as separate micro-steps: DDP syncs only on the very
        # last backward, which must reach every trainable parameter (a text-only forward leaves
        # the EEG projection and channel embedding without gradient), so the pairs go last
        per_batch = 2 if text is not None else 1
        n_micro = per_batch * len(batches)
        logs = []
        for i, batch in enumerate(batches):
            entry = {}
            if text is not None:
                x_text, y_text = draw_text_batch(text, args.text_batch_size, runtime.device,
                                                 iter_num * len(batches) + i)
                with utils.accumulation_context(model, per_batch * i, n_micro), \
                        runtime.autocast():
                    loss_text, text_log, _ = model(x_text=x_text, y_text=y_text,
                                                   return_logits=False)
                    scaler.scale(loss_text / len(batches)).backward()
                entry["text_loss"] = text_log["text_loss"]
            b = to_device(batch, runtime.device)
            with utils.accumulation_context(model, per_batch * (i + 1) - 1, n_micro), \
                    runtime.autocast():
                loss, log, _ = model(x_eeg=b["x_eeg"], x_text=b["x_text"], y_text=b["y_text"],
                                     input_chans=b["input_chans"], input_time=b["input_time"],
                                     input_mask=b["input_mask"], return_logits=False)
                scaler.scale(loss / len(batches)).backward()
            entry["answer_loss"] = log["text_loss"]
            entry["loss"] = entry["answer_loss"] + entry.get("text_loss", 0.0)
            logs.append(entry)
        return utils.step_with_mean_log(optimizer, scaler, args.grad_clip, logs, step=iter_num)

    profile = {TRAINING_PROFILE_KEY: profile_of_folders(folders, tasks)}  # inference's OOD warnings
    return Stage("NeuroLM-instruction", runtime, model, optimizer, scaler, loader, train_step,
                 evaluate, lambda: {**neurolm_layout(raw), **evaluate.checkpoint_entries(),
                                    TASKS_KEY: task_records(tasks), **profile}, PLOTTED)


def evaluate_only(args) -> dict | None:
    """Evaluate --model_path on every task's validation and test splits; results.json."""
    runtime = utils.setup_runtime(args.device, args.seed, args.dtype)
    results = None
    if runtime.is_main:
        with utils.run_lock(args.out_dir):
            tasks = run_task_set(args)
            with utils.reading("--model_path"):
                model = load_neurolm(args.model_path, args.tokenizer_path, runtime.device,
                                     args.base_folder)
            utils.size_text(args, tasks, model.text)
            eval_sets = evaluation_sets(task_folders(args, tasks), args.eval_max_samples,
                                        args.eeg_max_tokens, args.text_max_tokens, tasks,
                                        model.text)
            if runtime.amp_dtype == torch.bfloat16:   # answering needs no fp32 master weights
                model = model.to_inference_precision(torch.bfloat16)
            results = evaluate_tasks(model, eval_sets, runtime, args.eval_batch_size,
                                     args.eval_modes, args.eval_max_rows)
            iter_num = utils.load_checkpoint(args.model_path).get(utils.ITER_NUM_KEY)
            path = write_results(args.out_dir, list(tasks.values()), args.model_path, iter_num,
                                 results, config=utils.run_config(args))
        runtime.print(format_table(results, tasks))
        runtime.print(f"report: {path.parent / REPORT_NAME}")
    runtime.barrier()
    return results


def main(argv=None):
    """Train (returns the newest checkpoint on rank 0) or, with --eval_only, evaluate (returns
    the results on rank 0)."""
    args = parse_args(argv)
    if not args.eval_only:
        return utils.train_main(args, build_stage)
    return utils.run_main(lambda: evaluate_only(args))


if __name__ == "__main__":
    main(sys.argv[1:])
