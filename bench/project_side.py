"""This project's side of bench/compare_public.py, run in a child process with the repository
first on sys.path: the inputs of every workload (written with the project's channel names), and
the model-level pieces the trainers call (bench/ imports no stage script): generation;
pretraining = the frozen encoder once (LM features + VQ codes), next-second targets, EEG
forward/backward then text forward/backward with return_logits=False, clip 1.0, AdamW
(pretrain_recompute: the same with --activation_checkpointing); VQ_Align = forward with the text
domain loss, backward, AdamW; the loaders (samples read without targets, reconstruction targets
computed for a batch of VQ_BATCH samples: train_vq.py's path). bench/floors.py counts the FLOPs
of the same parts. `dtype` (a name of model.precision.INFERENCE_DTYPES): generation answers with
that inference copy (NeuroLM.to_inference_precision), the training steps run their forward
passes under that autocast (the trainers' --dtype bfloat16; fp32 master weights).
"""
from __future__ import annotations

import contextlib
import pickle
from pathlib import Path

from compare_setup import (
    GEN_NEW,
    GEN_SECONDS,
    N_LOADER_FILES,
    PT_BATCH,
    TEXT_BLOCK,
    THREADS,
    VQ_BATCH,
    files,
    loader_pass,
    peak_rss_mib,
    reset_peak_rss,
    timed,
    timed_step,
)


def project_import():
    import torch

    from training import reuse_freed_memory
    torch.set_num_threads(THREADS)
    torch.manual_seed(1337)
    reuse_freed_memory()   # as every CPU run of the trainers and of answering does
    return torch


def prep_inputs(public, size, work):
    """Every input of the workloads, written once and reused: generation prompts over 12 s of
    the TUH channels, text blocks, pretraining and loader sample files."""
    torch = project_import()
    P = files(work, size)
    P["inputs"].mkdir(parents=True, exist_ok=True)
    from dataset import LEGACY_TUH_CHANNELS as TUH
    from dataset import channel_index
    for b in (1, 8):
        path = P["inputs"] / f"gen_b{b}.pt"
        if not path.exists():
            gen = torch.Generator().manual_seed(4)
            n = len(TUH) * GEN_SECONDS
            x = torch.randn(b, n, 200, generator=gen) * 0.3
            chans = torch.tensor([channel_index(c) for c in TUH] * GEN_SECONDS)
            times = torch.arange(GEN_SECONDS).repeat_interleave(len(TUH))
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


def write_pickles(folder: Path, n: int, seed=0):
    import numpy as np

    from dataset import LEGACY_TUH_CHANNELS as TUH
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"sample_{i:04d}.pkl"
        if not path.exists():   # as prepare_TUH_pretrain.py writes them: 23 ch x 44 s, float64
            sample = {"X": rng.standard_normal((23, 44 * 200)) * 30.0, "ch_names": TUH}
            with open(path, "wb") as f:
                pickle.dump(sample, f)
        paths.append(str(path))
    return paths


def project_batch(torch, P, targets):
    from torch.utils.data import default_collate

    from dataset import PickleLoader
    ds = PickleLoader(sorted(P["pretrain"].iterdir()), 1024, targets=targets)
    return default_collate([ds[i] for i in range(PT_BATCH)])


def autocast(torch, dtype: str):
    """The trainers' forward-pass context in this precision (fp32: none)."""
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=getattr(torch, dtype))


def project_generate(public, size, work, batch, dtype="float32"):
    torch = project_import()
    from model import load_neurolm
    from model.precision import INFERENCE_DTYPES
    from training import release_freed_memory
    P = files(work, size)
    lm = load_neurolm(P["lm"], tokenizer_path=P["vq"]).to_inference_precision(
        INFERENCE_DTYPES[dtype])
    release_freed_memory()   # as inference/loading.py once the model is ready
    d = torch.load(P["inputs"] / f"gen_b{batch}.pt", weights_only=True)

    def call(new):
        return lm.generate(d["x"], d["prompt"], d["chans"], d["times"], d["mask"],
                           max_new_tokens=new, top_k=1)

    timed(lambda: call(2))
    reset_peak_rss()
    sec, out = timed(lambda: call(GEN_NEW))
    return dict(seconds=sec, peak_rss_mib=peak_rss_mib(),
                tokens=out[:, d["prompt"].shape[1]:].tolist())


