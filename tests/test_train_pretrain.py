"""train_pretrain.py: next-second targets, VQ checkpoint in, public NeuroLM layout out,
overfitting, DDP."""
from __future__ import annotations

import json

import torch
from train_fixtures import (
    overfit_losses,
    pretrain_args,
    run_under_torchrun,
    tiny_inputs,
    tiny_vq_checkpoint,
)

import train_pretrain
from model import build_gpt, load_neurolm

PUBLIC_PREFIXES = ("GPT2.transformer.wte.weight", "GPT2.transformer.wpe.weight",
                   "GPT2.transformer.h.", "GPT2.transformer.ln_f.", "GPT2.lm_head.weight",
                   "tokenizer.", "pos_embed.weight")
BLOCK_PARTS = ("ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj")


def test_next_second_targets_shift_by_channel_count():
    # two samples: 2 channels x 3 s, and 3 channels x 2 s, padded to 8 tokens
    codes = torch.arange(16).view(2, 8)
    time = torch.tensor([[0, 0, 1, 1, 2, 2, 0, 0], [0, 0, 0, 1, 1, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    y = train_pretrain.next_second_targets(codes, time, mask)
    assert y.tolist() == [[2, 3, 4, 5, -1, -1, -1, -1], [11, 12, 13, -1, -1, -1, -1, -1]]


def test_pretrain_loads_vq_and_writes_public_layout(train_root, tmp_path):
    vq_path = tiny_vq_checkpoint(train_root)
    dataset, text = tiny_inputs(train_root)
    argv = pretrain_args(vq_path, dataset, text, tmp_path / "lm", "--max_steps", "4")
    last = train_pretrain.main(argv)
    ckpt = torch.load(last, weights_only=True)
    for key in ("model", "optimizer", "model_args", "iter_num", "epoch"):
        assert key in ckpt
    assert set(ckpt["model_args"]) >= {"n_layer", "n_head", "n_embd", "block_size", "bias",
                                       "vocab_size", "dropout"}
    keys = list(ckpt["model"])
    assert all(k.startswith(PUBLIC_PREFIXES) for k in keys), keys
    for part in BLOCK_PARTS:
        assert any(k.startswith(f"GPT2.transformer.h.1.{part}.") for k in keys), part
    # the encoder is the VQ's, frozen through training
    vq = torch.load(vq_path, weights_only=True)["model"]
    for k, v in ckpt["model"].items():
        if k.startswith("tokenizer."):
            assert torch.equal(v, vq["VQ.encoder." + k[len("tokenizer."):]]), k
    model = load_neurolm(last)
    assert model.n_eeg_codes == 512
    assert torch.equal(model.GPT2.lm_head.weight, ckpt["model"]["GPT2.lm_head.weight"])
    rows = (tmp_path / "lm" / "metrics.jsonl").read_text()
    for key in ("eeg_loss", "text_loss", "eeg_accuracy", "val_eeg_loss", "val_eeg_accuracy",
                "val_eeg_perplexity"):
        assert f'"{key}"' in rows, key
    assert (tmp_path / "lm" / "curves.png").is_file()

    # --init_from scratch starts from the embeddings the tokenizer was aligned to
    args = train_pretrain.parse_args(argv)
    gpt = build_gpt(args.init_from, args.preset, args.model, text_embeddings=vq["wte.weight"])
    assert torch.equal(gpt.transformer.wte.weight[:50257], vq["wte.weight"])


def test_pretrain_overfits_one_batch(train_root, tmp_path, single_thread):
    dataset, text = tiny_inputs(train_root)
    argv = pretrain_args(tiny_vq_checkpoint(train_root), dataset, text, tmp_path / "lm",
                         "--text_batch_size", "1")
    losses = overfit_losses(train_pretrain, argv, "loss", steps=15, lr=1e-2)
    assert min(losses) <= 0.5 * losses[0], losses


def test_pretrain_ddp_ranks_stay_identical(train_root, tmp_path):
    dataset, text = tiny_inputs(train_root)
    argv = pretrain_args(tiny_vq_checkpoint(train_root), dataset, text, tmp_path / "out",
                         "--max_steps", "2", "--text_batch_size", "1")
    ranks = run_under_torchrun("pretrain", tmp_path / "dump", argv)
    # each rank trained on its own samples and text: equal only through the all-reduce
    assert ranks[0].keys() == ranks[1].keys()
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    assert torch.load(tmp_path / "out" / "last.pt", weights_only=True)["iter_num"] == 2


def test_activation_checkpointing_trains_the_same(train_root, tmp_path, single_thread,
                                                  monkeypatch):
    """--activation_checkpointing recomputes the blocks in the backward pass: the same losses,
    step after step, as keeping the activations."""
    vq_path = tiny_vq_checkpoint(train_root)
    dataset, text = tiny_inputs(train_root)
    checkpointed = []
    original = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint",
                        lambda *a, **k: checkpointed.append(1) or original(*a, **k))
    losses = {}
    for flag in ((), ("--activation_checkpointing",)):
        out = tmp_path / ("recompute" if flag else "plain")
        train_pretrain.main(pretrain_args(vq_path, dataset, text, out, "--max_steps", "3",
                                          *flag))
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        losses[bool(flag)] = [r["loss"] for r in rows if "loss" in r]
        assert bool(checkpointed) == bool(flag)    # blocks recomputed only when asked
    assert len(losses[True]) == 3 and losses[True] == losses[False]
