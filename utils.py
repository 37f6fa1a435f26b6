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
import os
import shutil
from pathlib import Path

from dataset import SampleFileError, UnsafePickleError
from model import new_neurolm
from model.backbone import BackboneError
from model.hf_backbone import ATTENTION_IMPLEMENTATIONS, SUPPORTED_ARCHITECTURES
from model.hf_checkpoint import base_identity, is_hf_neurolm, is_lora, note_base
from model.lora import DEFAULT_TARGETS, LoraSettings, add_lora
from model.model import GPT_PRESETS
from model.text_tokenizer import GPT2_TEXT
from tasks import TEXT_MAX_TOKENS, text_length
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
    collate_tensors,
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
    release_freed_memory,
    resolve_device,
    restore_rng_state,
    reuse_freed_memory,
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
    "accumulation_context", "add_adapters", "add_eeg_args", "add_lm_args", "add_public_alias",
    "add_text_args",
    "atomic_torch_save", "atomic_write", "capture_rng_state", "center_channel_embedding",
    "check_text_block", "CheckpointError", "collate_tensors", "configure_optimizer",
    "draw_text_batch", "ITER_NUM_KEY", "json_safe", "load_checkpoint", "make_loader",
    "maybe_compile", "new_lm", "number", "optimizer_step", "parse_with_preset", "prepare_model",
    "Progress", "reading", "release_freed_memory", "resolve_device", "restore_rng_state",
    "reuse_freed_memory", "run_config",
    "run_main", "run_lock", "save_figure", "setup_runtime", "shard_model", "size_text",
    "spread_indices", "Stage", "stage_parser", "step_with_mean_log", "text_corpus", "to_device",
    "train_main", "unwrap", "USER_ERROR_EXIT", "validation_batches", "UserError", "write_json",
]

# where a LoRA run on a full --model_path keeps its frozen base LM (utils.add_adapters)
BASE_LM_DIR = "base_lm"
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


def _lora_targets_help() -> str:
    by_targets: dict[tuple, list[str]] = {}
    for arch, targets in DEFAULT_TARGETS.items():
        by_targets.setdefault(targets, []).append(arch)
    return "; ".join(f"{'/'.join(archs)}: {' '.join(t)}" for t, archs in by_targets.items())


