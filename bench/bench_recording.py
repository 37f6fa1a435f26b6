"""Whole recordings in bounded memory: peak RSS and seconds of `simple_inference.py --edf` on a
20 s, a 2 h and an 8 h synthetic recording (19 channels, 256 Hz), each in a fresh process.

The recording is streamed block by block (inference/recordings.py), so peak memory should not
grow with its length (the target: the 8 h peak within 1.5x of the 20 s one) and time should grow
linearly. The EDFs are written here record by record (an 8 h file is 280 MB on disk and never
held in memory); the model is a tiny random-weight NeuroLM (timings only: its answers mean
nothing), task HMC with --channels all (19 channels: 14 s windows), the timeline figure drawn.
Measured 2026-12-03 on 2 shared CPU cores: 20 s 562 MB in 23 s; 2 h 721 MB in 86 s; 8 h
670 MB in 313 s (39 s per recorded hour, most of it the model's answers). Peak memory at most
1.28x the 20 s one. A benchmark, not a test:

    .venv/bin/python bench/bench_recording.py [--hours 0.00556 2 8] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from bench_inference import write_model  # noqa: E402  (bench/ is the script's folder)

CHANNELS = ("Fp1 Fp2 F3 F4 F7 F8 T3 T4 C3 C4 T5 T6 P3 P4 O1 O2 Fz Cz Pz").split()
SFREQ = 256
PHYSICAL_UV = 1000.0   # +-1 mV over the 16-bit range: 0.03 uV steps


def _field(values, width: int) -> bytes:
    return b"".join(str(v)[:width].ljust(width).encode("ascii") for v in values)


def write_edf(path: Path, seconds: int, seed: int = 0) -> Path:
    """An EDF of 1 s records: alpha and noise, tens of microvolts, written a minute at a time."""
    n = len(CHANNELS)
    header = (_field(["0"], 8) + _field(["bench"], 80) + _field(["synthetic"], 80)
              + _field(["01.01.26"], 8) + _field(["00.00.00"], 8) + _field([256 * (n + 1)], 8)
              + _field([""], 44) + _field([seconds], 8) + _field([1], 8) + _field([n], 4))
    header += (_field([f"EEG {c}" for c in CHANNELS], 16) + _field(["AgAgCl"] * n, 80)
               + _field(["uV"] * n, 8) + _field([-PHYSICAL_UV] * n, 8)
               + _field([PHYSICAL_UV] * n, 8) + _field([-32768] * n, 8)
               + _field([32767] * n, 8) + _field([""] * n, 80) + _field([SFREQ] * n, 8)
               + _field([""] * n, 32))
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    scale = 32767 / PHYSICAL_UV
    with open(path, "wb") as f:
        f.write(header)
        for start in range(0, seconds, 60):
            length = min(60, seconds - start)
            t = start + np.arange(length * SFREQ) / SFREQ
            uv = 30 * np.sin(2 * np.pi * 10 * t + phase) + 10 * rng.standard_normal((n, t.size))
            digital = np.clip(np.round(uv * scale), -32768, 32767).astype("<i2")
            # records: (seconds, channels, samples) in file order
            f.write(digital.reshape(n, length, SFREQ).transpose(1, 0, 2).tobytes())
    return path


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (the peak resident set) of a running process, None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(model: Path, edf: Path, out_dir: Path) -> dict:
    """simple_inference.py as a command; its peak RSS read from /proc until it ends."""
    command = [sys.executable, str(REPO / "simple_inference.py"), "--model_path", str(model),
               "--edf", str(edf), "--task", "HMC", "--channels", "all", "--device", "cpu",
               "--out_dir", str(out_dir)]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, peak_rss_mb(proc.pid) or 0.0)
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(proc.stderr.read()[-3000:])
    return {"seconds": seconds, "peak_rss_mb": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hours", type=float, nargs="+", default=[20 / 3600, 2, 8])
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = write_model("tiny", tmp / "tiny.pt")
        for hours in args.hours:
            seconds = max(1, int(round(hours * 3600)))
            edf = write_edf(tmp / f"rec_{seconds}s.edf", seconds)
            got = measure(model, edf, tmp / f"out_{seconds}")
            rows.append({"recording_s": seconds, **got})
            print(f"{seconds:>6d} s  peak RSS {got['peak_rss_mb']:7.0f} MB  "
                  f"{got['seconds']:8.1f} s  ({got['seconds'] / seconds * 3600:.1f} s per "
                  "recorded hour)", flush=True)
            edf.unlink()
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak memory, longest / shortest: {ratio:.2f}x (target <= 1.5x)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "ratio": ratio}, indent=1))


if __name__ == "__main__":
    main()
