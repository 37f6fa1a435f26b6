"""Pretraining-step and generation throughput in bf16 with SDPA, and model FLOPs utilisation.

    python bench/bench_gpu.py [--shape B|tiny] [--batch 8] [--steps 10] [--compile]
        [--device cuda] [--peak_tflops 989] [--json out.json]

Written for a GPU (runs unchanged on a CPU for a smoke test: --shape tiny --device cpu).
Random weights at the B shapes (GPT-2 124M + 12-layer 768-wide encoder, 8192 codes); the step is
the pretraining trainer's: the frozen encoder once, EEG forward/backward on `--batch` samples of
1024 tokens (23 channels x 44 s, next-second code targets) with the chunked head
(return_logits=False), a text forward/backward on `--batch` x 1024 tokens, clip 1.0, AdamW
(fused on CUDA), all under bf16 autocast. Generation: `NeuroLM.generate`, 276 EEG tokens + a
63-token prompt, 32 new tokens, batch 1 and 8.

MFU = achieved model FLOPs / peak: 6 x trainable parameters x trained tokens (forward +
backward) + 2 x encoder parameters x EEG tokens (its frozen forward) + attention
(12 x layers x width x length per token, forward + backward), over the device's dense bf16 peak
(--peak_tflops; H100/H200 SXM 989). --compile wraps the LM in torch.compile and checks that its
step-0 loss matches eager within bf16 tolerance.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch  # noqa: E402

import utils  # noqa: E402
from model.model import GPTConfig  # noqa: E402
from model.model_neural_transformer import NTConfig  # noqa: E402
from model.model_neurolm import NeuroLM  # noqa: E402
from model.norm_ema_quantizer import l2norm  # noqa: E402

SHAPES = {
    "B": dict(gpt=dict(n_layer=12, n_head=12, n_embd=768), enc=dict(n_layer=12, n_head=12,
                                                                     n_embd=768), codes=8192),
    "tiny": dict(gpt=dict(n_layer=2, n_head=2, n_embd=64), enc=dict(n_layer=2, n_head=2,
                                                                    n_embd=64), codes=512),
}
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
CHANNELS, SECONDS, BLOCK = 23, 44, 1024


def build(shape: str, device):
    s = SHAPES[shape]
    torch.manual_seed(0)
    lm = NeuroLM(GPTConfig(block_size=1024, bias=True, **s["gpt"]), NTConfig(**s["enc"]),
                 n_eeg_codes=s["codes"]).to(device)
    # the VQ head + codebook that turn encoder features into code targets
    code_head = torch.nn.Linear(s["enc"]["n_embd"], 128).to(device)
    codebook = l2norm(torch.randn(s["codes"], 128, device=device))
    return lm, code_head, codebook


def eeg_batch(batch: int, device):
    n = CHANNELS * SECONDS
    x = torch.zeros(batch, BLOCK, 200, device=device)
    x[:, :n] = torch.randn(batch, n, 200, device=device) * 0.3
    chans = torch.full((batch, BLOCK), 136, dtype=torch.long, device=device)   # "pad"
    chans[:, :n] = torch.arange(CHANNELS, device=device).repeat(SECONDS)
    time_ = torch.zeros(batch, BLOCK, dtype=torch.long, device=device)
    time_[:, :n] = torch.arange(SECONDS, device=device).repeat_interleave(CHANNELS)
    mask = torch.zeros(batch, BLOCK, dtype=torch.bool, device=device)
    mask[:, :n] = True
    return x, chans, time_, mask


def step_flops(lm: NeuroLM, eeg_tokens: int, text_tokens: int) -> float:
    trainable = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    trainable -= lm.GPT2.transformer.wpe.weight.numel()   # embeddings are lookups, not matmuls
    trainable -= lm.GPT2.transformer.wte.weight.numel() + lm.pos_embed.weight.numel()
    encoder = sum(p.numel() for p in lm.tokenizer.parameters())
    c = lm.GPT2.config
    tokens = eeg_tokens + text_tokens
    attention = 12 * c.n_layer * c.n_embd * BLOCK * tokens // 2   # causal: half the keys
    return 6 * trainable * tokens + 2 * encoder * eeg_tokens + attention


def pretrain_bench(args, device, dtype):
    lm, code_head, codebook = build(args.shape, device)
    lm.train()
    model = torch.compile(lm) if args.compile else lm
    optimizer = utils.configure_optimizer(lm, 6e-4, 0.1, (0.9, 0.95), device.type)
    x, chans, time_, mask = eeg_batch(args.batch, device)
    text = torch.randint(0, 50257, (args.batch, BLOCK), device=device)
    n_real = int(mask.sum())

    def step():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            features = lm.tokenizer(x, chans, time_, mask)
            codes = (l2norm(code_head(features.float())) @ codebook.t()).argmax(-1)
        y = torch.full_like(codes, -1)
        y[:, :CHANNELS * (SECONDS - 1)] = codes[:, CHANNELS:CHANNELS * SECONDS]
        with torch.autocast(device.type, dtype=dtype):
            eeg_loss, _, _ = model(x_eeg=x, y_eeg=y, input_chans=chans, input_time=time_,
                                   input_mask=mask, return_logits=False, eeg_features=features)
        eeg_loss.backward()
        with torch.autocast(device.type, dtype=dtype):
            text_loss, _, _ = model(x_text=text, y_text=text.roll(-1, 1), return_logits=False)
        text_loss.backward()
        utils.optimizer_step(optimizer, None, 1.0)
        return eeg_loss.item() + text_loss.item()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    loss0 = step()
    sync()
    first_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    sec = (time.perf_counter() - t0) / args.steps
    tokens = n_real + text.numel()
    flops = step_flops(lm, n_real, text.numel())
    out = dict(step_s=sec, first_step_s=first_s, tokens_per_s=tokens / sec, step0_loss=loss0,
               model_tflops_per_s=flops / sec / 1e12)
    if args.peak_tflops:
        out["mfu"] = flops / sec / 1e12 / args.peak_tflops
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def generate_bench(args, device, dtype, batch):
    lm, _, _ = build(args.shape, device)
    lm.eval()
    x, chans, time_, mask = eeg_batch(batch, device)
    n = CHANNELS * 12
    x, chans, time_, mask = x[:, :n], chans[:, :n], time_[:, :n], mask[:, :n]
    prompt = torch.randint(0, 50257, (batch, 63), device=device)

    def call(new):
        with torch.autocast(device.type, dtype=dtype):
            out = lm.generate(x, prompt, chans, time_, mask, max_new_tokens=new, top_k=1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    call(2)
    t0 = time.perf_counter()
    call(32)
    sec = time.perf_counter() - t0
    return dict(seconds=sec, new_tokens_per_s=32 * batch / sec)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="B")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--peak_tflops", type=float, default=None,
                   help="dense peak of the device in the chosen dtype (default: by GPU name)")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.peak_tflops is None and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        args.peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    result = dict(shape=args.shape, batch=args.batch, device=str(device), dtype=args.dtype,
                  compile=args.compile, peak_tflops=args.peak_tflops,
                  pretrain=pretrain_bench(args, device, dtype),
                  generate_b1=generate_bench(args, device, dtype, 1),
                  generate_b8=generate_bench(args, device, dtype, 8))
    if args.compile:   # the compiled step's first loss against eager on the same weights
        eager = pretrain_bench(argparse.Namespace(**{**vars(args), "compile": False,
                                                     "steps": 1}), device, dtype)
        result["compile_step0_loss_diff"] = abs(eager["step0_loss"] -
                                                result["pretrain"]["step0_loss"])
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
