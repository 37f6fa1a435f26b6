"""Whole-recording inference: windows per second of `simple_inference.py --edf`, one window at a
time (--batch_size 1, the former path) against batches of --batch_size windows.

Shape "B" = GPT-2 124M on a 12-layer 768-wide encoder (NeuroLM-B, random weights, end token
never chosen so every answer decodes in full), "tiny" a 2-layer one. The recording is a synthetic
TUAB-style EDF (23 channels, 250 Hz), cut into TUAB's 10 s windows (230 EEG tokens each). The
script is run as a command (bench/ imports no stage script); the figure is its own answer time
(the per-window inference_seconds of answers.json), so process start, reading the recording
and model load are left out.

--baseline DIR times the `simple_inference.py --edf` of another checkout of this project on the
same recording and model with its own defaults: e.g. the commit before batched windows (224b952,
one window at a time, one PNG and one JSON per window), what issue 15's "today's one-window path"
means. That path writes no answer times: its time per window is the difference between its
whole-command wall times for the recording and for window 0 alone, per extra window. A
benchmark, not a test:

    .venv/bin/python bench/bench_inference.py [--shape B] [--seconds 160] [--batch_size 16]
        [--threads N] [--dtypes float32,bfloat16,int8] [--baseline DIR] [--json out.json]

Every run names its precision (`--dtype`; `auto` would mean bf16 on a CPU with bf16 units): the
first of --dtypes is the reference for both paths, each further one is timed batched and its
answers compared with the reference's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

from dataset_maker import make_synthetic  # noqa: E402
from dataset_maker import synthetic_signals as sig  # noqa: E402
from model import NeuroLM, neurolm_checkpoint  # noqa: E402
from model.gpt2_bpe import EOT_TOKEN_ID  # noqa: E402
from model.model import GPT_PRESETS, GPTConfig  # noqa: E402
from model.model_neural_transformer import NTConfig  # noqa: E402
from model.precision import INFERENCE_DTYPES  # noqa: E402

SHAPES = {
    "B": (GPTConfig(**GPT_PRESETS["gpt2"], bias=True), NTConfig()),
    "tiny": (GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=512),
             NTConfig(n_layer=2, n_head=2, n_embd=32, out_chans=8)),
}


def write_model(shape: str, path: Path) -> Path:
    torch.manual_seed(0)
    gpt_config, encoder_config = SHAPES[shape]
    model = NeuroLM(gpt_config, encoder_config).eval()
    with torch.no_grad():   # random weights must not end answers early
        model.GPT2.lm_head.weight[EOT_TOKEN_ID].zero_()
    torch.save(neurolm_checkpoint(model), path)
    return path


def windows_per_second(lm: Path, edf: Path, batch_size: int, out: Path, threads: int,
                       dtype: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, str(REPO / "simple_inference.py"), "--model_path", str(lm),
               "--edf", str(edf), "--task", "TUAB", "--plot", "none", "--batch_size",
               str(batch_size), "--out_dir", str(out), "--device", "cpu", "--dtype", dtype]
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"simple_inference.py failed:\n{proc.stderr[-2000:]}")
    answers = json.loads(next(out.glob("*/answers.json")).read_text())
    seconds = sum(w["inference_seconds"] for w in answers["windows"])
    shutil.rmtree(out)   # the next run must find only its own folder
    return {"dtype": dtype, "batch_size": batch_size, "windows": len(answers["windows"]),
            "windows_per_s": round(len(answers["windows"]) / seconds, 4),
            "answer_s": round(seconds, 2), "command_wall_s": round(wall, 1),
            "answers": [(w["generated_text"], w["label"]) for w in answers["windows"]]}


def baseline_wall(checkout: Path, lm: Path, edf: Path, out: Path, threads: int,
                  windows: int) -> dict:
    """Another checkout's --edf path with its own defaults, whole-command wall time: once for
    window 0 only (--window 0) and once for the whole recording; the difference per extra
    window is its answer time per window (start, model load and preprocessing cancel out)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "simple_inference.py", "--model_path", str(lm), "--edf", str(edf),
               "--task", "TUAB", "--device", "cpu"]
    walls = []
    for extra, folder in ((["--window", "0"], "one"), ([], "all")):
        start = time.perf_counter()
        proc = subprocess.run(command + ["--out_dir", str(out / folder)] + extra, cwd=checkout,
                              env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise SystemExit(f"{checkout}/simple_inference.py failed:\n{proc.stderr[-2000:]}")
    per_window = (walls[1] - walls[0]) / (windows - 1)
    return {"checkout": str(checkout), "command_wall_one_window_s": round(walls[0], 1),
            "command_wall_s": round(walls[1], 1), "windows_per_s": round(1 / per_window, 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="B")
    p.add_argument("--seconds", type=float, default=160, help="recording length (10 s windows)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--dtypes", default="float32",
                   help="comma-separated --dtype values; the first is the reference")
    p.add_argument("--baseline", type=Path, default=None,
                   help="another checkout of this project whose --edf path is timed too")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    dtypes = args.dtypes.split(",")
    unknown = sorted(set(dtypes) - set(INFERENCE_DTYPES))
    if unknown:
        p.error(f"--dtypes: unknown {unknown}; choose from {', '.join(INFERENCE_DTYPES)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lm = write_model(args.shape, tmp / "lm.pt")
        rng = np.random.default_rng(0)
        edf = make_synthetic.write_tuab_recording(tmp / "rec.edf", "normal", args.seconds, rng,
                                                  sig.Subject.draw(rng)).path
        one = windows_per_second(lm, edf, 1, tmp / "out", args.threads, dtypes[0])
        batched = windows_per_second(lm, edf, args.batch_size, tmp / "out", args.threads,
                                     dtypes[0])
        others = [windows_per_second(lm, edf, args.batch_size, tmp / "out", args.threads, d)
                  for d in dtypes[1:]]
        base = (baseline_wall(args.baseline.resolve(), lm, edf, tmp / "base", args.threads,
                              batched["windows"]) if args.baseline else None)
    same = one.pop("answers") == batched["answers"]
    for other in others:
        pairs = list(zip(other.pop("answers"), batched["answers"]))
        other["same_answers"] = round(sum(a == b for a, b in pairs) / len(pairs), 4)
        other["speedup_vs_reference"] = round(other["windows_per_s"] / batched["windows_per_s"], 2)
    batched.pop("answers")
    result = {"shape": args.shape, "threads": args.threads, "one_window": one,
              "batched": batched, "speedup": round(batched["windows_per_s"]
                                                   / one["windows_per_s"], 2),
              "identical_answers": same, "other_dtypes": others}
    print(f"shape {args.shape}, {one['windows']} windows of 10 s, {args.threads} threads\n"
          f"  one window at a time, {dtypes[0]:8s}: {one['windows_per_s']:.3g} windows/s\n"
          f"  batches of {args.batch_size}, {dtypes[0]:8s}  : {batched['windows_per_s']:.3g} "
          f"windows/s\n  speed-up {result['speedup']}x, identical answers: {same}")
    for other in others:
        print(f"  batches of {args.batch_size}, {other['dtype']:8s}  : "
              f"{other['windows_per_s']:.3g} windows/s ({other['speedup_vs_reference']}x "
              f"{dtypes[0]}), same answer as {dtypes[0]} on {100 * other['same_answers']:.0f} % "
              f"of windows")
    if base:
        base["speedup"] = round(batched["windows_per_s"] / base["windows_per_s"], 2)
        result["baseline"] = base
        print(f"  {base['checkout']} (its defaults): {base['windows_per_s']:.3g} windows/s "
              f"(whole commands {base['command_wall_one_window_s']} s for one window, "
              f"{base['command_wall_s']} s for all); batches of {args.batch_size} here: "
              f"{base['speedup']}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
