"""The public NeuroLM code's side of bench/compare_public.py, run in a child process with the
public checkout first on sys.path (so `model`, `dataset` are the public ones): its random-weight
checkpoints in its own layout, and its generation, pretraining step, VQ step and loaders.

Patches, only to run it offline on a CPU: VQ_Align's constructor downloads GPT-2 (its table is
replaced by a random one, then overwritten by the checkpoint); at --size tiny a hard-coded
Linear(400, 768) in TemporalConv is resized to the encoder width.
"""
from __future__ import annotations

import sys

import compare_setup as cs


def public_import(public: str, size: str):
    sys.path.insert(0, public)
    import torch
    torch.set_num_threads(cs.THREADS)
    import model.model_neural_transformer as mnt
    import model.model_vq as mvq
    width = cs.SIZES[size]["dec"]["n_embd"]

    class OfflineGPT2:  # VQ_Align.__init__ asks the hub for GPT-2: a random table instead
        @classmethod
        def from_pretrained(cls, *a, **k):
            o = cls()
            o.sd = {"transformer.wte.weight": torch.randn(50257, width) * 0.02}
            return o

        def state_dict(self):
            return self.sd

    mvq.GPT2LMHeadModel = OfflineGPT2
    if cs.SIZES[size]["enc"]["n_embd"] != 768:   # TemporalConv hard-codes Linear(400, 768)
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
                 n_embd=cs.SIZES[size]["enc"]["n_embd"])
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


def prep_weights(public, size, work):
    """Random weights in the public layout (written once, reused)."""
    torch = public_import(public, size)
    import model.model as mm
    import model.model_neural_transformer as mnt
    import model.model_neurolm as mnl
    import model.model_vq as mvq
    P = cs.files(work, size)
    enc, dec = cs.enc_dec_args(size)
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
        g = cs.SIZES[size]["gpt"]
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
    return {"ok": True}


def public_batch(torch, P, gpt_training):
    from torch.utils.data import default_collate

    from dataset import PickleLoader
    paths = sorted(str(p) for p in P["pretrain"].iterdir())
    ds = PickleLoader(paths, block_size=1024, GPT_training=gpt_training)
    return default_collate([ds[i] for i in range(cs.PT_BATCH)])


def public_generate(public, size, work, batch):
    torch = public_import(public, size)
    P = cs.files(work, size)
    lm = public_neurolm(torch, P, size).eval()
    d = torch.load(P["inputs"] / f"gen_b{batch}.pt", weights_only=True)
    n, m = d["x"].shape[1], d["prompt"].shape[1]
    per_second = int((d["times"][0] == 0).sum())   # channels: the tokens of second 0
    mask = instruction_mask(n, n, m, per_second).repeat(batch, 1, 1, 1)

    def call(new):
        return lm.generate(d["x"], d["prompt"], d["chans"], d["times"], d["mask"],
                           eeg_text_mask=mask, max_new_tokens=new, top_k=1)

    cs.timed(lambda: call(2))
    cs.reset_peak_rss()
    sec, _ = cs.timed(lambda: call(cs.GEN_NEW))
    peak = cs.peak_rss_mib()
    # reference answers: the public model's math, the correct mask rebuilt at every step
    with torch.no_grad():
        enc_mask = d["mask"].unsqueeze(1).repeat(1, n, 1).unsqueeze(1)
        feats = lm.tokenizer(d["x"], d["chans"], d["times"], enc_mask, return_all_tokens=True)
        feats = lm.encode_transform_layer(feats) + lm.pos_embed(d["chans"])
        out = d["prompt"]
        for _ in range(cs.GEN_NEW):
            step_mask = instruction_mask(n, n, out.shape[1], per_second)
            logits, _, _ = lm.GPT2(x_eeg=feats, x_text=out, eeg_time_idx=d["times"],
                                   eeg_text_mask=step_mask.repeat(batch, 1, 1, 1))
            out = torch.cat([out, logits[:, -1, :50257].argmax(-1, keepdim=True)], dim=1)
    return dict(seconds=sec, peak_rss_mib=peak, tokens=out[:, m:].tolist())


def public_pretrain(public, size, work):
    torch = public_import(public, size)
    from collections import OrderedDict

    from model.model_neural_transformer import NTConfig
    from model.model_vq import VQ
    P = cs.files(work, size)
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

    return cs.timed_step(step)


def public_vq(public, size, work):
    torch = public_import(public, size)
    from model.model_neural_transformer import NTConfig
    from model.model_vq import VQ_Align
    P = cs.files(work, size)
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

    return cs.timed_step(step)


def public_loader(public, size, work, targets):
    public_import(public, size)
    from dataset import PickleLoader
    P = cs.files(work, size)
    ds = PickleLoader(sorted(str(p) for p in P["loader"].iterdir()), block_size=1024,
                      GPT_training=not targets)
    return cs.loader_pass(ds, lambda item: dict(zip(
        ("x", "y_freq", "y_raw") if targets else ("x",), item)))
