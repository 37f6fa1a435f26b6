"""Throughput of one VQ step (train_vq.py) and one pretraining step (train_pretrain.py).

    python bench/bench_train.py [--shapes tiny B] [--steps 3] [--device cpu] [--json out.json]

Times the trainers' own `train_step` (forward, backward, clip, AdamW) on samples that fill the
EEG block, after one untimed warm-up step; data loading is not timed. Each (stage, shape) runs
in a fresh process so that its peak memory (max RSS; CUDA max allocated on a GPU) is its own.

Shapes:
  tiny: the --preset tiny models; 8 EEG samples x 256 tokens (16 channels x 16 s), text
        2 x 64 (pretraining) / 4 x 64 (VQ): the presets' batches.
  B:    --preset paper: 12-layer 768-wide encoder, 8192 codes, GPT-2 124M; a small CPU batch
        of 2 EEG samples x 256 tokens (16 channels x 16 s) and 1 text sequence of 256 tokens
        (the paper uses 64 / 60 samples of 1024 tokens).
tokens/s counts real EEG tokens plus text tokens per step.
"""
from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CHANNELS = ["FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3",
            "T4", "T5", "T6"]
SECONDS = 16
SHAPES = {
    "tiny": dict(preset="tiny", batch_size=8, vq_text=4, lm_text=2, text_block=64),
    "B": dict(preset="paper", batch_size=2, vq_text=1, lm_text=1, text_block=256),
}


def write_inputs(root: Path, n_samples: int) -> tuple[Path, Path]:
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "ds" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n_samples):
            x = (30 * rng.standard_normal((len(CHANNELS), SECONDS * 200))).astype(np.float32)
            with open(root / "ds" / split / f"{i}.pkl", "wb") as f:
                pickle.dump({"X": x, "ch_names": CHANNELS}, f)
    (root / "text").mkdir()
    rng.integers(0, 50256, 200_000).astype(np.uint16).tofile(root / "text" / "train.bin")
    return root / "ds", root / "text"


def common_flags(shape: dict, ds: Path, text: Path, out: Path, device: str) -> list[str]:
    return ["--preset", shape["preset"], "--dataset_dir", str(ds), "--text_dir", str(text),
            "--out_dir", str(out), "--block_size", str(len(CHANNELS) * SECONDS),
            "--batch_size", str(shape["batch_size"]), "--text_block_size",
            str(shape["text_block"]), "--num_workers", "0", "--resume", "none",
            "--device", device]


def untrained_vq_checkpoint(args, path: Path) -> Path:
    """Pretraining needs a tokenizer; an untrained one of the same shape times the same."""
    import train_vq
    import utils
    from model.model_vq import VQ_Align, vq_checkpoint

    enc, dec, vq_args = train_vq.model_configs(args)
    model = VQ_Align(enc, dec, text_embeddings=train_vq.scratch_text_embeddings(enc.n_embd, 0),
                     **vq_args)
    utils.atomic_torch_save(vq_checkpoint(model), path)
    return path


def measure(stage_name: str, shape_name: str, steps: int, device: str) -> dict:
    import torch

    import train_pretrain
    import train_vq
    import utils

    shape = SHAPES[shape_name]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ds, text = write_inputs(root, shape["batch_size"])
        flags = common_flags(shape, ds, text, root / "out", device)
        if stage_name == "vq":
            trainer = train_vq
            args = train_vq.parse_args([*flags, "--text_batch_size", str(shape["vq_text"])])
            n_text = shape["vq_text"]
        else:
            trainer = train_pretrain
            vq_args = train_vq.parse_args(flags)
            tok = untrained_vq_checkpoint(vq_args, root / "vq.pt")
            args = train_pretrain.parse_args([*flags, "--tokenizer_path", str(tok),
                                              "--text_batch_size", str(shape["lm_text"])])
            n_text = shape["lm_text"]
        stage = trainer.build_stage(args)
        stage.loader.set_epoch(0)
        batch = next(iter(stage.loader))
        eeg_tokens = int(batch["input_mask"].sum())
        step_tokens = eeg_tokens + n_text * shape["text_block"]
        sync = torch.cuda.synchronize if stage.runtime.device.type == "cuda" else (lambda: None)
        stage.train_step([batch], 0, 100)  # warm-up (k-means init, allocator, kernels)
        sync()
        start = time.perf_counter()
        for i in range(steps):
            stage.train_step([batch], i + 1, 100)
        sync()
        seconds = (time.perf_counter() - start) / steps
        params = sum(p.numel() for p in utils.unwrap(stage.model).parameters())
        result = {"stage": stage_name, "shape": shape_name, "device": str(stage.runtime.device),
                  "params_M": round(params / 1e6, 2), "eeg_batch": shape["batch_size"],
                  "eeg_tokens": eeg_tokens, "text_tokens": n_text * shape["text_block"],
                  "s_per_step": round(seconds, 4), "steps_per_s": round(1 / seconds, 3),
                  "tokens_per_s": round(step_tokens / seconds, 1),
                  "peak_rss_MB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                       1),
                  "threads": torch.get_num_threads()}
        if stage.runtime.device.type == "cuda":
            result["cuda_max_allocated_MB"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        utils.cleanup_runtime()
        return result


def print_table(rows: list[dict]) -> None:
    cols = ["stage", "shape", "params_M", "eeg_batch", "eeg_tokens", "text_tokens", "s_per_step",
            "steps_per_s", "tokens_per_s", "peak_rss_MB"]
    if any("cuda_max_allocated_MB" in r for r in rows):
        cols.append("cuda_max_allocated_MB")
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.rjust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).rjust(widths[c]) for c in cols))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["tiny", "B"],
                        help="model shapes to time (default: tiny B)")
    parser.add_argument("--stages", nargs="+", choices=["vq", "pretrain"],
                        default=["vq", "pretrain"], help="steps to time (default: both)")
    parser.add_argument("--steps", type=int, default=3,
                        help="timed steps after one warm-up step (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--one", nargs=2, metavar=("STAGE", "SHAPE"), default=None,
                        help=argparse.SUPPRESS)   # internal: one measurement in this process
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.steps, args.device)))
        return []
    rows = []
    for shape in args.shapes:
        for stage in args.stages:
            done = subprocess.run([sys.executable, __file__, "--one", stage, shape, "--steps",
                                   str(args.steps), "--device", args.device],
                                  capture_output=True, text=True, cwd=REPO)
            if done.returncode != 0:
                raise RuntimeError(f"{stage} at {shape} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"done: {stage} {shape}", file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
