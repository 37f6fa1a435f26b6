"""Peak memory and step time of a NeuroLM pretraining step on a Llama-architecture backbone:
full fine-tuning against LoRA (model.lora.add_lora).

    python bench/bench_lora.py [--shapes tiny B] [--steps 3] [--lora_rank 8] [--json out.json]
    python bench/bench_lora.py --quick        # smoke test: tiny shape, one timed step

A random Llama folder of each shape is written once (model.random_lm: BPE tokenizer trained on
the offline Python-docs corpus); each (shape, mode) then runs in a fresh process:
`neurolm_on_hf` on that folder (frozen VQ encoder of the shape's preset, random weights),
LoRA added or not, AdamW over the trained parameters, and the step train_pretrain.py takes: an
EEG batch (next-second codes, random here: the frozen VQ's coding is the same in both modes)
forward + backward, a text batch forward + backward, gradient clipping at 1.0, AdamW. One
untimed warm-up step (AdamW's state appears there), then --steps timed ones.

Memory: peak_MiB is the process's peak resident set over the steps (VmHWM reset after the
model is built, so loading the weights does not count; where /proc cannot reset it, the
process's whole peak), model_MiB its resident set before the first step. Times are wall and
CPU seconds per step: on a shared machine the CPU seconds vary less.

Shapes:
  tiny: the --preset tiny LM (2 layers x 64, 4 heads, 2 kv heads, MLP 256) on a 4k vocabulary,
        tiny VQ encoder; 8 EEG samples x 256 tokens (16 channels x 16 s), text 2 x 64.
  B:    GPT-2 B's size as a Llama: 12 layers x 768, 12 heads (no grouping), SwiGLU MLP 2048
        (GPT-2's 4 x 768 MLP in parameters), ~30k vocabulary (all the BPE finds in the corpus
        up to 32000); the paper's VQ encoder (12 x 768, 8192 codes); 2 EEG samples x 256
        tokens, text 1 x 256 (bench_train.py's CPU batch).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from compare_setup import peak_rss_mib, reset_peak_rss

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from model.random_lm import LMShape, corpus_texts, write_random_lm  # noqa: E402

CHANNELS, SECONDS, PATCH = 16, 16, 200
SHAPES = {
    "tiny": dict(lm=LMShape(hidden=64, layers=2, heads=4, kv_heads=2, intermediate=256,
                            positions=1024), vocab=4096,
                 encoder=dict(n_layer=2, n_head=4, n_embd=64, out_chans=8), codes=512,
                 code_dim=32, batch=8, text_batch=2, text_block=64),
    "B": dict(lm=LMShape(hidden=768, layers=12, heads=12, kv_heads=12, intermediate=2048,
                         positions=2048), vocab=32000,
              encoder=dict(n_layer=12, n_head=12, n_embd=768, out_chans=16), codes=8192,
              code_dim=128, batch=2, text_batch=1, text_block=256),
}
MODES = ("full", "lora")


def batches(shape: dict, n_words: int, seed: int):
    """An EEG batch (samples filling CHANNELS x SECONDS tokens, next-second code targets, the
    last second unscored) and a text batch (ids of the LM's vocabulary), as tensors."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b, n = shape["batch"], CHANNELS * SECONDS
    time_ids = torch.arange(SECONDS).repeat_interleave(CHANNELS).expand(b, n)
    y_eeg = torch.randint(0, shape["codes"], (b, n), generator=g)
    eeg = dict(x_eeg=30 * torch.randn(b, n, PATCH, generator=g),
               y_eeg=y_eeg.masked_fill(time_ids == SECONDS - 1, -1),
               input_chans=torch.arange(CHANNELS).repeat(SECONDS).expand(b, n),
               input_time=time_ids, input_mask=torch.ones(b, n, dtype=torch.bool))
    ids = torch.randint(0, n_words, (shape["text_batch"], shape["text_block"] + 1), generator=g)
    return eeg, dict(x_text=ids[:, :-1], y_text=ids[:, 1:])


def measure(folder: str, shape_name: str, mode: str, steps: int, lora_rank: int) -> dict:
    """One (shape, mode) in this process: build, warm up, time `steps` steps."""
    import torch

    from model.build import neurolm_on_hf
    from model.lora import LoraSettings, add_lora, trainable_parameters
    from model.model_neural_transformer import NTConfig
    from model.model_vq import VQ

    shape = SHAPES[shape_name]
    torch.manual_seed(0)
    encoder = NTConfig(block_size=CHANNELS * SECONDS, **shape["encoder"])
    decoder = NTConfig(n_layer=1, n_head=1, n_embd=32, in_chans=shape["code_dim"])  # unused
    vq = VQ(encoder, decoder, n_embed=shape["codes"], embed_dim=shape["code_dim"])
    model = neurolm_on_hf(vq, folder)
    del vq
    if mode == "lora":
        add_lora(model, LoraSettings(rank=lora_rank))
    trained, total = trainable_parameters(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    eeg, text = batches(shape, model.text.n_words, seed=0)

    def step():
        loss_eeg = model(**eeg, return_logits=False)[0]
        loss_eeg.backward()
        loss_text = model(**text, return_logits=False)[0]
        loss_text.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss_eeg.item() + loss_text.item()

    model_mib = resident_mib()
    reset_peak_rss()
    step()                                  # warm-up: AdamW's state, allocator, kernels
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"shape": shape_name, "mode": mode, "lora_rank": lora_rank if mode == "lora" else None,
            "vocab": model.text.n_words, "params_M": round(total / 1e6, 2),
            "trained_M": round(trained / 1e6, 3), "trained_pct": round(100 * trained / total, 2),
            "eeg_tokens": shape["batch"] * CHANNELS * SECONDS,
            "text_tokens": shape["text_batch"] * shape["text_block"],
            "s_per_step": round(wall / steps, 3), "cpu_s_per_step": round(cpu / steps, 3),
            "model_MiB": round(model_mib, 1), "peak_MiB": round(peak_rss_mib(), 1),
            "threads": torch.get_num_threads()}


def resident_mib() -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def in_fresh_process(*args) -> dict:
    """measure() in a new process: each row's peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(measure, *args).result()


def print_table(rows: list[dict]) -> None:
    cols = ["shape", "mode", "vocab", "params_M", "trained_M", "trained_pct", "eeg_tokens",
            "text_tokens", "s_per_step", "cpu_s_per_step", "model_MiB", "peak_MiB"]
    widths = {c: max(len(c), *(len(str(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.rjust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c)).rjust(widths[c]) for c in cols))


def positive(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{text}: expected an integer in 1..10000")
    return value


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES),
                        help="model shapes (default: tiny B)")
    parser.add_argument("--steps", type=positive, default=3,
                        help="timed steps after one warm-up step (default: %(default)s)")
    parser.add_argument("--lora_rank", type=positive, default=8,
                        help="LoRA rank (default: %(default)s, model.lora's default)")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the rows to this JSON file")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: tiny shape, one timed step, a few documents")
    args = parser.parse_args(argv)
    shapes, steps = (["tiny"], 1) if args.quick else (args.shapes, args.steps)
    texts = list(corpus_texts(None)) if not args.quick else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in shapes:
            folder = Path(tmp) / name
            corpus = texts or [t for t, _ in zip(corpus_texts(None), range(60))]
            write_random_lm(folder, "llama", SHAPES[name]["lm"], corpus, SHAPES[name]["vocab"])
            for mode in MODES:
                rows.append(in_fresh_process(str(folder), name, mode, steps, args.lora_rank))
                print(f"done: {name} {mode}", file=sys.stderr, flush=True)
    print(f"{os.cpu_count()} CPUs, {rows[0]['threads']} torch threads; {steps} timed step(s) "
          "after one warm-up")
    print_table(rows)
    if args.json:
        temp = args.json.with_name(f".{args.json.name}.tmp-{os.getpid()}")
        temp.write_text(json.dumps(rows, indent=2) + "\n")
        os.replace(temp, args.json)
    return rows


if __name__ == "__main__":
    main()
