"""Pack a folder of sample pickles (ours or the public NeuroLM code's) into the sharded store.

    python dataset_maker/pack.py data/tuh_pretrain --out_dir data/tuh_shards [--shard_mb 256]

SRC holds `<split>/*.pkl` (or is a flat folder of pickles, packed as the train split). The store
(`shards.json`, `<split>/shard-NNNNN.arrow`) is read by every trainer in place of the pickles:
pass its folder as --dataset_dir. A killed pack resumes from its last shard; unreadable pickles
are skipped and listed in OUT_DIR/errors.tsv.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a file

from dataset_maker import shards  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder of sample pickles (split subfolders)")
    parser.add_argument("--out_dir", type=Path, required=True, help="store folder to write")
    parser.add_argument("--shard_mb", type=float, default=shards.DEFAULT_SHARD_MB,
                        help="signal megabytes per shard (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.shard_mb <= 0:
        parser.exit(2, f"error: --shard_mb must be positive, got {args.shard_mb}\n")
    try:
        summary = shards.pack(args.src, args.out_dir, args.shard_mb)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    windows = ", ".join(f"{k}: {v}" for k, v in summary["windows"].items())
    print(f"packed {windows} windows into {summary['shards']} shards "
          f"({summary['bytes'] / 2**20:.1f} MiB) in {args.out_dir}; "
          f"{summary['errors']} unreadable (see errors.tsv)")
    return summary


if __name__ == "__main__":
    main()