def _dropout(text):
    value = number(float, 0.0, 1.0)(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be < 1, got {text!r}")
    return value


def add_lm_args(g, presets, new_lm_only: bool = False) -> None:
    """--preset, --model, --init_from, --attn_implementation, --activation_checkpointing and
    the --lora_* flags: the LM of train_pretrain.py and train_instruction.py (`new_lm_only`:
    they shape a new LM only, not a --model_path)."""
    new = "a new LM " if new_lm_only else "the LM "
    g.add_argument("--preset", choices=sorted(presets), default="paper",
                   help=f"default batch sizes and schedule, and the shape of {new}(tiny: 2 "
                        "layers x 64; paper: the --model shape) (default: %(default)s)")
    g.add_argument("--model", choices=sorted(GPT_PRESETS), default="gpt2",
                   help=f"GPT-2 shape of {new}with --preset paper: gpt2 = NeuroLM-B, "
                        "gpt2-medium = -L, gpt2-xl = -XL (default: %(default)s)")
    g.add_argument("--init_from", default="scratch",
                   help=f"{'without --model_path: ' if new_lm_only else ''}'scratch' (the "
                        "native GPT of --preset/--model) or a local Hugging Face causal-LM "
                        "folder (config.json, weights, tokenizer files; read from disk, "
                        "nothing is downloaded) of one of these architectures: "
                        + ", ".join(SUPPORTED_ARCHITECTURES.values()) + ". Its tokenizer "
                        "becomes the text side (the --text_dir corpus must be tokenised with "
                        "it); an OpenAI GPT-2 folder (50257 words) loads into the native GPT "
                        "unless --lora_rank is given (default: %(default)s)")
    g.add_argument("--attn_implementation", choices=ATTENTION_IMPLEMENTATIONS, default="sdpa",
                   help="attention of a Hugging Face backbone (only these apply NeuroLM's mask)"
                        " (default: %(default)s)")
    g.add_argument("--activation_checkpointing", action="store_true",
                   help="recompute each LM block in the backward pass: much less activation "
                        "memory for about one more forward per step")
    g.add_argument("--lora_rank", type=number(int, 0, 4096), default=0,
                   help="LoRA (peft) of this rank on a Hugging Face backbone: its weights stay "
                        "frozen, the adapters and the EEG side (projection, channel embedding, "
                        "EEG head) train; a --model_path with adapters continues them. 0: full "
                        "fine-tuning (default: %(default)s)")
    g.add_argument("--lora_alpha", type=number(float, 0.0, 1e6, low_open=True), default=None,
                   help="LoRA scale alpha (the update is alpha / rank x B A) (default: "
                        "2 x --lora_rank)")
    g.add_argument("--lora_dropout", type=_dropout, default=0.05,
                   help="dropout on the adapters' input, in [0, 1) (default: %(default)s)")
    g.add_argument("--lora_targets", nargs="+", default=None, metavar="MODULE",
                   help="module names that get adapters (default per architecture: "
                        + _lora_targets_help() + ")")


def add_text_args(g, required: bool = True, can_turn_off: bool = False) -> None:
    """The text replay (or, for the tokenizer, domain) batches every trainer draws."""
    g.add_argument("--text_dir", required=required, default=None,
                   help="folder with train.bin (python text_dataset_maker/prepare.py "
                        "--out_dir DIR) in the LM's tokenizer: GPT-2's BPE, or a Hugging Face "
                        "--init_from folder's own (prepare.py --tokenizer FOLDER)")
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
    """--text_block_size must fit the LM's positions (when text batches are drawn at all), and
    every sequence a Hugging Face backbone with a sliding window reads must fit that window
    (NeuroLM's mask replaces the model's own, window included)."""
    backbone = model.backbone
    window = getattr(backbone, "sliding_window", None)
    if is_hf_neurolm(model):
        positions = model.config.max_position_embeddings
    else:
        positions = model.config.block_size
    if args.text_batch_size > 0 and args.text_block_size > positions:
        raise UserError(f"--text_block_size {args.text_block_size} exceeds the LM's "
                        f"{positions} positions")
    if window is None:
        return
    lengths = {"--text_block_size": args.text_block_size if args.text_batch_size > 0 else 0}
    if getattr(args, "block_size", None) is not None:         # pretraining: EEG tokens
        lengths["--block_size"] = args.block_size
    if getattr(args, "eeg_max_tokens", None) is not None:     # instruction: EEG + text
        lengths["--eeg_max_tokens + --text_max_tokens"] = (args.eeg_max_tokens
                                                           + args.text_max_tokens)
    for flag, length in lengths.items():
        if length > window:
            raise UserError(f"{flag}: {length} tokens exceed the backbone's sliding window of "
                            f"{window} (its attention sees no further)")


def size_text(args: argparse.Namespace, tasks, text) -> None:
    """--text_max_tokens left out: the paper's 80, or the longest instruction text of the run's
    tasks in the model's text tokenizer `text` when longer (a small vocabulary spends more
    tokens on the same prompt); given, it must hold every task's text."""
    lengths = {name: text_length(task, text) for name, task in tasks.items()}
    if args.text_max_tokens is None:
        args.text_max_tokens = max([TEXT_MAX_TOKENS, *lengths.values()])
        return
    longest = max(lengths, key=lengths.get, default=None)
    if longest is not None and lengths[longest] > args.text_max_tokens:
        raise UserError(f"--text_max_tokens {args.text_max_tokens}: task {longest}'s "
                        f"instruction text takes {lengths[longest]} tokens in the model's "
                        f"tokenizer; give at least that, or leave the flag out")


# ----------------------------------------------------------------------------- the LM

def new_lm(args: argparse.Namespace):
    """(a new NeuroLM on the CPU as --init_from, --preset, --model and --attn_implementation
    say, around the --tokenizer_path VQ's encoder; that VQ). With --lora_rank a GPT-2 folder is
    built on transformers' GPT-2: LoRA needs a Hugging Face backbone."""
    with reading("--init_from"):
        return new_neurolm(args.tokenizer_path, args.init_from, args.preset, args.model,
                           backbone="hf" if args.lora_rank else "auto",
                           attn_implementation=args.attn_implementation)


def add_adapters(model, args: argparse.Namespace, runtime) -> None:
    """--lora_rank: LoRA adapters (model.lora, in place) on the Hugging Face backbone of
    `model`; a model that has adapters already (a LoRA --model_path) continues those.

    A LoRA checkpoint names the folder of its frozen base weights: those of a model read from
    a full --model_path are in no folder, so its LM is written once into --out_dir/BASE_LM_DIR
    first."""
    if is_lora(model):
        rank = model.LM.peft_config["default"].r
        if args.lora_rank not in (0, rank):
            raise UserError(f"--lora_rank {args.lora_rank}: --model_path holds LoRA adapters of "
                            f"rank {rank}, which this run continues (leave out --lora_rank)")
        return
    if not args.lora_rank:
        return
    if not is_hf_neurolm(model):
        raise UserError(f"--lora_rank {args.lora_rank}: LoRA needs a Hugging Face backbone "
                        f"(--init_from FOLDER, or a --model_path trained on one); the native "
                        f"GPT is fine-tuned in full (leave out --lora_rank)")
    if getattr(args, "model_path", None) is not None:   # (its config still names the folder
        _write_base_lm(model, Path(args.out_dir) / BASE_LM_DIR, runtime)   # it started from)
    settings = LoraSettings(rank=args.lora_rank, alpha=args.lora_alpha,
                            dropout=args.lora_dropout,
                            target_modules=tuple(args.lora_targets or ()) or None)
    try:
        add_lora(model, settings)
    except BackboneError as error:
        flag = "--lora_targets" if args.lora_targets else "--lora_rank"
        raise UserError(f"{flag}: {one_line(error)}") from error


def _write_base_lm(model, folder: Path, runtime) -> None:
    """The LM of `model` as a Hugging Face folder (rank 0 writes; a folder already there must
    hold the same weights: earlier checkpoints of this --out_dir name it)."""
    if runtime.is_main:
        fresh = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        shutil.rmtree(fresh, ignore_errors=True)
        model.LM.save_pretrained(fresh)
        if not folder.exists():
            os.replace(fresh, folder)
        else:
            same = base_identity(fresh) == base_identity(folder)
            shutil.rmtree(fresh)
            if not same:
                raise UserError(f"{folder} holds the base weights of another --model_path's "
                                f"LoRA run; give this run a fresh --out_dir")
    runtime.barrier()
    model.LM.config._name_or_path = str(folder.resolve())
    note_base(model.LM, folder)


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
