"""How close the B-shape workloads of compare_public.py are to this machine's limits.

    python bench/floors.py [--workdir DIR] [--only pretrain,vq,generate] [--quick]
        [--json out.json]

Run after `bench/compare_public.py --size B` (it reuses that run's checkpoints and inputs in
--workdir). Measures, with compare_public's 2 threads, in fp32 and in bf16 (where the CPU has
bf16 matrix units, model/precision.py; measured anyway, marked emulated elsewhere):
- the machine: the GEMM rate at the training steps' shapes (2048 x 768 x 3072) and the rate at
  which a decoding step can read weights (batch-1 matrix-vector products over GPT-2's weights);
  in bf16 the better of PyTorch's matmul (what autocast training runs) and oneDNN's packed
  weights (what the bf16 inference copy runs); in int8 the int8 inference copy's
  dynamic-quantised product (generation only: nothing trains in int8);
- a training step's floor: its FLOPs (torch.utils.flop_counter, one project step) at that GEMM
  rate; the public step does the same FLOPs plus a second pass of the frozen encoder;
- generation's floor: the prefill's FLOPs at the GEMM rate plus, per new token, the matrix-vector
  products over every weight the step reads (12 blocks and the 50257 text rows of the head).
Each floor is stated in each precision. The ratio time / floor is the most any implementation of
the same math could reach here. --quick measures the machine only (no workload, no --workdir).
--compare CMP.json (compare_public.py --json) adds each project figure as a share of its floor
in its precision (floor / measured: 1.0 would be the floor itself).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import compare_setup as cs  # noqa: E402
import project_side as ps  # noqa: E402

GEMM = (2048, 768, 3072)


def rate(fn, flops: float, reps: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return flops * reps / (time.perf_counter() - start)


def machine(torch, name) -> dict:
    """GEMM rate and a batch-1 decoding step's weight-read time in one precision."""
    from model.precision import INFERENCE_DTYPES, PackedLinear, onednn_packing_available
    int8 = name == "int8"
    dtype = torch.float32 if int8 else INFERENCE_DTYPES[name]   # int8: fp32 in and out

    def matmuls(weight):
        """Ways to compute x @ weight.T in this precision: PyTorch's, and oneDNN's packed
        (bf16); int8: the inference copy's dynamic-quantised product."""
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
        linear.weight.data = weight
        if int8:
            return [PackedLinear(linear, dtype=torch.qint8)]
        ways = [lambda x: x @ weight.T]
        if dtype == torch.bfloat16 and onednn_packing_available():
            ways.append(PackedLinear(linear))
        return ways

    m, k, n = GEMM
    a, w = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    with torch.no_grad():
        gemm = max(rate(lambda: f(a), 2 * m * k * n, 20) for f in matmuls(w))
        # one decoding step's weight reads at batch 1: a GPT-2 block's four matrices, x12, + head
        mats = [torch.randn(3 * 768, 768), torch.randn(768, 768), torch.randn(3072, 768),
                torch.randn(768, 3072)] * 12 + [torch.randn(50257, 768)]
        mats = [w.to(dtype) for w in mats]
        x = {768: torch.randn(1, 768).to(dtype), 3072: torch.randn(1, 3072).to(dtype)}
        gemv_step_s, reps = float("inf"), 10
        ways = [matmuls(w) for w in mats]   # each matrix prepared (and packed) once
        for way in range(len(ways[0])):
            fns = [(w.shape[1], ws[way]) for w, ws in zip(mats, ways)]
            start = time.perf_counter()
            for _ in range(reps):
                for width, f in fns:
                    f(x[width])
            gemv_step_s = min(gemv_step_s, (time.perf_counter() - start) / reps)
    weight_bytes = sum(w.numel() * (1 if int8 else w.element_size()) for w in mats)
    return {"gemm_gflops": gemm / 1e9, "decode_weight_read_s": gemv_step_s,
            "decode_weight_gb_per_s": weight_bytes / gemv_step_s / 1e9}


def step_flops(torch, work: Path, which: str) -> tuple[float, float]:
    """(FLOPs of one project step without the optimizer, of which the frozen encoder's)."""
    from torch.utils.flop_counter import FlopCounterMode
    if which == "pretrain":
        encode, learn, _ = ps.project_pretrain_parts("B", work)
        with FlopCounterMode(display=False) as counter:
            features, y = encode()
            encoder = counter.get_total_flops()
            learn(features, y)
        return counter.get_total_flops(), encoder
    learn, _ = ps.project_vq_parts("B", work)
    with FlopCounterMode(display=False) as counter:
        learn()
    return counter.get_total_flops(), 0


