"""What both sides of bench/compare_public.py share: the sizes compared, where a run keeps its
checkpoints and inputs, and how a child process times a workload and reads its peak memory.

Imports nothing of either codebase: a public child puts the public checkout first on sys.path,
a project child the repository, and each then imports its own `model` and `dataset`.
"""
from __future__ import annotations

import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREADS = 2
GEN_SECONDS, GEN_NEW, PT_BATCH, TEXT_BLOCK, N_LOADER_FILES = 12, 32, 2, 1024, 200
VQ_BATCH = 8    # samples whose reconstruction targets the project computes together
SIZES = {
    "tiny": dict(gpt=dict(n_layer=2, n_head=2, n_embd=128),
                 enc=dict(n_layer=2, n_head=2, n_embd=128),
                 dec=dict(n_layer=2, n_head=2, n_embd=128)),
    "B": dict(gpt=dict(n_layer=12, n_head=12, n_embd=768),
              enc=dict(n_layer=12, n_head=12, n_embd=768),
              dec=dict(n_layer=4, n_head=12, n_embd=768)),
}


def peak_rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


LAST_CPU_S = [0.0]   # CPU seconds (all threads) of the last timed() call: steadier than wall
                     # time when other processes share the cores


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    LAST_CPU_S[0] = time.process_time() - c0
    return time.perf_counter() - t0, out


def timed_step(step) -> dict:
    """A training step's figures: step 0 (its logs, for the equality check), then one timed
    step; peak RSS over both (AdamW's state appears at step 0)."""
    reset_peak_rss()
    first = step()
    sec, _ = timed(step)
    return dict(seconds=sec, peak_rss_mib=peak_rss_mib(), step0=first,
                tokens_per_step=PT_BATCH * (1024 + TEXT_BLOCK))


def enc_dec_args(size):
    c = SIZES[size]
    enc = dict(block_size=1024, bias=False, dropout=0.0, num_classes=0, in_chans=1, out_chans=16,
               **c["enc"])
    dec = dict(block_size=1024, bias=False, dropout=0.0, num_classes=0, in_chans=128, **c["dec"])
    return enc, dec


def files(work: Path, size: str) -> dict:
    return dict(vq=work / f"ckpt-{size}" / "VQ.pt", lm=work / f"ckpt-{size}" / "NeuroLM.pt",
                inputs=work / "inputs", pretrain=work / "pretrain_pkl", loader=work / "loader_pkl")


def loader_pass(ds, first_of) -> dict:
    """One untimed pass over a sample dataset, then one timed; the first item (through
    first_of) for the equality check."""

    def one_pass():
        for i in range(len(ds)):
            ds[i]
    one_pass()
    reset_peak_rss()
    sec, _ = timed(one_pass)
    first = {k: v.tolist() for k, v in first_of(ds[0]).items()}
    return dict(seconds=sec, samples_per_s=len(ds) / sec, peak_rss_mib=peak_rss_mib(),
                first=first)
