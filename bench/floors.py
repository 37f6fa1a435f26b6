"""How close the B-shape workloads of compare_public.py are to this machine's limits.

    python bench/floors.py [--workdir DIR] [--only pretrain,vq,generate] [--json out.json]

Run after `bench/compare_public.py --size B` (it reuses that run's checkpoints and inputs in
--workdir). Measures, with compare_public's 2 threads and fp32:
- the machine: the GEMM rate at the training steps' shapes (2048 x 768 x 3072) and the rate at
  which a decoding step can read weights (batch-1 matrix-vector products over GPT-2's weights);
- a training step's floor: its FLOPs (torch.utils.flop_counter, one project step) at that GEMM
  rate; the public step does the same FLOPs plus a second pass of the frozen encoder;
- generation's floor: the prefill's FLOPs at the GEMM rate plus, per new token, the matrix-vector
  products over every weight the step reads (12 blocks and the 50257 text rows of the head).
The ratio public / floor is the most any implementation of the same math could reach here.
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


def machine(torch) -> dict:
    m, k, n = GEMM
    a, w = torch.randn(m, k), torch.randn(n, k)
    gemm = rate(lambda: a @ w.T, 2 * m * k * n, 20)
    # one decoding step's weight reads at batch 1: a GPT-2 block's four matrices, x12, + head
    mats = [torch.randn(3 * 768, 768), torch.randn(768, 768), torch.randn(3072, 768),
            torch.randn(768, 3072)] * 12 + [torch.randn(50257, 768)]
    x = {768: torch.randn(1, 768), 3072: torch.randn(1, 3072)}
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        for w in mats:
            x[w.shape[1]] @ w.T
    gemv_step_s = (time.perf_counter() - start) / reps
    weight_bytes = sum(w.numel() for w in mats) * 4
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path,
                   default=Path(tempfile.gettempdir()) / "neurolm-compare-public")
    p.add_argument("--only", default="pretrain,vq,generate")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    P = cs.files(args.workdir, "B")
    if not P["lm"].exists():
        print(f"--workdir {args.workdir}: no B-size run of bench/compare_public.py there",
              file=sys.stderr)
        return 2
    torch = ps.project_import()
    out = {"machine": machine(torch)}
    m = out["machine"]
    print(f"GEMM {'x'.join(map(str, GEMM))} fp32, {torch.get_num_threads()} threads: "
          f"{m['gemm_gflops']:.0f} GFLOP/s; a batch-1 decoding step's weight reads: "
          f"{m['decode_weight_read_s'] * 1e3:.0f} ms ({m['decode_weight_gb_per_s']:.1f} GB/s)")
    gflops = m["gemm_gflops"]
    for which in ("pretrain", "vq"):
        if which in args.only:
            total, encoder = step_flops(torch, args.workdir, which)
            floor = total / 1e9 / gflops
            out[which] = {"gflop": total / 1e9, "floor_s": floor,
                          "public_extra_gflop": encoder / 1e9,
                          "public_floor_s": (total + encoder) / 1e9 / gflops}
            public = out[which]
            print(f"{which:9s} step {total / 1e9:6.0f} GFLOP -> floor {floor:5.1f} s; the public "
                  f"step {public['gflop'] + encoder / 1e9:6.0f} GFLOP -> "
                  f"{public['public_floor_s']:5.1f} s")
    if "generate" in args.only:
        for batch in (1, 8):
            flops = prefill_flops(torch, P, batch)
            # 31 decoding steps: weight reads dominate at these batch sizes
            floor = flops / 1e9 / gflops + (cs.GEN_NEW - 1) * m["decode_weight_read_s"]
            out[f"generate_b{batch}"] = {"prefill_gflop": flops / 1e9, "floor_s": floor}
            print(f"generate batch {batch}: prefill {flops / 1e9:5.0f} GFLOP + {cs.GEN_NEW - 1} "
                  f"decoding steps -> floor {floor:5.2f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
