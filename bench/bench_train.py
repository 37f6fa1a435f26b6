"""Throughput of one VQ step (train_vq.py) and one pretraining step (train_pretrain.py).

    python bench/bench_train.py [--shapes tiny B] [--steps 3] [--device cpu] [--json out.json]

Runs the stage scripts as commands (bench/ imports no stage script) for one untimed warm-up
step and --steps timed ones on samples that fill the EEG block, all within one epoch, and reads
the seconds per step from the `time` column of their metrics.jsonl: forward, backward, clip,
AdamW, and the loading of the step's few small samples (--num_workers 0). Peak memory is the
trainer process's own max RSS (host memory, also on a GPU). Pretraining gets an untrained
tokenizer of the same shape from `train_vq.py --max_steps 0`.

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
import os
import pickle
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from model.gpt2_bpe import EOT_TOKEN_ID  # noqa: E402

SAMPLES_PER_SECOND = 200  # dataset.SAMPLING_RATE, without importing torch in the parent
TEXT_TOKENS = 200_000  # random GPT-2 ids in the stand-in text corpus, plenty for any window
AMPLITUDE_UV = 30  # EEG-like spread of the random samples
CHANNELS = ["FP1", "FP2", "F3", "F4", "C3", "C4", "P3", "P4", "O1", "O2", "F7", "F8", "T3",
            "T4", "T5", "T6"]
SECONDS = 16
SHAPES = {
    "tiny": dict(preset="tiny", batch_size=8, vq_text=4, lm_text=2, text_block=64),
    "B": dict(preset="paper", batch_size=2, vq_text=1, lm_text=1, text_block=256),
}


def write_inputs(root: Path, n_train: int, n_val: int) -> tuple[Path, Path]:
    import numpy as np

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("val", n_val)):
        (root / "ds" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            x = AMPLITUDE_UV * rng.standard_normal((len(CHANNELS), SECONDS * SAMPLES_PER_SECOND))
            with open(root / "ds" / split / f"{i}.pkl", "wb") as f:
                pickle.dump({"X": x.astype(np.float32), "ch_names": CHANNELS}, f)
    (root / "text").mkdir()
    ids = rng.integers(0, EOT_TOKEN_ID, TEXT_TOKENS).astype(np.uint16)
    ids.tofile(root / "text" / "train.bin")
    return root / "ds", root / "text"


def common_flags(shape: dict, ds: Path, text: Path, out: Path, device: str) -> list[str]:
    return ["--preset", shape["preset"], "--dataset_dir", str(ds), "--text_dir", str(text),
            "--out_dir", str(out), "--block_size", str(len(CHANNELS) * SECONDS),
            "--batch_size", str(shape["batch_size"]), "--text_block_size",
            str(shape["text_block"]), "--num_workers", "0", "--resume", "none",
            "--device", device]


def run_trainer(script: str, flags: list[str], log: Path) -> float:
    """Run a stage script to the end; returns its peak resident memory in MB (its own, through
    wait4, not the largest child's so far)."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(REPO / script), *flags], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed:\n{log.read_text()[-3000:]}")
    # Linux reports kilobytes, macOS bytes.
    return usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def step_times(metrics: Path) -> list[float]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss" in r and "step" in r]
    return [b["time"] - a["time"] for a, b in zip(rows, rows[1:]) if b["step"] == a["step"] + 1]


def measure(stage_name: str, shape_name: str, steps: int, device: str) -> dict:
    shape = SHAPES[shape_name]
    n_text = shape["vq_text" if stage_name == "vq" else "lm_text"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # warm-up + timed steps in one epoch: the epoch-end validation comes after the last one
        ds, text = write_inputs(root, shape["batch_size"] * (steps + 1), shape["batch_size"])
        flags = common_flags(shape, ds, text, root / "out", device)
        flags += ["--max_steps", str(steps + 1), "--log_every", "1", "--save_every", "0",
                  "--text_batch_size", str(n_text)]
        script = "train_vq.py"
        if stage_name == "pretrain":
            script = "train_pretrain.py"
            tokenizer = common_flags(shape, ds, text, root / "vq", device) + ["--max_steps", "0"]
            run_trainer("train_vq.py", tokenizer, root / "vq.log")
            flags += ["--tokenizer_path", str(root / "vq" / "last.pt")]
        peak_mb = run_trainer(script, flags, root / "train.log")
        # the first step (k-means init, allocator, kernels) is the untimed warm-up
        seconds = sum(step_times(root / "out" / "metrics.jsonl")[-steps:]) / steps
        params = float(re.search(r"trainable: ([\d.]+) M of",
                                 (root / "train.log").read_text()).group(1))
        eeg_tokens = shape["batch_size"] * len(CHANNELS) * SECONDS  # the samples fill the block
        step_tokens = eeg_tokens + n_text * shape["text_block"]
        return {"stage": stage_name, "shape": shape_name, "device": device,
                "trainable_params_M": params, "eeg_batch": shape["batch_size"],
                "eeg_tokens": eeg_tokens, "text_tokens": n_text * shape["text_block"],
                "s_per_step": round(seconds, 4), "steps_per_s": round(1 / seconds, 3),
                "tokens_per_s": round(step_tokens / seconds, 1), "peak_rss_MB": round(peak_mb, 1)}


def print_table(rows: list[dict]) -> None:
    cols = ["stage", "shape", "trainable_params_M", "eeg_batch", "eeg_tokens", "text_tokens",
            "s_per_step", "steps_per_s", "tokens_per_s", "peak_rss_MB"]
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
    args = parser.parse_args(argv)
    rows = []
    for shape in args.shapes:
        for stage in args.stages:
            rows.append(measure(stage, shape, args.steps, args.device))
            print(f"done: {stage} {shape}", file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
