"""Pack a folder of sample pickles (ours or the public NeuroLM code's) into the sharded store.

    python dataset_maker/pack.py data/tuh_pretrain --out_dir data/tuh_shards [--shard_mb 256]

SRC holds `<split>/*.pkl` (or is a flat folder of pickles, packed as the train split). The store
(`shards.json`, `<split>/shard-NNNNN.arrow`) is read by every trainer in place of the pickles:
pass its folder as --dataset_dir. A killed pack resumes from its last shard when run again with
the same SRC holding the same files; any other store in OUT_DIR is refused. Each window keeps
what its pickle says (label, recording, subject, window, onset); unreadable pickles are skipped
and listed in OUT_DIR/errors.tsv.
"""

import argparse
import hashlib
import math
import os
import sys
from pathlib import Path

try:
    import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)
except ModuleNotFoundError:
    sys.exit("error: not set up: run `bash scripts/setup_env.sh`, then `source .venv/bin/activate`")
# isort: split

import dataset
import sample_store
from dataset_maker.files import UserError, write_errors
from dataset_maker.shards import DEFAULT_SHARD_MB, ShardSetWriter


def _split_folders(src: Path) -> dict[str, Path]:
    """{split: folder of pickles}: the split subfolders, or the folder itself as "train"."""
    splits = {}
    for child in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        with os.scandir(child) as entries:
            if any(e.name.endswith(".pkl") for e in entries):
                splits[child.name] = child
    if not splits:
        with os.scandir(src) as entries:
            if any(e.name.endswith(".pkl") for e in entries):
                splits["train"] = src
    return splits


def _listing(splits: dict[str, Path]) -> tuple[dict[str, list[str]], str]:
    """{split: sorted pickle names} and a digest of them with their sizes and times: a resumed
    pack continues by position in these lists, so they must not have changed."""
    files, digest = {}, hashlib.sha256()
    for split, folder in splits.items():
        with os.scandir(folder) as entries:
            found = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in entries
                           if e.name.endswith(".pkl"))
        files[split] = [name for name, _, _ in found]
        digest.update(repr((split, found)).encode("utf-8", "surrogateescape"))
    return files, digest.hexdigest()[:20]


def _check_resumable(out_dir: Path, src: Path, listing: str) -> None:
    """Refuse a store that another source (or a prepare run) made, or whose source changed."""
    if not sample_store.is_store(out_dir):
        return
    manifest = sample_store.read_manifest(out_dir)
    source = (manifest.get("info") or {}).get("packed_from")
    if source is None or Path(source).resolve() != src.resolve():
        made = f"packed from {source}" if source else "made by a prepare script"
        raise UserError(f"--out_dir {out_dir} already holds a store {made}; pack {src} into "
                        f"another --out_dir")
    packed = (manifest.get("committed") or {}).get("listing")
    if packed != listing:
        why = ("was packed by an older version that did not record its files" if packed is None
               else f"the pickles in {src} changed since it was packed from them")
        raise UserError(f"--out_dir {out_dir}: {why}; pack into another --out_dir")


def pack(src, out_dir, shard_mb: float = DEFAULT_SHARD_MB, progress: bool = True) -> dict:
    """Convert a pickle folder (ours or the public code's: `<src>/<split>/*.pkl`, or a flat
    folder of pickles taken as the train split) into a store in `out_dir`; resumable. Windows
    keep their sorted file order; unreadable pickles are skipped and listed in errors.tsv.
    Returns {"windows": {split: n}, "shards": n, "bytes": n, "errors": n}."""
    from tqdm import tqdm

    src, out_dir = Path(src), Path(out_dir)
    if not src.is_dir():
        raise UserError(f"{src}: not a folder")
    splits = _split_folders(src)
    if not splits:
        raise UserError(f"{src}: no .pkl sample files in it or in its split folders")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out_dir {out_dir} is a file, not a folder")
    if out_dir.resolve() == src.resolve():
        raise UserError(f"{out_dir}: the store must go to another folder than the pickles")
    files, listing = _listing(splits)
    _check_resumable(out_dir, src, listing)
    writer = ShardSetWriter(out_dir, shard_mb, info={"packed_from": str(src.resolve())})
    done = writer.committed or {"files": {}, "errors": [], "listing": listing}
    errors = list(done["errors"])
    for split, folder in splits.items():
        start = done["files"].get(split, 0)
        bar = tqdm(files[split][start:], desc=f"pack {split}", unit="window",
                   disable=None if progress else True)
        for i, name in enumerate(bar, start=start):
            path = folder / name
            try:
                sample = dataset.load_sample(path)
            except Exception as error:  # a broken file must not stop the others
                errors.append([str(path), f"{type(error).__name__}: {error}"])
            else:
                writer.add(split, sample["X"], sample["ch_names"], sample["y"], name=name,
                           recording=sample["recording"], subject=sample["subject"],
                           window=sample["window"], onset_s=sample["onset_s"],
                           source_file=str(path))
            if writer.full:
                writer.commit({**done, "files": {**done["files"], split: i + 1},
                               "errors": errors})
                done = writer.committed
        done = {**done, "files": {**done["files"], split: len(files[split])}, "errors": errors}
        writer.commit(done)
    write_errors(out_dir, errors)
    entries = [e for es in writer.manifest["splits"].values() for e in es]
    return {"windows": writer.manifest["windows"], "shards": len(entries),
            "bytes": sum(e["bytes"] for e in entries), "errors": len(errors)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder of sample pickles (split subfolders)")
    parser.add_argument("--out_dir", type=Path, required=True, help="store folder to write")
    parser.add_argument("--shard_mb", type=float, default=DEFAULT_SHARD_MB,
                        help="signal megabytes per shard (default: %(default)s)")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.shard_mb) and args.shard_mb > 0):
        parser.exit(2, f"error: --shard_mb must be a positive number, got {args.shard_mb}\n")
    try:
        summary = pack(args.src, args.out_dir, args.shard_mb)
    except (UserError, sample_store.StoreError) as error:
        parser.exit(2, f"error: {error}\n")
    windows = ", ".join(f"{k}: {v}" for k, v in summary["windows"].items())
    print(f"packed {windows} windows into {summary['shards']} shards "
          f"({summary['bytes'] / 2**20:.1f} MiB) in {args.out_dir}; "
          f"{summary['errors']} unreadable (see errors.tsv)")
    return summary


if __name__ == "__main__":
    main()
