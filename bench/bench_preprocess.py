"""Preprocessing throughput: recording-hours per minute and bytes written per recording-hour,
with 1 worker and with all cores, on generated TUAB-style recordings (23 channels, 250 Hz).

    python bench/bench_preprocess.py [--recordings 8] [--minutes 5] [--json PATH]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a file: make the repo importable
sys.path.insert(0, str(REPO / "tests"))

import raw_fixtures  # noqa: E402
from dataset_maker import prepare_TUAB  # noqa: E402


def measure(raw: Path, out: Path, workers: int, hours: float) -> dict:
    start = time.perf_counter()
    prepare_TUAB.main(["--raw_dir", str(raw), "--out_dir", str(out), "--workers", str(workers)])
    seconds = time.perf_counter() - start
    written = sum(p.stat().st_size for p in out.rglob("*.pkl"))
    return {"workers": workers, "seconds": round(seconds, 2), "recording_hours_per_minute": round(hours / (seconds / 60), 3),
            "bytes_per_recording_hour": int(written / hours)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recordings", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=5.0, help="length of each generated recording")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        for i in range(args.recordings):
            folder = "eval" if i % 4 == 3 else "train"
            raw_fixtures.write_tuh_edf(raw / folder / ("abnormal" if i % 2 else "normal") / "01_tcp_ar" /
                                       f"s{i:07d}_s001_t000.edf", args.minutes * 60, seed=i)
        hours = args.recordings * args.minutes / 60
        results = [measure(raw, Path(tmp) / f"out{w}", w, hours) for w in sorted({1, os.cpu_count() or 1})]
    report = {"recordings": args.recordings, "minutes_each": args.minutes, "channels": 23, "source_hz": 250,
              "cores": os.cpu_count(), "results": results}
    for r in results:
        print(f"{r['workers']} worker(s): {r['recording_hours_per_minute']} recording-hours/min, "
              f"{r['bytes_per_recording_hour'] / 1e6:.1f} MB per recording-hour ({r['seconds']} s)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
