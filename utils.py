"""What the stage scripts (and the application modules beside them) take from the training
library `training/`, plus the flags and input checks the stages share.

`training/` is a library that imports nothing of the application and takes typed values
(training.TrainArgs / RunArgs); this module is where the application meets it: names are
re-exported one by one (`__all__` is the API stage scripts may use), the trainers' common data
and LM flags are declared once (`add_eeg_args`, `add_lm_args`, `add_text_args`), and
`train_main` runs a stage with the application's own user-error kinds. Tests import from
`training` directly.

A stage script, in outline::

    args = utils.parse_with_preset(build_parser(), PRESETS, argv)   # --config FILE replays
    def build_stage(args) -> Stage:      # model, optimizer, loader, train_step, validate
        runtime = utils.setup_runtime(args.device, args.seed, args.dtype)
        ...
    utils.train_main(args, build_stage)  # lock --out_dir, run_config.json, resume, fit, plot
"""
from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from dataset import SampleFileError, UnsafePickleError
from model.model import GPT_PRESETS
from model.text_tokenizer import GPT2_TEXT
from text_dataset_maker.corpus import TextCorpus
from training import (
    ITER_NUM_KEY,
    USER_ERROR_EXIT,
    CheckpointError,
    Progress,
    Stage,
    UserError,
    accumulation_context,
    add_public_alias,
    atomic_torch_save,
    atomic_write,
    capture_rng_state,
    center_channel_embedding,
    configure_optimizer,
    draw_text_batch,
    json_safe,
    load_checkpoint,
    make_loader,
    maybe_compile,
    number,
    one_line,
    optimizer_step,
    parse_with_preset,
    prepare_model,
    resolve_device,
    restore_rng_state,
    run_lock,
    save_figure,
    setup_runtime,
    shard_model,
    spread_indices,
    stage_parser,
    step_with_mean_log,
    to_device,
    to_plain,
    unwrap,
    validation_batches,
    write_json,
)
from training import run_main as run_guarded
from training import train_main as run_training

__all__ = [
    "accumulation_context", "add_eeg_args", "add_lm_args", "add_public_alias", "add_text_args",
    "atomic_torch_save", "atomic_write", "capture_rng_state", "center_channel_embedding",
    "check_text_block", "CheckpointError", "configure_optimizer",
    "draw_text_batch", "ITER_NUM_KEY", "json_safe", "load_checkpoint", "make_loader",
    "maybe_compile", "number", "optimizer_step", "parse_with_preset", "prepare_model",
    "Progress", "reading", "resolve_device", "restore_rng_state", "run_config",
    "run_main", "run_lock", "save_figure", "setup_runtime", "shard_model",
    "spread_indices", "Stage", "stage_parser", "step_with_mean_log", "text_corpus", "to_device",
    "train_main", "unwrap", "USER_ERROR_EXIT", "validation_batches", "UserError", "write_json",
]

# what reading a sample the user pointed at raises: one line, exit 2
APP_USER_ERRORS = (SampleFileError, UnsafePickleError)


# ----------------------------------------------------------------------------- shared flags

def add_eeg_args(g) -> None:
    """The EEG-window flags of train_vq.py and train_pretrain.py."""
    g.add_argument("--block_size", type=number(int, 1, 1 << 20),
                   help="EEG tokens per sample (channels x seconds), padded"
                        " (preset default: %(default)s)")
    g.add_argument("--val_max_batches", type=number(int, 1, 1 << 30), default=None,
                   help="validate on at most this many batches per rank (default: all)")


def add_lm_args(g, presets, new_lm_only: bool = False) -> None:
    """--preset, --model, --init_from, --activation_checkpointing: the LM of train_pretrain.py
    and train_instruction.py (`new_lm_only`: they shape a new LM only, not a --model_path)."""
    new = "a new LM " if new_lm_only else "the LM "
    g.add_argument("--preset", choices=sorted(presets), default="paper",
                   help=f"default batch sizes and schedule, and the shape of {new}(tiny: 2 "
                        "layers x 64; paper: the --model shape) (default: %(default)s)")
    g.add_argument("--model", choices=sorted(GPT_PRESETS), default="gpt2",
                   help=f"GPT-2 shape of {new}with --preset paper: gpt2 = NeuroLM-B, "
                        "gpt2-medium = -L, gpt2-xl = -XL (default: %(default)s)")
    g.add_argument("--init_from", default="scratch",
                   help=f"{'without --model_path: ' if new_lm_only else ''}'scratch' or a local "
                        "Hugging Face GPT-2 folder / weights file (default: %(default)s)")
    g.add_argument("--activation_checkpointing", action="store_true",
                   help="recompute each LM block in the backward pass: much less activation "
                        "memory for about one more forward per step")


def add_text_args(g, required: bool = True, can_turn_off: bool = False) -> None:
    """The text replay (or, for the tokenizer, domain) batches every trainer draws."""
    g.add_argument("--text_dir", required=required, default=None,
                   help="folder with train.bin of GPT-2 ids "
                        "(python text_dataset_maker/prepare.py --out_dir DIR)")
    g.add_argument("--text_batch_size", type=number(int, 0 if can_turn_off else 1, 1 << 20),
                   help="text sequences per micro-step"
                        + ("; 0 turns the text replay off" if can_turn_off else "")
                        + " (preset default: %(default)s)")
    g.add_argument("--text_block_size", type=number(int, 1, 1 << 20),
                   help="tokens per text sequence, at most the LM's positions"
                        " (preset default: %(default)s)")


# ----------------------------------------------------------------------------- running

@contextlib.contextmanager
def reading(flag: str):
    """Reading what `flag` names (a folder, a corpus, weights): a missing or damaged input is
    one UserError naming the flag. Wrap only the call that reads it, so bugs elsewhere keep
    their traceback."""
    try:
        yield
    except (CheckpointError, UserError, *APP_USER_ERRORS):
        raise       # already one line naming its file (a --tokenizer_path, a sample)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
            ValueError, KeyError) as error:
        raise UserError(f"{flag}: {one_line(error)}") from error


def text_corpus(args: argparse.Namespace, rank: int, text=None) -> TextCorpus:
    """The --text_dir train.bin windows of --text_block_size tokens this rank draws from; a
    corpus written by another tokenizer than `text` (the model's, model.text; None: GPT-2's) is
    refused."""
    with reading("--text_dir"):
        return TextCorpus(Path(args.text_dir) / "train.bin", args.text_block_size,
                          seed=args.seed, rank=rank, text=GPT2_TEXT if text is None else text)


def check_text_block(args: argparse.Namespace, model) -> None:
    """--text_block_size must fit the LM's positions (when text batches are drawn at all)."""
    positions = model.config.block_size
    if args.text_batch_size > 0 and args.text_block_size > positions:
        raise UserError(f"--text_block_size {args.text_block_size} exceeds the LM's "
                        f"{positions} positions")


def run_config(args: argparse.Namespace) -> dict:
    """The run's fully resolved flags as plain values: run_config.json, checkpoints, results."""
    return to_plain({k: v for k, v in vars(args).items() if k != "config"})


def train_main(args: argparse.Namespace, build_stage):
    """Run the stage `build_stage(args)` makes (training.train_main: one line and exit 2 for a
    user mistake); returns the newest checkpoint on the main rank."""
    return run_training(lambda: build_stage(args), run_config(args),
                        user_errors=APP_USER_ERRORS)


def run_main(work):
    """`work()` as a command's whole run: a user mistake is one line and exit 2."""
    return run_guarded(work, APP_USER_ERRORS)
