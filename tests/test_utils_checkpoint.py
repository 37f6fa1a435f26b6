"""Checkpoints of training.py: atomic writes, rotation, weights_only loading with RNG states, and
exact resumption (6 steps == 3 steps + kill + resume + 3 steps)."""
from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

import training
from training import checkpoint as checkpoint_module


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def small_state(value: float) -> dict:
    return {"model": {"w": torch.full((3,), value)}, "iter_num": int(value)}


# ----------------------------------------------------------------------------- files

def test_save_rotates_and_points_last(tmp_path):
    ckpt = training.Checkpointer(tmp_path, keep=2)
    for step in (10, 20, 30):
        path = ckpt.save(small_state(step), step)
        assert path.name == f"ckpt-{step:07d}.pt"
    assert [s for s, _ in ckpt.checkpoints()] == [20, 30]
    assert ckpt.latest() == tmp_path / "ckpt-0000030.pt"
    assert training.load_checkpoint(tmp_path / "last.pt")["iter_num"] == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-0000020.pt", "ckpt-0000030.pt",
                                                          "last.pt"]
    keep_all = training.Checkpointer(tmp_path / "all", keep=0)
    for step in range(5):
        keep_all.save(small_state(step), step)
    assert len(keep_all.checkpoints()) == 5


def test_interrupted_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    ckpt = training.Checkpointer(tmp_path, keep=3)
    ckpt.save(small_state(1.0), 1)
    real_save = torch.save

    def dies_midway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")   # some bytes reach the disk, then the crash
        raise KeyboardInterrupt("killed during torch.save")

    monkeypatch.setattr(checkpoint_module.torch, "save", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(small_state(2.0), 2)
    monkeypatch.setattr(checkpoint_module.torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-0000001.pt", "last.pt"]
    assert ckpt.latest() == tmp_path / "ckpt-0000001.pt"
    assert torch.equal(training.load_checkpoint(ckpt.latest())["model"]["w"], torch.full((3,), 1.0))
    assert training.load_checkpoint(tmp_path / "last.pt")["iter_num"] == 1


def test_latest_ignores_temporary_and_torn_files(tmp_path):
    ckpt = training.Checkpointer(tmp_path, keep=3)
    ckpt.save(small_state(5.0), 5)
    # what a SIGKILL during the write leaves behind, and a file torn by a non-atomic copy
    (tmp_path / ".ckpt-0000009.pt.tmp-4242").write_bytes(b"PK\x03\x04partial")
    (tmp_path / "ckpt-0000007.pt").write_bytes(b"PK\x03\x04torn")
    assert ckpt.latest() == tmp_path / "ckpt-0000005.pt"
    assert training.resolve_resume("auto", tmp_path) == tmp_path / "ckpt-0000005.pt"
    assert training.resolve_resume("none", tmp_path) is None
    assert training.resolve_resume(str(tmp_path), "elsewhere") == tmp_path / "ckpt-0000005.pt"
    assert training.resolve_resume("auto", tmp_path / "empty") is None
    with pytest.raises(training.UserError, match="nope.pt: no such checkpoint file"):
        training.resolve_resume(str(tmp_path / "nope.pt"), tmp_path)
    with pytest.raises(training.CheckpointError, match="ckpt-0000007.pt"):
        training.load_checkpoint(tmp_path / "ckpt-0000007.pt")


def test_non_main_rank_writes_nothing(tmp_path):
    assert training.Checkpointer(tmp_path, is_main=False).save(small_state(1.0), 1) is None
    assert not list(tmp_path.iterdir())


class Custom:
    pass


def test_unsafe_objects_are_refused(tmp_path):
    with pytest.raises(TypeError, match="Custom"):
        training.to_plain({"a": Custom()})
    # a file holding an arbitrary object does not load under weights_only
    torch.save({"obj": Custom()}, tmp_path / "evil.pt")
    with pytest.raises(training.CheckpointError, match="evil.pt"):
        training.load_checkpoint(tmp_path / "evil.pt")


def test_full_state_round_trips_with_weights_only(tmp_path):
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt = training.configure_optimizer(model, 1e-3, 0.1, (0.9, 0.95))
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    config = argparse.Namespace(lr=1e-3, out_dir=tmp_path, betas=(0.9, 0.95), dtype=torch.float32)
    state = training.training_state(model, opt, scaler, iter_num=7, epoch=2, step_in_epoch=3,
                                 config=config, model_args={"n_layer": 2, "bias": False})
    training.Checkpointer(tmp_path).save(state, 7)
    loaded = training.load_checkpoint(tmp_path / "last.pt")   # weights_only=True inside
    assert set(loaded) >= {"model", "optimizer", "scaler", "iter_num", "epoch", "step_in_epoch",
                           "rng", "config", "model_args"}
    assert loaded["config"]["out_dir"] == str(tmp_path) and loaded["config"]["betas"] == [0.9, 0.95]
    assert loaded["scaler"]["scale"] == 256.0
    model2 = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    opt2 = training.configure_optimizer(model2, 1e-3, 0.1, (0.9, 0.95))
    scaler2 = torch.amp.GradScaler("cpu")
    assert training.restore_training_state(loaded, model2, opt2, scaler2) == (7, 2, 3)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 model2.state_dict().values()))
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"],
                       opt2.state_dict()["state"][0]["exp_avg"])
    assert scaler2.get_scale() == 256.0


