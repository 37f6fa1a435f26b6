"""--fsdp on 2 CPU ranks (gloo): the same losses and weights as DDP, exact resume from its own
checkpoints, and resume across modes (a DDP checkpoint continued under FSDP)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from train_fixtures import pretrain_args, run_under_torchrun, tiny_inputs, tiny_vq_checkpoint

pytestmark = pytest.mark.slow   # four 2-rank runs: about a minute or two on a shared CPU


def losses(out_dir):
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


def final_model(out_dir):
    return torch.load(out_dir / "last.pt", weights_only=True)["model"]


def resume_from(source, step, dest, argv, tmp_path, name, *extra):
    dest.mkdir()
    shutil.copy(source / f"ckpt-{step:07d}.pt", dest / f"ckpt-{step:07d}.pt")
    run_under_torchrun("pretrain", tmp_path / f"dump_{name}", [*argv(dest), "--resume", "auto",
                                                               *extra])
    return final_model(dest)


def test_fsdp_matches_ddp_and_resumes_exactly(train_root, tmp_path):
    dataset, text = tiny_inputs(train_root)
    vq = tiny_vq_checkpoint(train_root)
    def argv(out):
        return pretrain_args(vq, dataset, text, out, "--max_steps", "4", "--save_every",
                             "2", "--text_batch_size", "1")

    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    run_under_torchrun("pretrain", tmp_path / "dump_ddp", argv(ddp))
    run_under_torchrun("pretrain", tmp_path / "dump_fsdp", [*argv(fsdp), "--fsdp"])
    assert len(losses(ddp)) == 4
    assert losses(fsdp) == pytest.approx(losses(ddp), abs=1e-5)
    a, b = final_model(ddp), final_model(fsdp)
    assert a.keys() == b.keys()   # the same single-file (public) layout
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5, msg=k)

    # FSDP resumes its own checkpoint bit-exactly
    resumed = resume_from(fsdp, 2, tmp_path / "fsdp_resumed", argv, tmp_path, "r1", "--fsdp")
    for k in b:
        assert torch.equal(resumed[k], b[k]), k
    # and continues a DDP checkpoint (optimizer state included) as DDP would
    crossed = resume_from(ddp, 2, tmp_path / "crossed", argv, tmp_path, "r2", "--fsdp")
    for k in a:
        torch.testing.assert_close(crossed[k], a[k], atol=1e-5, rtol=1e-5, msg=k)
