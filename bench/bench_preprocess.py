"""Preprocessing throughput: recording-hours per minute and bytes written per recording-hour,
with 1 worker and with all cores, on synthetic TUAB recordings (dataset_maker/make_synthetic.py:
23 channels and an EKG lead, 250 Hz).

    python bench/bench_preprocess.py [--recordings 8] [--minutes 5] [--json PATH]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from dataset_maker import make_synthetic, prepare_TUAB  # noqa: E402
from dataset_maker import synthetic_signals as sig  # noqa: E402

EVAL_EVERY = 4  # every 4th recording goes to the official eval folder, the others to train


def measure(raw: Path, out: Path, workers: int, hours: float) -> dict:
    start = time.perf_counter()
    prepare_TUAB.main(["--raw_dir", str(raw), "--out_dir", str(out), "--workers", str(workers)])
    seconds = time.perf_counter() - start
    written = sum(p.stat().st_size for p in out.rglob("*.pkl"))
    return {"workers": workers, "seconds": round(seconds, 2),
            "recording_hours_per_minute": round(hours / (seconds / 60), 3),
            "bytes_per_recording_hour": int(written / hours)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="length of each generated recording")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        for i in range(args.recordings):
            folder = "eval" if i % EVAL_EVERY == EVAL_EVERY - 1 else "train"
            label = "abnormal" if i % 2 else "normal"
            rng = np.random.default_rng(i)
            make_synthetic.write_tuab_recording(
                raw / folder / label / "01_tcp_ar" / f"s{i:07d}_s001_t000.edf", label,
                args.minutes * 60, rng, sig.Subject.draw(rng))
        hours = args.recordings * args.minutes / 60
        results = [measure(raw, Path(tmp) / f"out{w}", w, hours)
                   for w in sorted({1, os.cpu_count() or 1})]
    report = {"recordings": args.recordings, "minutes_each": args.minutes,
              "channels": len(prepare_TUAB.SIGNAL.channels), "source_hz": make_synthetic.TUH_HZ,
              "cores": os.cpu_count(), "results": results}
    for r in results:
        print(f"{r['workers']} worker(s): {r['recording_hours_per_minute']} recording-hours/min, "
              f"{r['bytes_per_recording_hour'] / 1e6:.1f} MB per recording-hour ({r['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
