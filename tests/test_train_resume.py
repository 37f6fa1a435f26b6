"""Both trainers: 6 steps in one run == 3 steps, a kill, a resume and 3 more steps (CPU)."""
from __future__ import annotations

import pytest
import torch
from train_fixtures import pretrain_args, tiny_inputs, tiny_vq_checkpoint, vq_args

import train_pretrain
import train_vq


def assert_same(a, b, where="state"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def kill_during_step(trainer, monkeypatch, step: int):
    """Make the next run die (KeyboardInterrupt) when optimizer step `step` begins."""
    build = trainer.build_stage

    def build_and_arm(args):
        stage = build(args)
        train_step, calls = stage.train_step, []

        def dying_step(*a):
            calls.append(1)
            if len(calls) == step:
                raise KeyboardInterrupt("simulated kill")
            return train_step(*a)

        stage.train_step = dying_step
        return stage

    monkeypatch.setattr(trainer, "build_stage", build_and_arm)


def full_then_killed(trainer, argv, tmp_path, monkeypatch, step: int):
    """Train to the end in tmp_path/full, then the same run in tmp_path/part killed when
    optimizer step `step` begins; the full run's last checkpoint (what a resume must reach)."""
    full = trainer.main(argv(tmp_path / "full"))
    kill_during_step(trainer, monkeypatch, step=step)
    with pytest.raises(KeyboardInterrupt):
        trainer.main(argv(tmp_path / "part"))
    monkeypatch.undo()
    return full


@pytest.mark.parametrize("which", ["vq", "pretrain"])
def test_kill_and_resume_matches_uninterrupted_run(which, train_root, tmp_path, monkeypatch,
                                                   single_thread):
    dataset, text = tiny_inputs(train_root)
    if which == "vq":
        trainer = train_vq
        def argv(out):
            return vq_args(dataset, text, out, "--max_steps", "6", "--save_every", "3")
    else:
        trainer = train_pretrain
        vq = tiny_vq_checkpoint(train_root)
        def argv(out):
            return pretrain_args(vq, dataset, text, out, "--max_steps", "6",
                                 "--save_every", "3", "--text_batch_size", "1")
    # 8 samples, batch 2: 4 steps per epoch, so the kill falls mid-epoch and 6 steps cross one
    full = full_then_killed(trainer, argv, tmp_path, monkeypatch, step=4)
    saved = sorted(p.name for p in (tmp_path / "part").glob("ckpt-*.pt"))
    assert saved == ["ckpt-0000003.pt"]
    # what a crash in the middle of writing step 5's checkpoint would leave: passed over
    (tmp_path / "part" / "ckpt-0000005.pt").write_bytes(b"PK\x03\x04torn")

    resumed = trainer.main([*argv(tmp_path / "part"), "--resume", "auto"])
    a = torch.load(full, weights_only=True)
    b = torch.load(resumed, weights_only=True)
    assert a["iter_num"] == b["iter_num"] == 6
    assert (a["epoch"], a["step_in_epoch"]) == (b["epoch"], b["step_in_epoch"])
    assert_same(a["model"], b["model"], "model")
    assert_same(a["optimizer"], b["optimizer"], "optimizer")
