"""PickleLoader throughput: samples per second with targets (tokenizer stage) and without
(pretraining), and bytes of sample file per returned sample, on generated float32 samples.

    python bench/bench_loader.py [--samples 200] [--json PATH]
"""

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

# run as a file: make the repo importable
from dataset import LEGACY_TUH_CHANNELS, SAMPLING_RATE, PickleLoader  # noqa: E402

BLOCK_SIZE = 1024  # EEG tokens per pretraining sample (spec section 1)
AMPLITUDE_UV = 20  # EEG-like spread of the random samples
WARM_UP_ITEMS = 10  # read first, untimed: page cache and torch's kernels


def write_samples(folder: Path, n: int, seconds: int) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(n):
        X = AMPLITUDE_UV * rng.standard_normal((len(LEGACY_TUH_CHANNELS), SAMPLING_RATE * seconds))
        path = folder / f"{i}.pkl"
        sample = {"X": X.astype(np.float32), "ch_names": LEGACY_TUH_CHANNELS, "y": i % 2}
        path.write_bytes(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))
        files.append(path)
    return files


def samples_per_second(loader: PickleLoader) -> float:
    for i in range(min(WARM_UP_ITEMS, len(loader))):
        loader[i]
    start = time.perf_counter()
    for i in range(len(loader)):
        loader[i]
    return len(loader) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=44,
                        help="sample length (44 s x 23 channels = 1012 tokens)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = write_samples(Path(tmp), args.samples, args.seconds)
        bytes_per_sample = sum(p.stat().st_size for p in files) / len(files)
        report = {"samples": args.samples, "channels": len(LEGACY_TUH_CHANNELS),
                  "seconds": args.seconds,
                  "bytes_per_sample_file": int(bytes_per_sample),
                  "samples_per_s_with_targets": round(samples_per_second(
                      PickleLoader(files, BLOCK_SIZE, targets=True)), 1),
                  "samples_per_s_without_targets": round(samples_per_second(
                      PickleLoader(files, BLOCK_SIZE, targets=False)), 1)}
    print(f"with targets: {report['samples_per_s_with_targets']} samples/s; without: "
          f"{report['samples_per_s_without_targets']} samples/s; "
          f"{report['bytes_per_sample_file'] / 1e3:.0f} kB per sample")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
