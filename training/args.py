"""The command-line flags every trainer shares, numbers checked at the door, and run configs.

A trainer sets its own defaults with `parser.set_defaults(lr=..., ...)` after
`add_common_args(parser)`, or per preset through `parse_with_preset`. Every run writes its fully
resolved flags to `<out_dir>/run_config.json`; `--config FILE` replays such a file (flags given on
the command line win; an unknown key or a bad value is one line, exit 2).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from .config import COUNT_MAX
from .runtime import DTYPE_CHOICES

RUN_CONFIG_NAME = "run_config.json"
CONFIG_NOTE_KEY = "description"     # free text in a config file (the shipped ones cite the paper)
CONFIG_SCRIPT_KEY = "script"        # the stage script a config belongs to (its parser's prog)
_NOT_CONFIG = {"config", "help"}     # dests a config file may not set


# ----------------------------------------------------------------------------- numbers

def number(kind=float, low=None, high=None, low_open=False):
    """An argparse `type` for a finite int/float in [low, high] (low excluded with low_open):
    `inf`, `nan`, 1e9 where at most 1000 makes sense are refused at the door, naming the flag."""
    def convert(text):
        if isinstance(text, bool):
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if kind is int:
            if not value.is_integer():
                raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
            value = int(value)
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(
                f"must be {'>' if low_open else '>='} {low:g}, got {text!r}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text!r}")
        return value

    convert.__name__ = kind.__name__   # argparse names the type in some messages
    return convert


COUNT = number(int, 1, COUNT_MAX)               # sizes, steps, batches: at least one
COUNT0 = number(int, 0, COUNT_MAX)              # ... where 0 means "off" / "all"
RATE = number(float, 0.0, 10.0)               # learning rates, decays
UNIT = number(float, 0.0, 1.0)                # fractions, betas


# ----------------------------------------------------------------------------- parser

def stage_parser(description: str, prog: str | None = None) -> argparse.ArgumentParser:
    """A stage script's parser: its module help verbatim, then the flags every trainer shares.
    `prog` (the script's file name) is what its run configs are checked against."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
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


def _action(parser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def add_public_alias(parser, old: str, new: str, **kwargs) -> None:
    """Accept the public code's `old` flag for our `new` one (hidden from --help)."""
    target = _action(parser, new)
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


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    g = parser.add_argument_group("run")
    g.add_argument("--config", default=None, metavar="FILE",
                   help=f"replay a run: the flags of a {RUN_CONFIG_NAME} (every run writes one "
                        "into its --out_dir) or of a shipped configs/*.json; flags given here win")
    g.add_argument("--out_dir", default="out",
                   help="folder for checkpoints, metrics.jsonl, plots and "
                        f"{RUN_CONFIG_NAME} (default: %(default)s)")
    g.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N; default: CUDA when available (one GPU per "
                        "torchrun process), else CPU")
    g.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES,
                   help="compute precision; auto = bfloat16 on GPUs that support it, float16 "
                        "with loss scaling on older GPUs, float32 on CPU (default: %(default)s)")
    g.add_argument("--seed", type=number(int, 0, 2**63 - 1), default=1337,
                   help="random seed (default: %(default)s)")
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="wrap the model in torch.compile (default: off)")
    g.add_argument("--num_workers", type=number(int, 0, 256), default=None,
                   help="data loader worker processes per rank; 0 loads in the main process "
                        "(default: min(4, CPUs per local rank))")

    g = parser.add_argument_group("optimisation")
    g.add_argument("--batch_size", type=COUNT, default=8,
                   help="samples per rank per micro-step (default: %(default)s)")
    g.add_argument("--grad_accum", type=COUNT, default=1,
                   help="micro-steps accumulated per optimizer step (default: %(default)s)")
    g.add_argument("--lr", type=number(float, 0.0, 10.0, low_open=True), default=6e-4,
                   help="peak learning rate after warm-up (default: %(default)s)")
    g.add_argument("--min_lr", type=RATE, default=6e-5,
                   help="learning rate at the end of the cosine decay, at most --lr; left at "
                        "its default it scales with a lower --lr (default: %(default)s)")
    g.add_argument("--weight_decay", type=RATE, default=0.1,
                   help="AdamW weight decay on >= 2-D weights (default: %(default)s)")
    g.add_argument("--beta1", type=UNIT, default=0.9, help="AdamW beta1 (default: %(default)s)")
    g.add_argument("--beta2", type=UNIT, default=0.95, help="AdamW beta2 (default: %(default)s)")
    g.add_argument("--grad_clip", type=number(float, 0.0, 1e6), default=1.0,
                   help="clip the gradient norm to this value; 0 disables (default: %(default)s)")
    g.add_argument("--max_epochs", type=COUNT, default=1,
                   help="epochs to train (default: %(default)s)")
    g.add_argument("--max_steps", type=COUNT, default=None,
                   help="optimizer steps to train; overrides --max_epochs and sets the length "
                        "of the cosine schedule (default: from --max_epochs)")
    g.add_argument("--warmup_epochs", type=number(float, 0.0, 1e6), default=0.0,
                   help="linear warm-up length in epochs (default: %(default)s)")
    g.add_argument("--warmup_steps", type=COUNT0, default=None,
                   help="linear warm-up length in optimizer steps; overrides --warmup_epochs")

    g = parser.add_argument_group("checkpoints and logging")
    g.add_argument("--save_every", type=COUNT0, default=1000,
                   help="write a checkpoint every N optimizer steps, besides each epoch end; "
                        "0 = epoch ends only (default: %(default)s)")
    g.add_argument("--keep_checkpoints", type=COUNT0, default=3,
                   help="how many step checkpoints to keep; 0 keeps all (default: %(default)s)")
    g.add_argument("--resume", default="auto",
                   help="auto = continue from the newest checkpoint in --out_dir if there is "
                        "one; none = start fresh; or a checkpoint file / folder "
                        "(default: %(default)s)")
    g.add_argument("--log_every", type=COUNT, default=10,
                   help="console/metrics line every N optimizer steps (default: %(default)s)")
    g.add_argument("--wandb", action="store_true",
                   help="also log to Weights & Biases (needs the wandb package; the API key "
                        "and WANDB_MODE=offline come from the environment)")
    g.add_argument("--wandb_project", default="neurolm",
                   help="W&B project (default: %(default)s)")
    g.add_argument("--wandb_run_name", default=None, help="W&B run name (default: W&B's choice)")
    add_public_aliases(parser)
    return parser


