"""Side by side against the public NeuroLM code: same weights, same inputs, one run.

    python bench/compare_public.py --public /work/public_neurolm [--size tiny|B]
        [--only generate_b1,generate_b8,pretrain,pretrain_recompute,vq,loader_vq,loader_gpt]
        [--reps 1]
        [--workdir DIR] [--json out.json]

The protocol of ../shared/bench/README.md. The public code (a checkout of 935963004/NeuroLM,
e.g. `git -C <fetched git dir> archive HEAD | tar -x -C /work/public_neurolm`) builds
random-weight VQ_Align and NeuroLM and saves them in its own checkpoint layout; the project
loads those files with `model.load_vq` / `model.load_neurolm`. Per workload and rep one public
child process, then one project child (A B A B ...): each loads, warms up once, times one run,
prints one JSON line and exits, so its peak RSS is its own. 2 threads, fp32. A ratio > 1 means
the project is faster (or, for memory, smaller). Equality: step-0 losses of the training
steps, greedy tokens against the public model's math with a correct mask, the loaders' first
sample.

Public-side patches, only to run it offline on a CPU: VQ_Align's constructor downloads GPT-2
(its table is replaced by a random one, then overwritten by the checkpoint); at --size tiny a
hard-coded Linear(400, 768) in TemporalConv is resized to the encoder width.

Project side: the model-level pieces the trainers call (bench/ imports no stage script):
pretraining = the frozen encoder once (LM features + VQ codes), next-second targets, EEG
forward/backward then text forward/backward with return_logits=False, clip 1.0, AdamW
(pretrain_recompute: the same with --activation_checkpointing, against the same public step);
VQ_Align = forward with the text domain loss, backward, AdamW. Loaders: the public
PickleLoader computes each sample's reconstruction targets as it reads it; the project reads
samples without them and computes them for a batch of VQ_BATCH samples (train_vq.py's path), so
loader_vq times reading plus targets on both sides.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THREADS = 2
GEN_SECONDS, GEN_NEW, PT_BATCH, TEXT_BLOCK, N_LOADER_FILES = 12, 32, 2, 1024, 200
VQ_BATCH = 8    # samples whose reconstruction targets the project computes together
TUH_CHANNELS = ("FP1 FP2 F3 F4 C3 C4 P3 P4 O1 O2 F7 F8 T3 T4 T5 T6 A1 A2 FZ CZ PZ T1 "
                "T2").split()
SIZES = {
    "tiny": dict(gpt=dict(n_layer=2, n_head=2, n_embd=128),
                 enc=dict(n_layer=2, n_head=2, n_embd=128),
                 dec=dict(n_layer=2, n_head=2, n_embd=128)),
    "B": dict(gpt=dict(n_layer=12, n_head=12, n_embd=768),
              enc=dict(n_layer=12, n_head=12, n_embd=768),
              dec=dict(n_layer=4, n_head=12, n_embd=768)),
}
WORKLOADS = ["generate_b1", "generate_b8", "pretrain", "pretrain_recompute", "vq", "loader_vq",
             "loader_gpt"]


# ----------------------------------------------------------------------------------- helpers

def peak_rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


LAST_CPU_S = [0.0]   # CPU seconds (all threads) of the last timed() call: steadier than wall
                     # time when other processes share the cores


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    LAST_CPU_S[0] = time.process_time() - c0
    return time.perf_counter() - t0, out


def timed_step(step) -> dict:
    """A training step's figures: step 0 (its logs, for the equality check), then one timed
    step; peak RSS over both (AdamW's state appears at step 0)."""
    reset_peak_rss()
    first = step()
    sec, _ = timed(step)
    return dict(seconds=sec, peak_rss_mib=peak_rss_mib(), step0=first,
                tokens_per_step=PT_BATCH * (1024 + TEXT_BLOCK))


def enc_dec_args(size):
    c = SIZES[size]
    enc = dict(block_size=1024, bias=False, dropout=0.0, num_classes=0, in_chans=1, out_chans=16,
               **c["enc"])
    dec = dict(block_size=1024, bias=False, dropout=0.0, num_classes=0, in_chans=128, **c["dec"])
    return enc, dec


def files(work: Path, size: str) -> dict:
    return dict(vq=work / f"ckpt-{size}" / "VQ.pt", lm=work / f"ckpt-{size}" / "NeuroLM.pt",
                inputs=work / "inputs", pretrain=work / "pretrain_pkl", loader=work / "loader_pkl")


def write_pickles(folder: Path, n: int, seed=0):
    import numpy as np
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"sample_{i:04d}.pkl"
        if not path.exists():   # as prepare_TUH_pretrain.py writes them: 23 ch x 44 s, float64
            sample = {"X": rng.standard_normal((23, 44 * 200)) * 30.0, "ch_names": TUH_CHANNELS}
            with open(path, "wb") as f:
                pickle.dump(sample, f)
        paths.append(str(path))
    return paths


# ------------------------------------------------------------------------------ public side

def public_import(public: str, size: str):
    sys.path.insert(0, public)
    import torch
    torch.set_num_threads(THREADS)
    import model.model_neural_transformer as mnt
    import model.model_vq as mvq
    width = SIZES[size]["dec"]["n_embd"]

    class OfflineGPT2:  # VQ_Align.__init__ asks the hub for GPT-2: a random table instead
        @classmethod
        def from_pretrained(cls, *a, **k):
            o = cls()
            o.sd = {"transformer.wte.weight": torch.randn(50257, width) * 0.02}
            return o

        def state_dict(self):
            return self.sd

    mvq.GPT2LMHeadModel = OfflineGPT2
    if SIZES[size]["enc"]["n_embd"] != 768:   # TemporalConv hard-codes Linear(400, 768)
        init = mnt.NeuralTransformer.__init__

        def resized(self, config, **kw):
            init(self, config, **kw)
            if isinstance(self.patch_embed, mnt.TemporalConv):
                self.patch_embed.l[0] = torch.nn.Linear(400, config.n_embd)
        mnt.NeuralTransformer.__init__ = resized
    return torch


def public_neurolm(torch, P, size):
    from model.model import GPTConfig
    from model.model_neurolm import NeuroLM
    ck = torch.load(P["lm"], map_location="cpu", weights_only=True)
    a = ck["model_args"]
    cfg = GPTConfig(block_size=a["block_size"], vocab_size=50257, n_layer=a["n_layer"],
                    n_head=a["n_head"], n_embd=a["n_embd"], dropout=0.0, bias=a["bias"])
    lm = NeuroLM(cfg, tokenizer_ckpt_path=str(P["vq"]), init_from="scratch",
                 n_embd=SIZES[size]["enc"]["n_embd"])
    lm.load_state_dict(ck["model"])
    return lm


def instruction_mask(n_valid, n_eeg, n_text, per_second):
    """The public loaders' eeg_text_mask: causal, whole seconds visible, padded keys off."""
    import torch
    n = n_eeg + n_text
    m = torch.tril(torch.ones(n, n))
    for t in range(n_valid // per_second):
        m[t * per_second:(t + 1) * per_second, t * per_second:(t + 1) * per_second] = 1
    m[:, n_valid:n_eeg] = 0
    return m.bool().view(1, 1, n, n)


def prep(public, size, work):
    """Random weights in the public layout, and every input (written once, reused)."""
    torch = public_import(public, size)
    import model.model as mm
    import model.model_neural_transformer as mnt
    import model.model_neurolm as mnl
    import model.model_vq as mvq
    P = files(work, size)
    enc, dec = enc_dec_args(size)
    if not P["lm"].exists():
        P["vq"].parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        vq = mvq.VQ_Align(mnt.NTConfig(**enc), mnt.NTConfig(**dec))
        emb = vq.VQ.quantize.embedding
        w = torch.nn.functional.normalize(torch.randn_like(emb.weight), dim=-1)
        emb.weight.data.copy_(w)
        emb.embed_avg.data.copy_(w)
        emb.initted.data.fill_(1.0)          # a trained codebook: no k-means in a step
        torch.save({"model": vq.state_dict(), "optimizer": {}, "encoder_args": enc,
                    "decoder_args": dec, "iter_num": 0, "epoch": 0}, P["vq"])
        g = SIZES[size]["gpt"]
        cfg = mm.GPTConfig(block_size=1024, vocab_size=50257, dropout=0.0, bias=True, **g)
        lm = mnl.NeuroLM(cfg, tokenizer_ckpt_path=str(P["vq"]), init_from="scratch",
                         n_embd=enc["n_embd"])
        with torch.no_grad():   # sharper attention and positions: answers depend on EEG and mask
            for name, p in lm.GPT2.named_parameters():
                if name.endswith("attn.c_attn.weight"):
                    p.mul_(4.0)
            lm.GPT2.transformer.wpe.weight.mul_(5.0)
            lm.pos_embed.weight.mul_(5.0)
            lm.GPT2.lm_head.weight[50256].zero_()   # the public code never stops at <|endoftext|>
        args = dict(block_size=1024, bias=True, vocab_size=lm.GPT2.config.vocab_size,
                    dropout=0.0, **g)
        torch.save({"model": lm.state_dict(), "optimizer": {}, "model_args": args,
                    "iter_num": 0, "epoch": 0}, P["lm"])
    P["inputs"].mkdir(parents=True, exist_ok=True)
    from dataset import standard_1020
    for b in (1, 8):
        path = P["inputs"] / f"gen_b{b}.pt"
        if not path.exists():
            gen = torch.Generator().manual_seed(4)
            n = len(TUH_CHANNELS) * GEN_SECONDS
            x = torch.randn(b, n, 200, generator=gen) * 0.3
            chans = torch.tensor([standard_1020.index(c) for c in TUH_CHANNELS] * GEN_SECONDS)
            times = torch.arange(GEN_SECONDS).repeat_interleave(len(TUH_CHANNELS))
            prompt = torch.randint(0, 50257, (b, 63), generator=gen)
            prompt[:, 0] = 50257   # [SEP]
            torch.save(dict(x=x, chans=chans.int().expand(b, n).contiguous(),
                            times=times.int().expand(b, n).contiguous(),
                            mask=torch.ones(b, n, dtype=torch.bool), prompt=prompt), path)
    if not (P["inputs"] / "text.pt").exists():
        gen = torch.Generator().manual_seed(1)
        torch.save(dict(x=torch.randint(0, 50257, (PT_BATCH, TEXT_BLOCK), generator=gen),
                        y=torch.randint(0, 50257, (PT_BATCH, TEXT_BLOCK), generator=gen)),
                   P["inputs"] / "text.pt")
    write_pickles(P["pretrain"], PT_BATCH)
    write_pickles(P["loader"], N_LOADER_FILES)
    return {"ok": True}


def public_batch(torch, P, gpt_training):
    from torch.utils.data import default_collate

    from dataset import PickleLoader
    paths = sorted(str(p) for p in P["pretrain"].iterdir())
    ds = PickleLoader(paths, block_size=1024, GPT_training=gpt_training)
    return default_collate([ds[i] for i in range(PT_BATCH)])


def public_generate(public, size, work, batch):
    torch = public_import(public, size)
    P = files(work, size)
    lm = public_neurolm(torch, P, size).eval()
    d = torch.load(P["inputs"] / f"gen_b{batch}.pt", weights_only=True)
    n, m = d["x"].shape[1], d["prompt"].shape[1]
    mask = instruction_mask(n, n, m, len(TUH_CHANNELS)).repeat(batch, 1, 1, 1)

    def call(new):
        return lm.generate(d["x"], d["prompt"], d["chans"], d["times"], d["mask"],
                           eeg_text_mask=mask, max_new_tokens=new, top_k=1)

    timed(lambda: call(2))
    reset_peak_rss()
    sec, _ = timed(lambda: call(GEN_NEW))
    peak = peak_rss_mib()
    # reference answers: the public model's math, the correct mask rebuilt at every step
    with torch.no_grad():
        enc_mask = d["mask"].unsqueeze(1).repeat(1, n, 1).unsqueeze(1)
        feats = lm.tokenizer(d["x"], d["chans"], d["times"], enc_mask, return_all_tokens=True)
        feats = lm.encode_transform_layer(feats) + lm.pos_embed(d["chans"])
        out = d["prompt"]
        for _ in range(GEN_NEW):
            step_mask = instruction_mask(n, n, out.shape[1], len(TUH_CHANNELS))
            logits, _, _ = lm.GPT2(x_eeg=feats, x_text=out, eeg_time_idx=d["times"],
                                   eeg_text_mask=step_mask.repeat(batch, 1, 1, 1))
            out = torch.cat([out, logits[:, -1, :50257].argmax(-1, keepdim=True)], dim=1)
    return dict(seconds=sec, peak_rss_mib=peak, tokens=out[:, m:].tolist())


def public_pretrain(public, size, work):
    torch = public_import(public, size)
    from collections import OrderedDict

    from model.model_neural_transformer import NTConfig
    from model.model_vq import VQ
    P = files(work, size)
    X, chans, times, mask, gpt_mask, num_chans, num_tokens = public_batch(torch, P, True)
    t = torch.load(P["inputs"] / "text.pt", weights_only=True)
    ck = torch.load(P["vq"], map_location="cpu", weights_only=True)   # train_pretrain.py's way
    tokenizer = VQ(NTConfig(**ck["encoder_args"]), NTConfig(**ck["decoder_args"]))
    tokenizer.load_state_dict(OrderedDict((k[3:], v) for k, v in ck["model"].items()
                                          if k.startswith("VQ.")))
    tokenizer.eval()
    del ck
    model = public_neurolm(torch, P, size).train()
    optimizer = model.configure_optimizers(1e-1, 6e-4, (0.9, 0.95), "cpu")

    def step():
        with torch.no_grad():
            y = torch.full(X.shape[:2], -1 - model.GPT2.config.vocab_size)
            codes = tokenizer.get_codebook_indices(X, chans, times, mask)
            for i, (c, k) in enumerate(zip(num_chans, num_tokens)):
                y[i, :k - c] = codes[i, c:k]
        loss1, log1, _ = model(X, y, None, None, chans, times, mask, eeg_mask=gpt_mask)
        loss2, log2, _ = model(None, None, t["x"], t["y"])
        (loss1 + loss2).backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return dict(eeg_loss=log1["train/loss"], text_loss=log2["train/loss"],
                    grad_norm=float(norm))

    return timed_step(step)


def public_vq(public, size, work):
    torch = public_import(public, size)
    from model.model_neural_transformer import NTConfig
    from model.model_vq import VQ_Align
    P = files(work, size)
    X, y_freq, y_raw, chans, times, mask = public_batch(torch, P, False)
    text = torch.load(P["inputs"] / "text.pt", weights_only=True)["x"]
    ck = torch.load(P["vq"], map_location="cpu", weights_only=True)
    model = VQ_Align(NTConfig(**ck["encoder_args"]), NTConfig(**ck["decoder_args"]))
    model.load_state_dict(ck["model"])
    del ck
    model.train()
    optimizer = model.configure_optimizers(1e-4, 5e-5, (0.9, 0.999), "cpu")

    def step():   # train_vq.py at iteration 0: alpha 0, no clipping
        loss, domain_loss, log = model(X, y_freq, y_raw, chans, times, mask, 0.0)
        text_loss = model(text)
        total = loss + domain_loss + text_loss
        total.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return dict(loss=float(total), rec_freq_loss=float(log["train/rec_freq_loss"]),
                    rec_raw_loss=float(log["train/rec_raw_loss"]),
                    commit_loss=float(log["train/quant_loss"]),
                    domain_loss=float(domain_loss) + float(text_loss))

    return timed_step(step)


def public_loader(public, size, work, targets):
    torch = public_import(public, size)
    from dataset import PickleLoader
    P = files(work, size)
    ds = PickleLoader(sorted(str(p) for p in P["loader"].iterdir()), block_size=1024,
                      GPT_training=not targets)
    return _loader_pass(torch, ds, lambda item: dict(zip(
        ("x", "y_freq", "y_raw") if targets else ("x",), item)))


def _loader_pass(torch, ds, first_of):
    def one_pass():
        for i in range(len(ds)):
            ds[i]
    one_pass()
    reset_peak_rss()
    sec, _ = timed(one_pass)
    first = {k: v.tolist() for k, v in first_of(ds[0]).items()}
    return dict(seconds=sec, samples_per_s=len(ds) / sec, peak_rss_mib=peak_rss_mib(),
                first=first)


# ----------------------------------------------------------------------------- project side

def project_import():
    sys.path.insert(0, str(REPO))
    import torch
    torch.set_num_threads(THREADS)
    torch.manual_seed(1337)
    return torch


def project_batch(torch, P, targets):
    from torch.utils.data import default_collate

    from dataset import PickleLoader
    ds = PickleLoader(sorted(P["pretrain"].iterdir()), 1024, targets=targets)
    return default_collate([ds[i] for i in range(PT_BATCH)])


def project_generate(public, size, work, batch):
    torch = project_import()
    from model import load_neurolm
    P = files(work, size)
    lm = load_neurolm(P["lm"], tokenizer_path=P["vq"])
    d = torch.load(P["inputs"] / f"gen_b{batch}.pt", weights_only=True)

    def call(new):
        return lm.generate(d["x"], d["prompt"], d["chans"], d["times"], d["mask"],
                           max_new_tokens=new, top_k=1)

    timed(lambda: call(2))
    reset_peak_rss()
    sec, out = timed(lambda: call(GEN_NEW))
    return dict(seconds=sec, peak_rss_mib=peak_rss_mib(),
                tokens=out[:, d["prompt"].shape[1]:].tolist())


def next_second_targets(codes, input_time, input_mask):
    """The pretraining targets: the code of the same channel one second later (time-major
    tokens: C places on), -1 for the last second and padding."""
    import torch
    N = codes.shape[1]
    n_chans = (input_mask & (input_time == 0)).sum(1, keepdim=True)
    source = torch.arange(N).unsqueeze(0) + n_chans
    valid = input_mask & (source < input_mask.sum(1, keepdim=True))
    return torch.where(valid, codes.gather(1, source.clamp(max=N - 1)), -1)


def project_pretrain_parts(size, work, recompute=False):
    """The project's pretraining step on this run's inputs, in parts (bench/floors.py counts
    their FLOPs): encode() -> frozen encoder features and next-second code targets (the encoder
    runs once, as in the trainer); learn(features, y) -> EEG then text forward/backward with
    return_logits=False, their logs; optimizer."""
    torch = project_import()
    import utils
    from model import load_neurolm, load_vq
    P = files(work, size)
    b = project_batch(torch, P, targets=False)
    t = torch.load(P["inputs"] / "text.pt", weights_only=True)
    vq = load_vq(P["vq"]).VQ
    model = load_neurolm(P["lm"], tokenizer_path=P["vq"]).train()
    model.GPT2.recompute_blocks = recompute                # --activation_checkpointing
    vq.encoder = vq.decoder_freq = vq.decoder_raw = None   # as the trainer: one frozen encoder
    optimizer = utils.configure_optimizer(model, 6e-4, 0.1, (0.9, 0.95), "cpu")

    @torch.no_grad()
    def encode():
        features = model.tokenizer(b["x_eeg"], b["input_chans"], b["input_time"],
                                   b["input_mask"])
        return features, next_second_targets(vq.codes_from_features(features), b["input_time"],
                                             b["input_mask"])

    def learn(features, y):
        eeg_loss, log, _ = model(x_eeg=b["x_eeg"], y_eeg=y, input_chans=b["input_chans"],
                                 input_time=b["input_time"], input_mask=b["input_mask"],
                                 return_logits=False, eeg_features=features)
        eeg_loss.backward()
        text_loss, text_log, _ = model(x_text=t["x"], y_text=t["y"], return_logits=False)
        text_loss.backward()
        return log, text_log

    return encode, learn, optimizer


def project_pretrain(public, size, work, recompute=False):
    encode, learn, optimizer = project_pretrain_parts(size, work, recompute)
    import utils  # importable once project_import (in the parts) put the project on the path

    def step():
        log, text_log = learn(*encode())
        result = utils.optimizer_step(optimizer, None, 1.0)
        return dict(eeg_loss=log["eeg_loss"], text_loss=text_log["text_loss"],
                    grad_norm=result.grad_norm)

    return timed_step(step)


def project_vq_parts(size, work):
    """The project's VQ_Align step in parts: learn() -> forward with the text domain loss and
    backward, (VQ loss, text domain loss, log); optimizer."""
    torch = project_import()
    import utils
    from model import load_vq
    P = files(work, size)
    b = project_batch(torch, P, targets=True)
    text = torch.load(P["inputs"] / "text.pt", weights_only=True)["x"]
    model = load_vq(P["vq"]).train()
    optimizer = utils.configure_optimizer(model, 5e-5, 1e-4, (0.9, 0.999), "cpu")

    def learn():
        loss, log = model(b["x_eeg"], b["y_freq"], b["y_raw"], b["input_chans"], b["input_time"],
                          b["input_mask"], alpha=0.0)
        text_loss = model.text_domain_loss(text, 0.0)
        (loss + text_loss).backward()
        return loss, text_loss, log

    return learn, optimizer


def project_vq(public, size, work):
    learn, optimizer = project_vq_parts(size, work)
    import utils

    def step():
        loss, text_loss, log = learn()
        utils.optimizer_step(optimizer, None, 0.0)
        return dict(loss=float(loss + text_loss), rec_freq_loss=log["rec_freq_loss"],
                    rec_raw_loss=log["rec_raw_loss"], commit_loss=log["commit_loss"],
                    domain_loss=log["domain_loss"] + float(text_loss))

    return timed_step(step)


class _BatchedTargets:
    """The project's VQ input path (train_vq.py): samples read without targets, collated
    VQ_BATCH at a time, reconstruction targets computed for the whole batch
    (dataset.reconstruction_targets_batch, on the training device). Indexed by sample like a
    dataset, so _loader_pass times it the same way."""

    def __init__(self, ds):
        self.ds, self.batch_start, self.batch = ds, None, None

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        from torch.utils.data import default_collate

        from dataset import reconstruction_targets_batch
        start = i - i % VQ_BATCH
        if start != self.batch_start:
            items = [self.ds[j] for j in range(start, min(start + VQ_BATCH, len(self.ds)))]
            batch = default_collate(items)
            batch["y_freq"], batch["y_raw"] = reconstruction_targets_batch(batch["x_eeg"],
                                                                           batch["input_mask"])
            self.batch_start, self.batch = start, batch
        return {k: v[i - start] for k, v in self.batch.items()}


def project_loader(public, size, work, targets):
    torch = project_import()
    from dataset import PickleLoader
    P = files(work, size)
    ds = PickleLoader(sorted(P["loader"].iterdir()), 1024, targets=False)
    if targets:
        ds = _BatchedTargets(ds)
    keys = ("x_eeg", "y_freq", "y_raw") if targets else ("x_eeg",)
    # named as the public items, for the comparison
    return _loader_pass(torch, ds, lambda item: {"x" if k == "x_eeg" else k: item[k]
                                                 for k in keys})


# ------------------------------------------------------------------------------------ driver

CHILDREN = {
    "prep": (prep, None),
    "generate_b1": (lambda *a: public_generate(*a, 1), lambda *a: project_generate(*a, 1)),
    "generate_b8": (lambda *a: public_generate(*a, 8), lambda *a: project_generate(*a, 8)),
    "pretrain": (public_pretrain, project_pretrain),
    "pretrain_recompute": (public_pretrain, lambda *a: project_pretrain(*a, recompute=True)),
    "vq": (public_vq, project_vq),
    "loader_vq": (lambda *a: public_loader(*a, True), lambda *a: project_loader(*a, True)),
    "loader_gpt": (lambda *a: public_loader(*a, False), lambda *a: project_loader(*a, False)),
}


def run_child(side, workload, args) -> dict:
    cmd = [sys.executable, __file__, "--child", side, workload, "--public", args.public,
           "--size", args.size, "--workdir", str(args.workdir)]
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--public", required=True, help="extracted tree of the public NeuroLM code")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--only", default=",".join(WORKLOADS))
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--workdir", type=Path,
                   default=Path(tempfile.gettempdir()) / "neurolm-compare-public")
    p.add_argument("--json", type=Path)
    p.add_argument("--child", nargs=2, metavar=("SIDE", "WORKLOAD"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.public = os.path.abspath(args.public)
    if not (Path(args.public) / "model" / "model_neurolm.py").exists():
        print(f"--public {args.public}: not a checkout of the public NeuroLM code",
              file=sys.stderr)
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        side, workload = args.child
        fn = CHILDREN[workload][0 if side == "public" else 1]
        print(json.dumps({**fn(args.public, args.size, args.workdir), "cpu_s": LAST_CPU_S[0]}))
        return 0
    workloads = [w for w in args.only.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:
        print(f"--only: unknown workload(s) {unknown}; choose from {WORKLOADS}", file=sys.stderr)
        return 2
    run_child("public", "prep", args)
    results = {}
    for workload in workloads:
        runs = {"public": [], "project": []}
        for _ in range(args.reps):
            for side in ("public", "project"):   # A B A B: ratios from the same machine state
                runs[side].append(run_child(side, workload, args))
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
        results[workload] = row
        print(f"{workload:12s} public {med['public']:8.3f} s  project {med['project']:8.3f} s  "
              f"speedup {row['speedup']:5.2f}x (CPU time {row['cpu_speedup']:5.2f}x)  "
              f"peak MiB {peak['public']:7.0f} / "
              f"{peak['project']:7.0f}  " + "  ".join(
                  f"{k}={v}" for k, v in row.items() if k.startswith(("step0_", "tokens_", "max_"))
                  and not isinstance(v, dict)), flush=True)
    if args.json:
        args.json.write_text(json.dumps(dict(size=args.size, reps=args.reps, results=results),
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
