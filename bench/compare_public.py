"""Side by side against the public NeuroLM code: same weights, same inputs, one run.

    python bench/compare_public.py --public /work/public_neurolm [--size tiny|B]
        [--only generate_b1,generate_b8,pretrain,pretrain_recompute,vq,loader_vq,loader_gpt]
        [--project_dtypes float32,bfloat16] [--reps 1] [--workdir DIR] [--json out.json]

The protocol of ../shared/bench/README.md. The public code (a checkout of 935963004/NeuroLM,
e.g. `git -C <fetched git dir> archive HEAD | tar -x -C /work/public_neurolm`) builds
random-weight VQ_Align and NeuroLM and saves them in its own checkpoint layout; the project
loads those files with `model.load_vq` / `model.load_neurolm`. Per workload and rep one public
child process, then one project child (A B A B ...): each loads, warms up once, times one run,
prints one JSON line and exits, so its peak RSS is its own. 2 threads. The public code runs as
published: fp32 on a CPU. The project runs once per --project_dtypes precision (rows
"WORKLOAD" in fp32, "WORKLOAD@bfloat16" ...; the loaders in fp32 only): generation with that
inference copy, the training steps under that autocast. A ratio > 1 means the project is faster
(or, for memory, smaller); bench/floors.py --compare states each project figure as a share of
its floor in its precision. Equality: step-0 losses of the training
steps, greedy tokens against the public model's math with a correct mask, the loaders' first
sample.

This file is the command: it starts the children and compares what they print. What each side
runs: bench/public_side.py (with its offline patches) and bench/project_side.py; what they share
(sizes, file layout, timing): bench/compare_setup.py. The loaders: the public PickleLoader
computes each sample's reconstruction targets as it reads it; the project reads samples without
them and computes them for a batch (train_vq.py's path), so loader_vq times reading plus targets
on both sides.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from compare_setup import LAST_CPU_S, N_LOADER_FILES, SIZES
from project_side import (
    prep_inputs,
    project_generate,
    project_loader,
    project_pretrain,
    project_vq,
)
from public_side import prep_weights, public_generate, public_loader, public_pretrain, public_vq

WORKLOADS = ["generate_b1", "generate_b8", "pretrain", "pretrain_recompute", "vq", "loader_vq",
             "loader_gpt"]

CHILDREN = {   # (public side, project side(public, size, work, dtype))
    "prep": (prep_weights, lambda *a, dtype: prep_inputs(*a)),
    "generate_b1": (lambda *a: public_generate(*a, 1),
                    lambda *a, dtype: project_generate(*a, 1, dtype)),
    "generate_b8": (lambda *a: public_generate(*a, 8),
                    lambda *a, dtype: project_generate(*a, 8, dtype)),
    "pretrain": (public_pretrain, lambda *a, dtype: project_pretrain(*a, dtype=dtype)),
    "pretrain_recompute": (public_pretrain,
                           lambda *a, dtype: project_pretrain(*a, recompute=True, dtype=dtype)),
    "vq": (public_vq, lambda *a, dtype: project_vq(*a, dtype=dtype)),
    "loader_vq": (lambda *a: public_loader(*a, True),
                  lambda *a, dtype: project_loader(*a, True)),
    "loader_gpt": (lambda *a: public_loader(*a, False),
                   lambda *a, dtype: project_loader(*a, False)),
}
FP32_ONLY = ("loader_vq", "loader_gpt")
PROJECT_DTYPES = ("float32", "bfloat16", "int8")   # int8: generation only (inference)


def run_child(side, workload, args, dtype="float32") -> dict:
    cmd = [sys.executable, __file__, "--child", side, workload, "--public", args.public,
           "--size", args.size, "--workdir", str(args.workdir), "--child_dtype", dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(args.workdir))
    if proc.returncode != 0:
        raise SystemExit(f"{side} {workload} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def max_diff(a, b) -> float:
    import numpy as np
    return float(np.max(np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float))))


def compare(workload, pub, proj) -> dict:
    if workload.startswith("generate"):
        return {"tokens_equal_reference": proj["tokens"] == pub["tokens"]}
    if workload.startswith("loader"):
        return {f"max_abs_diff_{k}": max_diff(pub["first"][k], proj["first"][k])
                for k in pub["first"]}
    return {f"step0_{k}_diff": abs(pub["step0"][k] - proj["step0"][k]) for k in pub["step0"]}


def summary(workload, public_runs, project_runs, key) -> dict:
    runs = {"public": public_runs, "project": project_runs}
    med = {s: statistics.median(r["seconds"] for r in runs[s]) for s in runs}
    cpu = {s: statistics.median(r["cpu_s"] for r in runs[s]) for s in runs}
    peak = {s: max(r["peak_rss_mib"] for r in runs[s]) for s in runs}
    row = dict(public_s=med["public"], project_s=med["project"],
               speedup=med["public"] / med["project"],
               public_cpu_s=cpu["public"], project_cpu_s=cpu["project"],
               cpu_speedup=cpu["public"] / cpu["project"],
               public_peak_mib=peak["public"], project_peak_mib=peak["project"],
               memory_ratio=peak["project"] / peak["public"],
               **compare(workload, runs["public"][0], runs["project"][0]))
    if "tokens_per_step" in runs["project"][0]:
        row["project_tokens_per_s"] = runs["project"][0]["tokens_per_step"] / med["project"]
    if "samples_per_s" in runs["project"][0]:
        row["project_samples_per_s"] = N_LOADER_FILES / med["project"]
        row["public_samples_per_s"] = N_LOADER_FILES / med["public"]
    if "step0" in runs["project"][0]:
        row["step0_public"] = runs["public"][0]["step0"]
        row["step0_project"] = runs["project"][0]["step0"]
    print(f"{key:21s} public {med['public']:8.3f} s  project {med['project']:8.3f} s  "
          f"speedup {row['speedup']:5.2f}x (CPU time {row['cpu_speedup']:5.2f}x)  "
          f"peak MiB {peak['public']:7.0f} / "
          f"{peak['project']:7.0f}  " + "  ".join(
              f"{k}={v}" for k, v in row.items() if k.startswith(("step0_", "tokens_", "max_"))
              and not isinstance(v, dict)), flush=True)
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--public", required=True, help="extracted tree of the public NeuroLM code")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--only", default=",".join(WORKLOADS))
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--project_dtypes", default="float32,bfloat16",
                   help="the project's precisions, comma-separated: " + ", ".join(PROJECT_DTYPES))
    p.add_argument("--workdir", type=Path,
                   default=Path(tempfile.gettempdir()) / "neurolm-compare-public")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", nargs=2, metavar=("SIDE", "WORKLOAD"), help=argparse.SUPPRESS)
    p.add_argument("--child_dtype", default="float32", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.public = os.path.abspath(args.public)
    if not (Path(args.public) / "model" / "model_neurolm.py").exists():
        print(f"--public {args.public}: not a checkout of the public NeuroLM code",
              file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        side, workload = args.child
        fn = CHILDREN[workload][0]
        if side == "project":
            fn = functools.partial(CHILDREN[workload][1], dtype=args.child_dtype)
        print(json.dumps({**fn(args.public, args.size, args.workdir), "cpu_s": LAST_CPU_S[0]}))
        return 0
    workloads = [w for w in args.only.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        print(f"--only: unknown workload(s) {unknown}; choose from {WORKLOADS}", file=sys.stderr)
        return 2
    dtypes = [d for d in args.project_dtypes.split(",") if d]
    if not dtypes or any(d not in PROJECT_DTYPES for d in dtypes):
        print(f"--project_dtypes {args.project_dtypes}: choose from {PROJECT_DTYPES}",
              file=sys.stderr)
        return 2
    run_child("public", "prep", args)     # weights in the public layout
    run_child("project", "prep", args)    # inputs, with the project's channel names
    results = {}
    for workload in workloads:
        mine = [d for d in dtypes if d == "float32" or (workload not in FP32_ONLY and (
            d != "int8" or workload.startswith("generate")))]
        sides = ["public", *(f"project@{d}" for d in mine)]
        runs = {side: [] for side in sides}
        for _ in range(args.reps):
            for side in sides:   # A B A B: ratios from the same machine state
                name, _, dtype = side.partition("@")
                runs[side].append(run_child(name, workload, args, dtype or "float32"))
        for dtype in mine:
            key = workload if dtype == "float32" else f"{workload}@{dtype}"
            results[key] = summary(workload, runs["public"], runs[f"project@{dtype}"], key)
    if args.json:
        args.json.write_text(json.dumps(dict(size=args.size, reps=args.reps, results=results),
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