def project_pretrain_parts(size, work, recompute=False, dtype="float32"):
    """The project's pretraining step on this run's inputs, in parts (bench/floors.py counts
    their FLOPs): encode() -> frozen encoder features and next-second code targets (the encoder
    runs once, as in the trainer); learn(features, y) -> EEG then text forward/backward with
    return_logits=False, their logs; optimizer."""
    torch = project_import()
    import utils
    from model import load_neurolm, load_vq, next_second_targets
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
        with autocast(torch, dtype):   # as train_pretrain.py
            features = model.tokenizer(b["x_eeg"], b["input_chans"], b["input_time"],
                                       b["input_mask"])
            codes = vq.codes_from_features(features)
        return features, next_second_targets(codes, b["input_time"], b["input_mask"])

    def learn(features, y):
        with autocast(torch, dtype):
            eeg_loss, log, _ = model(x_eeg=b["x_eeg"], y_eeg=y, input_chans=b["input_chans"],
                                     input_time=b["input_time"], input_mask=b["input_mask"],
                                     return_logits=False, eeg_features=features)
        eeg_loss.backward()
        with autocast(torch, dtype):
            text_loss, text_log, _ = model(x_text=t["x"], y_text=t["y"], return_logits=False)
        text_loss.backward()
        return log, text_log

    return encode, learn, optimizer


def project_pretrain(public, size, work, recompute=False, dtype="float32"):
    encode, learn, optimizer = project_pretrain_parts(size, work, recompute, dtype)
    import utils  # importable once project_import (in the parts) put the project on the path

    def step():
        log, text_log = learn(*encode())
        result = utils.optimizer_step(optimizer, None, 1.0)
        return dict(eeg_loss=log["eeg_loss"], text_loss=text_log["text_loss"],
                    grad_norm=result.grad_norm)

    return timed_step(step)


def project_vq_parts(size, work, dtype="float32"):
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
        with autocast(torch, dtype):
            loss, log = model(b["x_eeg"], b["y_freq"], b["y_raw"], b["input_chans"],
                              b["input_time"], b["input_mask"], alpha=0.0)
            text_loss = model.text_domain_loss(text, 0.0)
        (loss + text_loss).backward()
        return loss, text_loss, log

    return learn, optimizer


def project_vq(public, size, work, dtype="float32"):
    learn, optimizer = project_vq_parts(size, work, dtype)
    import utils

    def step():
        loss, text_loss, log = learn()
        utils.optimizer_step(optimizer, None, 0.0)
        return dict(loss=float(loss + text_loss), rec_freq_loss=log["rec_freq_loss"],
                    rec_raw_loss=log["rec_raw_loss"], commit_loss=log["commit_loss"],
                    domain_loss=log["domain_loss"] + float(text_loss))

    return timed_step(step)


class BatchedTargets:
    """The project's VQ input path (train_vq.py): samples read without targets, collated
    VQ_BATCH at a time, reconstruction targets computed for the whole batch
    (dataset.reconstruction_targets_batch, on the training device). Indexed by sample like a
    dataset, so loader_pass times it the same way."""

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
    project_import()
    from dataset import PickleLoader
    P = files(work, size)
    ds = PickleLoader(sorted(P["loader"].iterdir()), 1024, targets=False)
    if targets:
        ds = BatchedTargets(ds)
    keys = ("x_eeg", "y_freq", "y_raw") if targets else ("x_eeg",)
    # named as the public items, for the comparison
    return loader_pass(ds, lambda item: {"x" if k == "x_eeg" else k: item[k]
                                                 for k in keys})
