"""Run every benchmark of the project and write one JSON with their figures and the machine.

    python bench/run_all.py --json bench.json [--quick]

Each benchmark runs in its own process (as `python bench/<name>.py --json TMP`), so one that
fails is reported and the others still run. --quick passes each benchmark its small settings.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
# Arguments that keep each benchmark to a few minutes on a 2-core laptop.
QUICK_ARGS = {
    "bench_generate.py": ["--quick"],
    "bench_train.py": [],
    "bench_preprocess.py": [],
    "bench_loader.py": [],
}


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    try:
        import torch
        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                   / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def run_benchmark(script: Path, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        started = time.time()
        result = subprocess.run([sys.executable, str(script), "--json", str(out), *extra],
                                cwd=BENCH_DIR.parent)
        record = {"seconds": round(time.time() - started, 1), "exit_code": result.returncode}
        if result.returncode == 0 and out.exists():
            record["figures"] = json.loads(out.read_text())
        return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, required=True, help="where to write the figures")
    parser.add_argument("--quick", action="store_true", help="small settings for each benchmark")
    parser.add_argument("--only", nargs="+", metavar="NAME",
                        help="run only these benchmarks (e.g. bench_loader.py)")
    args = parser.parse_args(argv)

    scripts = sorted(p for p in BENCH_DIR.glob("bench_*.py")
                     if not args.only or p.name in args.only)
    report = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(), "benchmarks": {}}
    for script in scripts:
        print(f"\n== {script.name}", flush=True)
        extra = QUICK_ARGS.get(script.name, []) if args.quick else []
        report["benchmarks"][script.name] = run_benchmark(script, extra)
    tmp = args.json.with_name(args.json.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(args.json)
    failed = [name for name, r in report["benchmarks"].items() if r["exit_code"] != 0]
    print(f"\nwrote {args.json}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