def prefill_flops(torch, P, batch: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from model import load_neurolm
    lm = load_neurolm(P["lm"], tokenizer_path=P["vq"])
    d = torch.load(P["inputs"] / f"gen_b{batch}.pt", weights_only=True)
    with FlopCounterMode(display=False) as counter:
        lm.generate(d["x"], d["prompt"], d["chans"], d["times"], d["mask"], max_new_tokens=1)
    return counter.get_total_flops()


PRECISIONS = ("float32", "bfloat16", "int8")   # int8: the inference copy's (generation)


def machine_rates(torch) -> dict:
    from model.precision import cpu_has_native_bf16
    out = {}
    for name in PRECISIONS:
        m = machine(torch, name)
        m["native"] = name != "bfloat16" or cpu_has_native_bf16()
        out[name] = m
        print(f"{name:9s} GEMM {'x'.join(map(str, GEMM))}, {torch.get_num_threads()} threads: "
              f"{m['gemm_gflops']:5.0f} GFLOP/s; a batch-1 decoding step's weight reads: "
              f"{m['decode_weight_read_s'] * 1e3:5.1f} ms ({m['decode_weight_gb_per_s']:.1f} "
              f"GB/s)" + ("" if m["native"] else "  (emulated: no bf16 matrix units)"),
              flush=True)
    return out


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path,
                   default=Path(tempfile.gettempdir()) / "neurolm-compare-public")
    p.add_argument("--only", default="pretrain,vq,generate")
    p.add_argument("--quick", action="store_true",
                   help="the machine's rates only, in each precision (no workload is run)")
    p.add_argument("--json", type=Path)
    p.add_argument("--compare", type=Path, help="compare_public.py's --json of the same workdir")
    args = p.parse_args(argv)
    P = cs.files(args.workdir, "B")
    if not args.quick and not P["lm"].exists():
        print(f"--workdir {args.workdir}: no B-size run of bench/compare_public.py there "
              f"(--quick measures the machine alone)", file=sys.stderr)
        return 2
    torch = ps.project_import()
    out = {"machine": machine_rates(torch)}
    rates = out["machine"]
    if args.quick:
        if args.json:
            write_json(args.json, out)
        return 0

    def floors(gflop: float, decode_steps: int = 0) -> dict:
        return {name: gflop / rates[name]["gemm_gflops"]
                + decode_steps * rates[name]["decode_weight_read_s"] for name in PRECISIONS}

    def shown(f: dict) -> str:
        return ", ".join(f"{name} {seconds:6.2f} s" for name, seconds in f.items())
    for which in ("pretrain", "vq"):
        if which in args.only:
            total, encoder = step_flops(torch, args.workdir, which)
            out[which] = {"gflop": total / 1e9, "floor_s": floors(total / 1e9),
                          "public_extra_gflop": encoder / 1e9,
                          # the public code runs in fp32 on a CPU
                          "public_floor_s": (total + encoder) / 1e9
                          / rates["float32"]["gemm_gflops"]}
            print(f"{which:9s} step {total / 1e9:6.0f} GFLOP -> floor {shown(floors(total / 1e9))}"
                  f"; the public step {(total + encoder) / 1e9:6.0f} GFLOP -> "
                  f"{out[which]['public_floor_s']:5.1f} s (fp32)")
            out[which]["floor_s"].pop("int8")   # nothing trains in int8
    if "generate" in args.only:
        for batch in (1, 8):
            flops = prefill_flops(torch, P, batch)
            # 31 decoding steps: weight reads dominate at these batch sizes
            floor = floors(flops / 1e9, cs.GEN_NEW - 1)
            out[f"generate_b{batch}"] = {"prefill_gflop": flops / 1e9, "floor_s": floor}
            print(f"generate batch {batch}: prefill {flops / 1e9:5.0f} GFLOP + {cs.GEN_NEW - 1} "
                  f"decoding steps -> floor {shown(floor)}")
    if args.compare:
        out["shares"] = shares(out, json.loads(args.compare.read_text())["results"])
    if args.json:
        write_json(args.json, out)
    return 0


def shares(out: dict, measured: dict) -> dict:
    """{compare_public row: floor / project seconds} in the row's precision ("pretrain" fp32,
    "pretrain@bfloat16", ...); printed as a share of the floor."""
    result = {}
    for key, row in measured.items():
        workload, _, precision = key.partition("@")
        floor = (out.get(workload.replace("_recompute", "")) or {}).get("floor_s", {})
        precision = precision or "float32"
        if precision in floor:
            result[key] = floor[precision] / row["project_s"]
            print(f"{key:21s} project {row['project_s']:8.3f} s, floor {floor[precision]:7.3f} "
                  f"s: {100 * result[key]:5.1f} % of the floor")
    return result


if __name__ == "__main__":
    sys.exit(main())
