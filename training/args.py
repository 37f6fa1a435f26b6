"""The command-line flags every trainer shares. A trainer sets its own defaults with
`parser.set_defaults(lr=..., ...)` after `add_common_args(parser)`."""
from __future__ import annotations

import argparse
import math
import sys

from .runtime import DTYPE_CHOICES


def stage_parser(description: str) -> argparse.ArgumentParser:
    """A stage script's parser: its module help verbatim, then the flags every trainer shares."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_common_args(parser)


class PublicAlias(argparse.Action):
    """A flag of the public NeuroLM scripts: sets our flag's value and says its name here."""

    def __init__(self, option_strings, dest, new_name, **kwargs):
        self.new_name = new_name
        kwargs.setdefault("help", argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is {self.new_name} here; taking it as {self.new_name}",
              file=sys.stderr)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


class IgnoredPublicFlag(argparse.Action):
    """A public flag whose job is done here without it: accepted with a note."""

    def __init__(self, option_strings, dest, note, **kwargs):
        self.note = note
        super().__init__(option_strings, argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"note: {option_string} is not needed here: {self.note}", file=sys.stderr)


class RefusedFlag(argparse.Action):
    def __init__(self, option_strings, dest, reason, **kwargs):
        self.reason = reason
        super().__init__(option_strings, argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is refused: {self.reason}")


def add_public_alias(parser, old: str, new: str, **kwargs) -> None:
    """Accept the public code's `old` flag for our `new` one (hidden from --help)."""
    target = next(a for a in parser._actions if new in a.option_strings)
    if target.nargs == 0:
        kwargs.setdefault("nargs", 0)
    else:
        kwargs.setdefault("type", target.type)
        kwargs.setdefault("nargs", target.nargs)
    parser.add_argument(old, dest=target.dest, action=PublicAlias, new_name=new, **kwargs)


def add_public_aliases(parser: argparse.ArgumentParser) -> None:
    """The public NeuroLM scripts' names of the shared flags (users type them from its README)."""
    for old, new in (("--learning_rate", "--lr"), ("--epochs", "--max_epochs"),
                     ("--eeg_batch_size", "--batch_size"),
                     ("--gradient_accumulation_steps", "--grad_accum"),
                     ("--log_interval", "--log_every"), ("--wandb_log", "--wandb"),
                     ("--wandb_runname", "--wandb_run_name")):
        add_public_alias(parser, old, new)
    parser.add_argument("--save_ckpt_freq", action=IgnoredPublicFlag, nargs=1,
                        note="a checkpoint is written at every epoch end anyway; --save_every N "
                             "adds one every N optimizer steps")
    parser.add_argument("--wandb_api_key", action=RefusedFlag, nargs=1,
                        reason="a key on the command line leaks into the shell history and the "
                               "process list; set the WANDB_API_KEY environment variable (or "
                               "run `wandb login`) and pass --wandb")


def parse_with_preset(parser: argparse.ArgumentParser, presets: dict, argv=None,
                      **defaults) -> argparse.Namespace:
    """Parse argv with the defaults of the chosen --preset set first, so that --help shows
    the values that will run. `defaults` are set too (before the preset's)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=parser.get_default("preset"))
    known, _ = pre.parse_known_args(argv)
    preset = known.preset if known.preset in presets else parser.get_default("preset")
    parser.set_defaults(**defaults, **presets[preset])
    return parser.parse_args(argv)


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("run")
    g.add_argument("--out_dir", default="out",
                   help="folder for checkpoints, metrics.jsonl and plots (default: %(default)s)")
    g.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N; default: CUDA when available (one GPU per "
                        "torchrun process), else CPU")
    g.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="compute precision; auto = bfloat16 on GPUs that support it, float16 "
                        "with loss scaling on older GPUs, float32 on CPU (default: %(default)s)")
    g.add_argument("--seed", type=int, default=1337, help="random seed (default: %(default)s)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="wrap the model in torch.compile (default: off)")
    g.add_argument("--num_workers", type=int, default=None,
                   help="data loader worker processes per rank; 0 loads in the main process "
                        "(default: min(4, CPUs per local rank))")

    g = parser.add_argument_group("optimisation")
    g.add_argument("--batch_size", type=int, default=8,
                   help="samples per rank per micro-step (default: %(default)s)")
    g.add_argument("--grad_accum", type=int, default=1,
                   help="micro-steps accumulated per optimizer step (default: %(default)s)")
    g.add_argument("--lr", type=float, default=6e-4,
                   help="peak learning rate after warm-up (default: %(default)s)")
    g.add_argument("--min_lr", type=float, default=6e-5,
                   help="learning rate at the end of the cosine decay (default: %(default)s)")
    g.add_argument("--weight_decay", type=float, default=0.1,
                   help="AdamW weight decay on >= 2-D weights (default: %(default)s)")
    g.add_argument("--beta1", type=float, default=0.9, help="AdamW beta1 (default: %(default)s)")
    g.add_argument("--beta2", type=float, default=0.95, help="AdamW beta2 (default: %(default)s)")
    g.add_argument("--grad_clip", type=float, default=1.0,
                   help="clip the gradient norm to this value; 0 disables (default: %(default)s)")
    g.add_argument("--max_epochs", type=int, default=1,
                   help="epochs to train (default: %(default)s)")
    g.add_argument("--max_steps", type=int, default=None,
                   help="optimizer steps to train; overrides --max_epochs and sets the length "
                        "of the cosine schedule (default: from --max_epochs)")
    g.add_argument("--warmup_epochs", type=float, default=0.0,
                   help="linear warm-up length in epochs (default: %(default)s)")
    g.add_argument("--warmup_steps", type=int, default=None,
                   help="linear warm-up length in optimizer steps; overrides --warmup_epochs")

    g = parser.add_argument_group("checkpoints and logging")
    g.add_argument("--save_every", type=int, default=1000,
                   help="write a checkpoint every N optimizer steps, besides each epoch end; "
                        "0 = epoch ends only (default: %(default)s)")
    g.add_argument("--keep_checkpoints", type=int, default=3,
                   help="how many step checkpoints to keep; 0 keeps all (default: %(default)s)")
    g.add_argument("--resume", default="auto",
                   help="auto = continue from the newest checkpoint in --out_dir if there is "
                        "one; none = start fresh; or a checkpoint file / folder "
                        "(default: %(default)s)")
    g.add_argument("--log_every", type=int, default=10,
                   help="console/metrics line every N optimizer steps (default: %(default)s)")
    g.add_argument("--wandb", action="store_true",
                   help="also log to Weights & Biases (needs the wandb package; the API key "
                        "and WANDB_MODE=offline come from the environment)")
    g.add_argument("--wandb_project", default="neurolm",
                   help="W&B project (default: %(default)s)")
    g.add_argument("--wandb_run_name", default=None, help="W&B run name (default: W&B's choice)")
    add_public_aliases(parser)
    return parser


def schedule_steps(args: argparse.Namespace, steps_per_epoch: int) -> tuple[int, int]:
    """(warmup_steps, total_steps) in optimizer steps from the epoch/step flags.

    `steps_per_epoch` counts optimizer steps (loader batches // grad_accum).
    """
    if steps_per_epoch <= 0:
        raise ValueError("an epoch has no optimizer step: fewer batches than --grad_accum?")
    total = args.max_steps if args.max_steps is not None else args.max_epochs * steps_per_epoch
    if args.warmup_steps is not None:
        warmup = args.warmup_steps
    else:
        warmup = math.ceil(args.warmup_epochs * steps_per_epoch)
    return min(warmup, total), total
