"""The command line every prepare script shares: its flags, its file listing, its exit."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from dataset_maker.files import UserError

USER_ERROR_EXIT = 2


def script_main(main, argv=None):
    """Run a prepare script's main(argv); a UserError becomes one line on stderr and exit 2."""
    try:
        return main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT)


def arg_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--raw_dir", type=Path, required=True, help="folder of the raw recordings")
    parser.add_argument("--out_dir", type=Path, required=True,
                        help="output folder (train/ val/ test/ splits.json errors.tsv); a rerun "
                             "reuses only recordings made with the same settings and files, "
                             "redoes the others and removes samples of recordings no longer "
                             "listed")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel processes (default or 0: all cores)")
    parser.add_argument("--format", choices=("pickle", "shards"), default="pickle",
                        help="one pickle per window (the public layout, default) or the sharded "
                             "store (a few Arrow files of --shard_mb; see dataset_maker/shards.py)")
    parser.add_argument("--shard_mb", type=float, default=None,
                        help="signal megabytes per shard with --format shards (default: 256)")
    return parser


def store_options(args) -> dict:
    """run()'s output-format keywords from arg_parser's flags."""
    if args.shard_mb is not None and not (math.isfinite(args.shard_mb) and args.shard_mb > 0):
        raise UserError(f"--shard_mb must be a positive number, got {args.shard_mb}")
    if args.workers is not None and args.workers < 0:
        raise UserError(f"--workers must be a count of processes (0: all cores), got "
                        f"{args.workers}")
    return {"fmt": args.format, "shard_mb": args.shard_mb}


def find_files(raw_dir: Path, *suffixes: str) -> list[Path]:
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise UserError(f"--raw_dir {raw_dir} is not a folder")
    wanted = {s.lower() for s in suffixes}
    return sorted(p for p in raw_dir.rglob("*") if p.is_file() and p.suffix.lower() in wanted)
