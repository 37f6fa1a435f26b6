"""The sharded store's loader against the pickle loaders, single process, on the same windows.

    python bench/bench_store.py [--windows 200] [--public /path/to/NeuroLM] [--startup 200000]
                                [--json PATH]

Writes --windows public-format pretraining pickles (23 channels x 44 s, float64, as the public
code's files are) and packs them with dataset_maker/pack.py. Then, alternating the loaders in
rounds (so machine noise hits them alike) and keeping each one's best round:
  - samples/s of the loader each stage opens: the tokenizer stage ("targets": the public loader
    computes y_freq / y_raw per item; ours returns plain items and train_vq.py computes the
    targets batched on the device, `dataset.reconstruction_targets_batch`) and pretraining
    ("lm"); for reference also our loaders with the targets computed per item in the loader
    ("*_item_targets", the old way) and the batched targets' own rate on this CPU,
  - bytes per returned sample (the tensors of one item, what the side-by-side harness counts)
    and bytes read from disk per sample,
for the public code's `dataset.PickleLoader` (with --public: a checkout of 935963004/NeuroLM;
its dense 1024 x 1024 LM mask included), this project's `dataset.PickleLoader`, and
`sample_store.ShardLoader`. --startup N times opening a store of N small windows against listing
N pickle files (sorted glob, what the trainers do for pickles).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import dataset  # noqa: E402
import sample_store  # noqa: E402
from dataset_maker import pack, shards  # noqa: E402

CHANNELS = dataset.LEGACY_TUH_CHANNELS
SECONDS = 44


def write_pickles(folder: Path, n: int, n_channels: int, samples: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = (CHANNELS * (n_channels // len(CHANNELS) + 1))[:n_channels]
    for i in range(n):
        X = rng.standard_normal((n_channels, samples)) * 30.0   # float64, like the public files
        (folder / f"aaaaaaaa_s001_t000_{i:07d}.pkl").write_bytes(
            pickle.dumps({"X": X, "ch_names": names}))


def public_loader_class(root: Path):
    spec = importlib.util.spec_from_file_location("public_neurolm_dataset", root / "dataset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PickleLoader


def tensor_bytes(item) -> int:
    values = item.values() if isinstance(item, dict) else item
    return sum(v.numel() * v.element_size() for v in values if torch.is_tensor(v))


def one_pass(loader) -> float:
    start = time.perf_counter()
    for i in range(len(loader)):
        loader[i]
    return len(loader) / (time.perf_counter() - start)


def batched_targets_rate(loader, rounds: int, batch_size: int = 32) -> float:
    """Samples/s of `dataset.reconstruction_targets_batch` on a batch of the loader's items, on
    this CPU (best of `rounds`): what the tokenizer stage adds per step where it has no GPU."""
    batch = torch.utils.data.default_collate([loader[i % len(loader)] for i in range(batch_size)])
    best = 0.0
    for _ in range(rounds + 1):
        start = time.perf_counter()
        dataset.reconstruction_targets_batch(batch["x_eeg"], batch["input_mask"])
        best = max(best, batch_size / (time.perf_counter() - start))
    return best


def startup(n: int, root: Path) -> dict:
    """Seconds to open N windows: a store's manifest vs a sorted listing of N pickle files."""
    pkl = root / "startup_pkl" / "train"
    pkl.mkdir(parents=True)
    payload = pickle.dumps({"X": np.zeros((1, 200), np.float32), "ch_names": ["CZ"]})
    for i in range(n):
        (pkl / f"w_{i:07d}.pkl").write_bytes(payload)
    writer = shards.ShardSetWriter(root / "startup_store")
    X = np.zeros((1, 200), np.float32)
    for i in range(n):
        writer.add("train", X, ["CZ"], name=f"w_{i:07d}.pkl")
    writer.commit()
    start = time.perf_counter()
    store = sample_store.open_split([root / "startup_store"], "train", 8, targets=False)
    store[n - 1]
    store_s = time.perf_counter() - start
    start = time.perf_counter()
    pickles = sample_store.open_split([root / "startup_pkl"], "train", 8, targets=False)
    pickles[n - 1]
    pickle_s = time.perf_counter() - start
    return {"windows": n, "store_open_s": round(store_s, 3), "pickle_listing_s": round(pickle_s, 3),
            "shards": len(sample_store.read_manifest(root / "startup_store")["splits"]["train"])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--public", type=Path, default=None,
                        help="folder of the public NeuroLM code (dataset.py at its top)")
    parser.add_argument("--startup", type=int, default=0, help="windows for the start-up figure")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report: dict = {"windows": args.windows, "channels": len(CHANNELS), "seconds": SECONDS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_pickles(root / "pkl" / "train", args.windows, len(CHANNELS), SECONDS * 200)
        pack.pack(root / "pkl", root / "store", progress=False)
        files = sorted((root / "pkl" / "train").glob("*.pkl"))
        manifest = sample_store.read_manifest(root / "store")
        store_bytes = sum(e["bytes"] for e in manifest["splits"]["train"])
        loaders = {}
        if args.public:
            for mode, targets in (("targets", True), ("lm", False)):
                loaders[f"public_{mode}"] = public_loader_class(args.public)(
                    [str(f) for f in files], block_size=1024, GPT_training=not targets)
        # both stages open the plain loaders (targets=False); the tokenizer stage adds the
        # targets on its device
        loaders["pickle"] = dataset.PickleLoader(files, 1024, targets=False)
        loaders["shards"] = sample_store.ShardLoader(root / "store", "train", 1024,
                                                     targets=False)
        loaders["pickle_item_targets"] = dataset.PickleLoader(files, 1024, targets=True)
        loaders["shards_item_targets"] = sample_store.ShardLoader(root / "store", "train",
                                                                  1024, targets=True)
        best = {name: 0.0 for name in loaders}
        for loader in loaders.values():
            loader[0]   # warm the page cache and torch's kernels
        for _ in range(args.rounds):
            for name, loader in loaders.items():
                best[name] = max(best[name], one_pass(loader))
        report["samples_per_s"] = {k: round(v, 1) for k, v in best.items()}
        report["batched_targets_samples_per_s_this_cpu"] = round(
            batched_targets_rate(loaders["shards"], args.rounds), 1)
        report["bytes_per_returned_sample"] = {k: tensor_bytes(v[0]) for k, v in loaders.items()}
        report["disk_bytes_per_sample"] = {
            "pickle": int(sum(f.stat().st_size for f in files) / len(files)),
            "shards": int(store_bytes / args.windows)}
        bases = {"targets": "pickle_item_targets", "lm": "pickle"}
        if args.public:
            bases = {mode: f"public_{mode}" for mode in bases}
        report["speedup_of_shards_over"] = {
            mode: {"base": base, "ratio": round(best["shards"] / best[base], 2)}
            for mode, base in bases.items()}
        report["returned_bytes_ratio_of_shards_over"] = {
            mode: {"base": base, "ratio": round(report["bytes_per_returned_sample"]["shards"]
                                               / report["bytes_per_returned_sample"][base], 3)}
            for mode, base in bases.items()}
        if args.startup:
            report["startup"] = startup(args.startup, root)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
