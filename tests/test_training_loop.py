"""training/loop.py: where Stage.validate is called, what its Progress says, and that
Progress.state is the checkpoint fit writes next (CPU, a linear model)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import training


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def run(out_dir, *flags: str):
    """fit a linear model on 10 points in batches of 2 (5 steps per epoch); returns the Progress
    of every validate call, the state Progress.state gave at each, and the last checkpoint."""
    args = training.stage_parser("test").parse_args(
        ["--out_dir", str(out_dir), "--device", "cpu", "--batch_size", "2", "--num_workers", "0",
         "--save_every", "0", "--log_every", "1", *flags])
    values = {**vars(args), "preset": "test"}
    runtime = training.setup_runtime("cpu", seed=0)
    model = training.prepare_model(nn.Linear(3, 1), runtime)
    optimizer = training.configure_optimizer(model, 1e-2, 0.0, (0.9, 0.95), runtime.device_type)
    scaler = runtime.make_grad_scaler()
    g = torch.Generator().manual_seed(0)
    points = TensorDataset(torch.randn(10, 3, generator=g), torch.randn(10, 1, generator=g))
    loader = training.make_loader(points, 2, runtime, shuffle=True, num_workers=0, seed=0,
                               drop_last=True)
    calls, states = [], []

    def train_step(batches, iter_num, total_steps):
        x, y = batches[0]
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        training.optimizer_step(optimizer, scaler, 1.0, step=iter_num)
        return {"loss": loss.item()}

    def validate(progress):
        calls.append(progress)
        states.append(progress.state())
        return {"val_calls": len(calls)}

    stage = training.Stage("test", runtime, model, optimizer, scaler, loader, train_step, validate,
                        lambda: {})
    last = training.run_stage(stage, training.RunArgs.from_mapping(values),
                              training.TrainArgs.from_mapping(values), values)
    return calls, states, torch.load(last, weights_only=True)


def test_validate_at_epoch_ends_and_at_a_mid_epoch_end(tmp_path):
    calls, states, last = run(tmp_path, "--max_steps", "7")
    seen = [(p.epoch, p.iter_num, p.total_steps, p.resumed_from, p.is_last) for p in calls]
    assert seen == [(0, 5, 7, None, False), (1, 7, 7, None, True)]
    # the state handed to the hook is the checkpoint written right after it
    for key in ("iter_num", "epoch", "step_in_epoch"):
        assert states[-1][key] == last[key]
    for k, v in last["model"].items():
        assert torch.equal(states[-1]["model"][k], v)
    assert (states[0]["iter_num"], states[0]["epoch"]) == (5, 0)

    # resumed at step 7 (mid-epoch 1) and run to step 9: one call, at the end, knowing the start
    calls, states, last = run(tmp_path, "--max_steps", "9", "--resume", "auto")
    seen = [(p.epoch, p.iter_num, p.resumed_from, p.is_last) for p in calls]
    assert seen == [(1, 9, 7, True)] and last["iter_num"] == 9


def test_a_run_ending_on_an_epoch_end_validates_once(tmp_path):
    calls, _, last = run(tmp_path, "--max_epochs", "2")
    assert [(p.epoch, p.iter_num) for p in calls] == [(0, 5), (1, 10)]
    assert last["iter_num"] == 10
    # resuming a finished run trains nothing and validates its end once more
    calls, _, _ = run(tmp_path, "--max_epochs", "2", "--resume", "auto")
    assert [(p.epoch, p.iter_num, p.resumed_from) for p in calls] == [(1, 10, 10)]
