"""train_vq.py: public checkpoint, logged losses and codebook usage, overfitting, DDP."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from train_fixtures import (
    overfit_losses,
    run_under_torchrun,
    tiny_inputs,
    tiny_vq_checkpoint,
    vq_args,
)

import dataset
import train_vq
import training
import utils
from model import load_vq

PUBLIC_PREFIXES = ("VQ.encoder.", "VQ.decoder_freq.", "VQ.decoder_raw.", "VQ.quantize.",
                   "VQ.encode_task_layer.", "VQ.decode_task_layer_freq.",
                   "VQ.decode_task_layer_raw.", "domain_classifier.", "wte.weight")


def test_domain_alpha_schedule():
    assert train_vq.domain_alpha(0.0) == 0.0
    assert train_vq.domain_alpha(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert 0.999 < train_vq.domain_alpha(1.0) < 1.0


def test_init_from_names_the_gpt2_folder_and_gpt2_path_is_its_alias(tmp_path):
    base = ["--dataset_dir", "d", "--text_dir", "t", "--preset", "tiny"]
    assert train_vq.parse_args(base).init_from == "scratch"
    for flag in ("--init_from", "--gpt2_path"):
        assert train_vq.parse_args([*base, flag, str(tmp_path)]).init_from == str(tmp_path)
    with pytest.raises(utils.UserError, match="--init_from: .*model.safetensors"):
        train_vq.text_embeddings(train_vq.parse_args([*base, "--gpt2_path", str(tmp_path)]), 64)


def test_vq_run_writes_public_checkpoint_and_logs(train_root):
    ckpt_path = tiny_vq_checkpoint(train_root)
    out = ckpt_path.parent
    ckpt = torch.load(ckpt_path, weights_only=True)
    for key in ("model", "optimizer", "encoder_args", "decoder_args", "iter_num", "epoch"):
        assert key in ckpt
    assert ckpt["iter_num"] == 4
    keys = list(ckpt["model"])
    assert all(k.startswith(PUBLIC_PREFIXES) for k in keys)
    assert all(any(k.startswith(p) for k in keys) for p in PUBLIC_PREFIXES)
    # frozen text side = the seeded from-scratch embeddings, untouched by training
    expected = train_vq.scratch_text_embeddings(64, seed=1337)
    assert torch.equal(ckpt["model"]["wte.weight"], expected)
    vq = load_vq(ckpt_path)
    assert vq.VQ.quantize.num_tokens == 512

    rows = training.read_metrics(out / "metrics.jsonl")
    for key in ("loss", "commit_loss", "rec_freq_loss", "rec_raw_loss", "domain_loss",
                "codebook_usage", "code_perplexity", "val_loss", "val_codebook_usage"):
        assert key in rows, key
    assert [s for s, _ in rows["loss"]] == [1, 2, 3, 4]
    assert 0 < rows["val_codebook_usage"][-1][1] <= 1
    assert (out / "curves.png").stat().st_size > 0


def test_vq_overfits_one_batch(train_root, single_thread):
    dataset, text = tiny_inputs(train_root)
    # 150 steps: with small channel/time embeddings the encoder cannot memorise patches by
    # position and has to encode their content (halving the loss took ~100 steps)
    losses = overfit_losses(train_vq, vq_args(dataset, text, train_root / "vq_overfit"),
                            "vq_loss", steps=150, lr=1e-2)
    assert min(losses) <= 0.5 * losses[0], losses


def test_vq_ddp_ranks_stay_identical(train_root, tmp_path):
    dataset, text = tiny_inputs(train_root)
    ranks = run_under_torchrun("vq", tmp_path / "dump",
                               vq_args(dataset, text, tmp_path / "out", "--max_steps", "3",
                                       "--restart_unused_codes_after", "1"))
    # each rank trained on its own samples and text: equal only through the all-reduce (and
    # the quantizer's own all-reduced codebook updates, and dead codes restarted every step
    # onto tokens that rank 0 picks)
    assert ranks[0].keys() == ranks[1].keys()
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    assert torch.load(tmp_path / "out" / "last.pt", weights_only=True)["iter_num"] == 3


def test_targets_on_the_device_give_the_per_item_loss(train_root, single_thread):
    data, text = tiny_inputs(train_root)
    args = train_vq.parse_args(vq_args(data, text, train_root / "vq_targets"))
    try:
        stage = train_vq.build_stage(args)
        stage.loader.set_epoch(0)
        plain = next(iter(stage.loader))
        assert "y_freq" not in plain   # the loader returns plain items
        per_item = [dataset.reconstruction_targets({"x_eeg": x, "input_mask": m})
                    for x, m in zip(plain["x_eeg"], plain["input_mask"])]
        with_items = {**plain, **torch.utils.data.default_collate(per_item)}
        start = (copy.deepcopy(stage.model.state_dict()),
                 copy.deepcopy(stage.optimizer.state_dict()))
        logs = []
        for batch in (plain, with_items):
            stage.model.load_state_dict(start[0])
            stage.optimizer.load_state_dict(start[1])
            torch.manual_seed(0)
            logs.append(stage.train_step([dict(batch)], 0, 1))
        for key in ("loss", "rec_freq_loss", "rec_raw_loss"):
            assert logs[0][key] == pytest.approx(logs[1][key], rel=1e-6, abs=1e-7), key
    finally:
        training.cleanup_runtime()