# ----------------------------------------------------------------------------- presets, configs

def _fail(parser: argparse.ArgumentParser, message: str):
    """One line on stderr, exit 2 (parser.error would print the usage lines first)."""
    parser.exit(2, f"{parser.prog}: error: {message}\n")


def _config_value(parser, action: argparse.Action, key: str, value, where: str):
    """`value` of a config file as the flag would have parsed it, or one line and exit 2."""
    def bad(why):
        _fail(parser, f"{where}: {key!r} {why}")

    def one(item):
        if action.type is not None:
            if isinstance(item, str) or isinstance(item, bool) or not isinstance(item,
                                                                                 (int, float)):
                bad(f"must be a number, got {item!r}")
            try:
                item = action.type(item)
            except (argparse.ArgumentTypeError, TypeError, ValueError) as error:
                bad(str(error))
        elif not isinstance(item, str):
            bad(f"must be a string, got {item!r}")
        if action.choices is not None and item not in action.choices:
            bad(f"must be one of {', '.join(map(str, action.choices))}, got {item!r}")
        return item

    if action.nargs == 0:       # store_true / BooleanOptionalAction
        if not isinstance(value, bool):
            bad(f"must be true or false, got {value!r}")
        return value
    if value is None:
        if action.required:
            bad("must be given (null)")
        return None
    if action.nargs in ("+", "*") or isinstance(action.nargs, int) or isinstance(action.default,
                                                                                  list):
        if not isinstance(value, list) or (action.required and not value):
            bad(f"must be a list, got {value!r}")
        return [one(v) for v in value]
    return one(value)


def read_config(parser: argparse.ArgumentParser, path: str) -> dict:
    """The flags a config file sets, checked against `parser`: {dest: value}."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as error:
        _fail(parser, f"--config {path}: cannot be read ({error.strerror or error})")
    except ValueError as error:
        _fail(parser, f"--config {path}: not valid JSON ({error})")
    if not isinstance(data, dict):
        _fail(parser, f"--config {path}: expected a JSON object of flag names and values")
    actions = {a.dest: a for a in parser._actions
               if a.option_strings and a.dest not in _NOT_CONFIG and a.dest != argparse.SUPPRESS
               and not isinstance(a, PublicAlias)}
    script = data.pop(CONFIG_SCRIPT_KEY, parser.prog)
    if script != parser.prog:
        _fail(parser, f"--config {path}: a config of {script}, not of {parser.prog}")
    unknown = sorted(k for k in data if k not in actions and k != CONFIG_NOTE_KEY)
    if unknown:
        _fail(parser, f"--config {path}: unknown key(s) {', '.join(map(repr, unknown))}: not "
                      f"a flag of {parser.prog} (a config of another stage?)")
    return {k: _config_value(parser, actions[k], k, v, f"--config {path}")
            for k, v in data.items() if k != CONFIG_NOTE_KEY}


def parse_with_preset(parser: argparse.ArgumentParser, presets: dict, argv=None,
                      **defaults) -> argparse.Namespace:
    """Parse argv over, in this order, the parser's defaults, `defaults`, the chosen --preset's
    values and a --config file's; so --help shows the values that will run. A --min_lr left at
    its default that would exceed a lower --lr is scaled with it (and said)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    config = read_config(parser, known.config) if known.config else {}
    preset = known.preset or config.get("preset") or parser.get_default("preset")
    if preset not in presets:
        preset = parser.get_default("preset")
    parser.set_defaults(**defaults, **presets[preset])
    preset_lr, preset_min_lr = parser.get_default("lr"), parser.get_default("min_lr")
    for action in parser._actions:
        if action.dest in config and action.required:
            action.required = False     # the config gives it
    parser.set_defaults(**config)
    args = parser.parse_args(argv)
    setattr(args, CONFIG_SCRIPT_KEY, parser.prog)
    if args.min_lr == parser.get_default("min_lr") and args.min_lr > args.lr:
        args.min_lr = args.lr * preset_min_lr / preset_lr
        print(f"note: --lr {args.lr:g} is below the default --min_lr {preset_min_lr:g}; "
              f"--min_lr scaled with it to {args.min_lr:g} (lr x {preset_min_lr / preset_lr:g})",
              file=sys.stderr)
    return args
