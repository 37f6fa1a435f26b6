"""Seconds per NeuroLM.generate() call, key/value cache on and off.

Shapes: "B" = GPT-2 124M on a 12-layer 768-wide VQ encoder (NeuroLM-B, random weights) and a
"tiny" model; 276 EEG tokens (23 channels x 12 s, the instruction-tuning length) and a 70-token
prompt; batch 1 and 8; 5 and 32 new tokens. A benchmark, not a test:

    .venv/bin/python bench/bench_generate.py [--quick] [--dtypes float32,bfloat16]
        [--cached_only] [--json out.json]

--quick keeps batch 1 for the B shape (uncached batch-8 decoding takes many minutes on a CPU).
--dtypes: each precision's inference copy (NeuroLM.to_inference_precision: the Linears' weights
held once in bf16, packed for oneDNN on a CPU, or in int8; the rest fp32), measured in one run,
with its time as a share of fp32's.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from dataset import PATCH_SIZE  # noqa: E402
from model.gpt2_bpe import EOT_TOKEN_ID, SEP_TOKEN_ID  # noqa: E402
from model.model import GPT_PRESETS, GPTConfig  # noqa: E402
from model.model_neural_transformer import NTConfig  # noqa: E402
from model.model_neurolm import NeuroLM  # noqa: E402
from model.precision import INFERENCE_DTYPES  # noqa: E402

EEG_TOKENS, CHANNELS, PROMPT_TOKENS = 276, 23, 70   # instruction-tuning lengths (spec section 5)

SHAPES = {
    "B": (GPTConfig(**GPT_PRESETS["gpt2"], bias=True), NTConfig()),
    "tiny": (GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=512),
             NTConfig(n_layer=2, n_head=2, n_embd=32, out_chans=8)),
}


def build(shape: str, device: torch.device, dtype: torch.dtype = torch.float32) -> NeuroLM:
    torch.manual_seed(0)
    gpt_config, encoder_config = SHAPES[shape]
    model = NeuroLM(gpt_config, encoder_config).to(device).eval()
    with torch.no_grad():  # random weights must not end rows early: every call decodes in full
        model.GPT2.lm_head.weight[EOT_TOKEN_ID].zero_()
    return model.to_inference_precision(dtype)


def inputs(batch: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    seconds = EEG_TOKENS // CHANNELS
    x = torch.randn(batch, EEG_TOKENS, PATCH_SIZE, generator=g)
    chans = torch.arange(CHANNELS).repeat(seconds).expand(batch, -1).clone()
    time_ = torch.arange(seconds).repeat_interleave(CHANNELS).expand(batch, -1).clone()
    mask = torch.ones(batch, EEG_TOKENS, dtype=torch.bool)
    prompt = torch.randint(0, EOT_TOKEN_ID, (batch, PROMPT_TOKENS), generator=g)
    prompt[:, 0] = SEP_TOKEN_ID
    return [t.to(device) for t in (x, prompt, chans, time_, mask)]


def seconds_per_call(model, args, new_tokens, use_cache, repeats, device) -> float:
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model.generate(*args, max_new_tokens=new_tokens, use_cache=use_cache)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        assert out.shape[1] == PROMPT_TOKENS + new_tokens
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="tiny,B")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--new_tokens", default="5,32")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="batch 1 only for the B shape")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32",
                        help="comma-separated: " + ", ".join(INFERENCE_DTYPES))
    parser.add_argument("--cached_only", action="store_true",
                        help="leave out the uncached reference decoding")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    print(f"device {device}, torch threads {torch.get_num_threads()}, EEG {EEG_TOKENS} tokens, "
          f"prompt {PROMPT_TOKENS} tokens")
    dtypes = args.dtypes.split(",")
    unknown = [d for d in dtypes if d not in INFERENCE_DTYPES]
    if unknown:
        parser.error(f"--dtypes {','.join(unknown)}: choose from {', '.join(INFERENCE_DTYPES)}")
    print(f"{'shape':>5} {'dtype':>9} {'batch':>5} {'new':>4} {'cached s':>10} "
          f"{'uncached s':>11} {'speed-up':>9} {'vs fp32':>8}")
    for shape in args.shapes.split(","):
        models = {d: build(shape, device, INFERENCE_DTYPES[d]) for d in dtypes}
        batches = ([1] if (args.quick and shape == "B")
                   else [int(b) for b in args.batches.split(",")])
        for batch in batches:
            data = inputs(batch, device)
            for model in models.values():
                model.generate(*data, max_new_tokens=1)  # warm-up
            for new in (int(n) for n in args.new_tokens.split(",")):
                fp32 = None
                for name, model in models.items():   # interleaved: one load for all
                    cached = seconds_per_call(model, data, new, True, args.repeats, device)
                    uncached = (None if args.cached_only else
                                seconds_per_call(model, data, new, False, args.repeats, device))
                    fp32 = cached if name == "float32" else fp32
                    row = dict(shape=shape, dtype=name, batch=batch, new_tokens=new,
                               cached_s=cached, uncached_s=uncached,
                               speedup=None if uncached is None else uncached / cached,
                               vs_float32=None if fp32 is None else fp32 / cached)
                    rows.append(row)
                    shown = ("-", "-") if uncached is None else (f"{uncached:.3f}",
                                                                 f"{uncached / cached:.1f}x")
                    ratio = "-" if fp32 is None else f"{fp32 / cached:.2f}x"
                    print(f"{shape:>5} {name:>9} {batch:>5} {new:>4} {cached:>10.3f} "
                          f"{shown[0]:>11} {shown[1]:>9} {ratio:>8}", flush=True)
        del models
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(dict(device=str(device), threads=torch.get_num_threads(),
                                       eeg_tokens=EEG_TOKENS, prompt_tokens=PROMPT_TOKENS,
                                       cpu_count=os.cpu_count(), results=rows), indent=2))
        tmp.replace(args.json)
    return rows


if __name__ == "__main__":
    main()