def test_rng_state_capture_and_restore(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()   # leaves a cached Gaussian in NumPy's state
    state = training.capture_rng_state()
    expected = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3))
    training.atomic_torch_save({"rng": state}, tmp_path / "rng.pt")
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    training.restore_rng_state(training.load_checkpoint(tmp_path / "rng.pt")["rng"])
    got = (random.random(), np.random.standard_normal(3).tolist(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


# ----------------------------------------------------------------------------- sampler

def test_sampler_shards_and_skips_deterministically():
    shards = [training.ResumableSampler(11, seed=3, rank=r, world_size=2) for r in range(2)]
    for s in shards:
        s.set_epoch(4)
    a, b = (list(s) for s in shards)
    assert len(a) == len(b) == 6 and set(a) | set(b) == set(range(11))
    assert len(set(a) & set(b)) == 1, "only the padding sample repeats"
    shards[0].set_epoch(4, start=2)
    assert list(shards[0]) == a[2:] and len(shards[0]) == 4
    again = training.ResumableSampler(11, seed=3, rank=0, world_size=2)
    again.set_epoch(4)
    assert list(again) == a
    again.set_epoch(5)
    assert list(again) != a
    dropping = training.ResumableSampler(11, seed=3, rank=1, world_size=2, drop_last=True)
    assert len(list(dropping)) == 5
    with pytest.raises(ValueError):
        dropping.set_epoch(0, start=6)
    assert training.resume_position(2, 5, 5) == (3, 0)
    assert training.resume_position(2, 3, 5) == (2, 3)


# ----------------------------------------------------------------------------- resume

class Points(Dataset):
    def __init__(self, n=10):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x.sum(1, keepdim=True)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class DropNet(nn.Module):
    """Dropout makes the global RNG part of the result, so RNG restoring is tested too."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 16)
        self.drop = nn.Dropout(0.3)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        return self.head(self.norm(self.drop(torch.relu(self.fc(x)))))


def train(out_dir, total_steps=6, kill_after=None, save_every=3):
    """A trainer's loop in miniature, written as the training.py docstring tells trainers to."""
    runtime = training.setup_runtime("cpu", seed=0)
    model = training.prepare_model(DropNet(), runtime)
    optimizer = training.configure_optimizer(model, 1e-2, 0.1, (0.9, 0.95), runtime.device_type)
    scaler = runtime.make_grad_scaler()
    loader = training.make_loader(Points(10), 2, runtime, shuffle=True, num_workers=0, seed=0,
                               drop_last=True)   # 5 batches per epoch
    ckpt = training.Checkpointer(out_dir, keep=2)
    iter_num, epoch, step_in_epoch = 0, 0, 0
    path = training.resolve_resume("auto", out_dir)
    if path is not None:
        iter_num, epoch, step_in_epoch = training.restore_training_state(
            training.load_checkpoint(path), model, optimizer, scaler)
        epoch, step_in_epoch = training.resume_position(epoch, step_in_epoch,
                                                     loader.batches_per_epoch)
    while iter_num < total_steps:
        loader.set_epoch(epoch, skip_batches=step_in_epoch)
        for x, y in loader:
            training.set_lr(optimizer, training.cosine_lr(iter_num, 2, total_steps, 1e-2, 1e-3))
            with runtime.autocast():
                loss = nn.functional.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            training.optimizer_step(optimizer, scaler, grad_clip=1.0, step=iter_num)
            iter_num += 1
            step_in_epoch += 1
            if iter_num % save_every == 0 or step_in_epoch == loader.batches_per_epoch:
                ckpt.save(training.training_state(model, optimizer, scaler, iter_num, epoch,
                                               step_in_epoch, config={"lr": 1e-2}), iter_num)
            if iter_num == kill_after:
                return None   # the process dies here: nothing in memory survives
            if iter_num >= total_steps:
                break
        else:
            epoch, step_in_epoch = epoch + 1, 0
    return model, optimizer


def test_resume_is_exact(tmp_path):
    model_a, opt_a = train(tmp_path / "straight")
    # killed after step 4 (last checkpoint at step 3), then restarted: repeats step 4 and
    # crosses the epoch boundary after resuming
    assert train(tmp_path / "resumed", kill_after=4) is None
    assert training.Checkpointer(tmp_path / "resumed").latest().name == "ckpt-0000003.pt"
    model_b, opt_b = train(tmp_path / "resumed")
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), f"parameter {name} differs after resume"
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for i in sa["state"]:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(sa["state"][i][key], sb["state"][i][key]), (i, key)
    # and the resumed run really depended on the checkpoint: a fresh 2-step run differs
    model_c, _ = train(tmp_path / "short", total_steps=2)
    assert not torch.equal(model_c.fc.weight, model_a.fc.weight)
