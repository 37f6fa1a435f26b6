"""Tiny inputs for the trainer tests, written directly with numpy (no synthetic EDF pipeline).

A processed dataset folder holds `train/*.pkl` and `val/*.pkl` sample files in the layout every
prepare script writes; a text folder holds `train.bin` / `val.bin` of uint16 GPT-2 ids.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CHANNELS = ["FP1", "FP2", "C3", "C4"]   # all in the channel vocabulary
SECONDS = 4                             # 4 channels x 4 s = 16 tokens per sample
SFREQ = 200
TEXT_VOCAB = 50257


def _sample(rng: np.random.Generator, n_channels: int, seconds: int) -> np.ndarray:
    """Sinusoids plus noise, tens of microvolts: enough structure for a loss to fall."""
    t = np.arange(seconds * SFREQ) / SFREQ
    freqs = rng.uniform(2.0, 30.0, size=(n_channels, 1))
    phase = rng.uniform(0, 2 * np.pi, size=(n_channels, 1))
    x = (40.0 * np.sin(2 * np.pi * freqs * t + phase)
         + 5.0 * rng.standard_normal((n_channels, t.size)))
    return x.astype(np.float32)


def write_dataset(root: Path, n_train: int = 8, n_val: int = 4, channels=CHANNELS,
                  seconds: int = SECONDS, seed: int = 0) -> Path:
    """`root/{train,val}/*.pkl` pretraining samples ({"X", "ch_names"}, no label)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            sample = {"X": _sample(rng, len(channels), seconds), "ch_names": list(channels)}
            with open(folder / f"s{i:03d}.pkl", "wb") as f:
                pickle.dump(sample, f)
    return root


def write_text(root: Path, n_tokens: int = 20_000, seed: int = 0) -> Path:
    """`root/train.bin` and `root/val.bin`: uint16 ids, a few repeated "documents"."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    # a small set of repeated phrases so the text loss can fall too
    phrases = [rng.integers(0, TEXT_VOCAB - 1, size=rng.integers(5, 20)) for _ in range(20)]
    for name, count in (("train.bin", n_tokens), ("val.bin", n_tokens // 4)):
        ids = []
        while len(ids) < count:
            ids.extend(phrases[rng.integers(len(phrases))].tolist())
            ids.append(TEXT_VOCAB - 1)   # <|endoftext|>
        np.asarray(ids[:count], dtype=np.uint16).tofile(root / name)
    return root


# ----------------------------------------------------------------------------- shared runs

TINY_ARGS = ["--preset", "tiny", "--block_size", "32", "--text_block_size", "32",
             "--batch_size", "2", "--num_workers", "0", "--log_every", "1", "--resume", "none"]

_CACHE: dict = {}


def tiny_inputs(tmp_root: Path) -> tuple[Path, Path]:
    """(dataset folder, text folder), written once per test session."""
    if "inputs" not in _CACHE:
        _CACHE["inputs"] = (write_dataset(tmp_root / "ds"), write_text(tmp_root / "text"))
    return _CACHE["inputs"]


def vq_args(dataset: Path, text: Path, out_dir: Path, *extra: str) -> list[str]:
    return [*TINY_ARGS, "--dataset_dir", str(dataset), "--text_dir", str(text),
            "--out_dir", str(out_dir), *extra]


def pretrain_args(tokenizer: Path, dataset: Path, text: Path, out_dir: Path, *extra: str):
    return [*vq_args(dataset, text, out_dir), "--tokenizer_path", str(tokenizer), *extra]


def tiny_vq_checkpoint(tmp_root: Path) -> Path:
    """A VQ checkpoint from 4 steps of train_vq.py, trained once per test session."""
    if "vq" not in _CACHE:
        import torch

        import train_vq

        dataset, text = tiny_inputs(tmp_root)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)   # see single_thread below
        try:
            _CACHE["vq"] = train_vq.main(vq_args(dataset, text, tmp_root / "vq",
                                                 "--max_steps", "4"))
        finally:
            torch.set_num_threads(threads)
    return _CACHE["vq"]


# ----------------------------------------------------------------------------- test helpers

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def overfit_losses(trainer, argv, key: str, steps: int, lr: float) -> list[float]:
    """`steps` optimizer steps of the trainer's own train_step on one fixed batch (and, with
    step index 0 every time, one fixed text batch and alpha 0)."""
    import training

    args = trainer.parse_args(argv)
    try:
        stage = trainer.build_stage(args)
        training.set_lr(stage.optimizer, lr)
        stage.loader.set_epoch(0)
        batch = next(iter(stage.loader))
        return [stage.train_step([batch], 0, 1)[key] for _ in range(steps)]
    finally:
        training.cleanup_runtime()


def run_under_torchrun(which: str, dump_dir: Path, argv: list[str], nproc: int = 2,
                       timeout: int = 240) -> list[dict]:
    """Run tests/ddp_train_driver.py on `nproc` CPU ranks (gloo); the ranks' final states."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--standalone", str(REPO / "tests" / "ddp_train_driver.py"), which,
           str(dump_dir), *argv, "--device", "cpu"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return [torch.load(dump_dir / f"rank{r}.pt", weights_only=True) for r in range(nproc)]
