"""Runtime setup, schedule, optimizer groups, the guarded step, flags and logging of training.py."""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import types

import pytest
import torch
from torch import nn

import training

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                 "MASTER_PORT")


@pytest.fixture
def single_process(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 1, bias=False)
        self.frozen = nn.Linear(8, 8)
        self.frozen.requires_grad_(False)

    def forward(self, idx):
        return self.head(self.norm(torch.relu(self.fc(self.emb(idx))))).squeeze(-1)


# ----------------------------------------------------------------------------- runtime

def test_setup_runtime_single_process_cpu(single_process):
    rt = training.setup_runtime(device="cpu", seed=7)
    assert rt.device == torch.device("cpu")
    assert (rt.rank, rt.world_size, rt.ddp, rt.is_main) == (0, 1, False, True)
    assert rt.amp_dtype is None and rt.dtype_name == "float32"
    assert rt.data_seed == 7
    a = torch.rand(3)
    training.setup_runtime(device="cpu", seed=7)
    assert torch.equal(a, torch.rand(3)), "seeding must make runs repeat"
    with rt.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.float32
    assert not rt.make_grad_scaler().is_enabled()
    training.cleanup_runtime()  # harmless without a process group


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt (Linux)")
def test_freed_memory_is_reused_from_the_heap():
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("not glibc >= 2.33")
    libc.mallinfo2.restype = MallInfo2
    assert training.reuse_freed_memory()
    mapped = libc.mallinfo2().hblkhd
    big = torch.empty(64 << 20, dtype=torch.uint8)   # above glibc's 32 MB mmap ceiling
    # served from the heap, where it stays for the next allocation, not as its own mapping
    assert libc.mallinfo2().hblkhd < mapped + (64 << 20)
    del big


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim (Linux)")
def test_released_memory_goes_back_to_the_os():
    def resident_mib():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS"))

    assert training.reuse_freed_memory()
    big = torch.ones(256 << 20, dtype=torch.uint8)   # touched, so resident
    del big   # kept by the heap for the next allocation ...
    kept = resident_mib()
    training.release_freed_memory()   # ... until released
    assert resident_mib() < kept - 128


def test_device_and_dtype_resolution(single_process):
    if not torch.cuda.is_available():
        assert training.resolve_device(None) == torch.device("cpu")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            training.resolve_device("cuda")
    cpu = torch.device("cpu")
    assert training.resolve_amp_dtype("auto", cpu) is None
    assert training.resolve_amp_dtype("bfloat16", cpu) == torch.bfloat16
    assert training.resolve_amp_dtype("float32", cpu) is None
    with pytest.raises(ValueError, match="--dtype"):
        training.resolve_amp_dtype("fp8", cpu)
    rt = training.setup_runtime(device="cpu", dtype="bfloat16")
    with rt.autocast():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    fp16 = training.Runtime(device=cpu, amp_dtype=torch.float16)
    assert fp16.needs_grad_scaler and fp16.make_grad_scaler().is_enabled()


def test_distributed_env_reads_torchrun_variables(monkeypatch):
    for name, value in {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8",
                        "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    assert training.distributed_env() == {"rank": 5, "local_rank": 1, "world_size": 8,
                                       "local_world_size": 4}


# ----------------------------------------------------------------------------- schedule/optim

def test_cosine_lr_values():
    lr, min_lr = 1.0, 0.1
    assert training.cosine_lr(0, 4, 14, lr, min_lr) == pytest.approx(0.2)
    assert training.cosine_lr(3, 4, 14, lr, min_lr) == pytest.approx(0.8)
    assert training.cosine_lr(4, 4, 14, lr, min_lr) == pytest.approx(1.0)
    assert training.cosine_lr(9, 4, 14, lr, min_lr) == pytest.approx(0.55)   # half-way: mean
    assert training.cosine_lr(14, 4, 14, lr, min_lr) == pytest.approx(0.1)
    assert training.cosine_lr(100, 4, 14, lr, min_lr) == pytest.approx(0.1)
    values = [training.cosine_lr(s, 4, 14, lr, min_lr) for s in range(4, 15)]
    assert all(a >= b for a, b in zip(values, values[1:])), "decay must be monotone"
    assert training.cosine_lr(0, 0, 10, lr, min_lr) == pytest.approx(1.0)   # no warm-up


def test_configure_optimizer_decays_only_matrices():
    model = Tiny()
    opt = training.configure_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    assert isinstance(opt, torch.optim.AdamW)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {id(p) for p in decay["params"]} == {id(model.emb.weight), id(model.fc.weight),
                                                  id(model.head.weight)}
    assert {id(p) for p in no_decay["params"]} == {id(model.fc.bias), id(model.norm.weight),
                                                     id(model.norm.bias)}
    assert decay["betas"] == (0.9, 0.95)
    assert not decay.get("fused"), "fused AdamW only on CUDA (see configure_optimizer)"


def _loss(model):
    return model(torch.arange(4)).pow(2).mean()


def test_optimizer_step_applies_clips_and_zeroes():
    torch.manual_seed(0)
    model = Tiny()
    opt = training.configure_optimizer(model, lr=1e-2, weight_decay=0.0)
    before = model.fc.weight.clone()
    (_loss(model) * 1e4).backward()
    result = training.optimizer_step(opt, None, grad_clip=0.5)
    assert not result.skipped and result.grad_norm > 0.5   # reported before clipping
    assert not torch.equal(before, model.fc.weight)
    assert all(p.grad is None for p in model.parameters())


def test_non_finite_gradients_skip_the_step(caplog):
    model = Tiny()
    opt = training.configure_optimizer(model, lr=1e-2, weight_decay=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _loss(model).backward()
    model.fc.weight.grad[0, 0] = float("nan")
    with caplog.at_level(logging.WARNING):
        result = training.optimizer_step(opt, None, grad_clip=1.0, step=12)
    assert result.skipped and not math.isfinite(result.grad_norm)
    assert "step 12" in caplog.text and "skipped" in caplog.text
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed by a skipped step"
    assert not opt.state, "a skipped step must not touch the Adam moments"
    assert all(p.grad is None for p in model.parameters())
    _loss(model).backward()  # the next good step goes through
    assert not training.optimizer_step(opt, None, grad_clip=1.0).skipped


def test_non_finite_gradients_with_fp16_scaler(caplog):
    model = Tiny()
    opt = training.configure_optimizer(model, lr=1e-2, weight_decay=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = model.fc.weight.clone()
    scaler.scale(_loss(model) * float("inf")).backward()
    with caplog.at_level(logging.WARNING):
        result = training.optimizer_step(opt, scaler, grad_clip=1.0)
    assert result.skipped and "loss scale" in caplog.text
    assert torch.equal(before, model.fc.weight)
    assert scaler.get_scale() < 1024.0
    scaler.scale(_loss(model)).backward()
    assert not training.optimizer_step(opt, scaler, grad_clip=1.0).skipped
    assert not torch.equal(before, model.fc.weight)


def test_maybe_compile_really_switches_and_unwrap():
    model = Tiny()
    assert training.maybe_compile(model, False) is model
    compiled = training.maybe_compile(model, True)   # lazy: nothing is compiled until called
    assert compiled is not model and isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert training.unwrap(compiled) is model
    assert training.unwrap(model) is model
    assert training.find_ddp(compiled) is None


# ----------------------------------------------------------------------------- data

def test_default_num_workers_shares_cores(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert training.default_num_workers(1) == 4
    assert training.default_num_workers(8) == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    assert training.default_num_workers(2) == 0


def test_make_loader_single_process(single_process):
    rt = training.setup_runtime("cpu")
    data = torch.utils.data.TensorDataset(torch.arange(10))
    loader = training.make_loader(data, 3, rt, shuffle=True, num_workers=0, seed=1)
    assert loader.batches_per_epoch == 4 and len(loader) == 4
    assert not loader.loader.pin_memory
    loader.set_epoch(0)
    epoch0 = torch.cat([b[0] for b in loader]).tolist()
    assert sorted(epoch0) == list(range(10))
    loader.set_epoch(1)
    assert torch.cat([b[0] for b in loader]).tolist() != epoch0
    loader.set_epoch(0, skip_batches=2)
    assert torch.cat([b[0] for b in loader]).tolist() == epoch0[6:]


# ----------------------------------------------------------------------------- flags

def test_common_args_have_help_and_overridable_defaults():
    parser = argparse.ArgumentParser()
    training.add_common_args(parser)
    parser.set_defaults(lr=5e-5, min_lr=1e-5, max_epochs=50)
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, f"--{action.dest} has no help text"
    args = parser.parse_args([])
    assert (args.lr, args.max_epochs, args.compile, args.wandb, args.resume) == \
        (5e-5, 50, False, False, "auto")
    assert not any("key" in a.dest for a in parser._actions), "no API key flag"
    args = parser.parse_args(["--compile", "--max_steps", "30", "--warmup_epochs", "0.5",
                              "--num_workers", "0"])
    assert args.compile and args.num_workers == 0
    assert training.TrainArgs.from_mapping(vars(args)).schedule(steps_per_epoch=10) == (5, 30)
    assert parser.parse_args(["--no-compile"]).compile is False
    args = parser.parse_args(["--warmup_steps", "3", "--max_epochs", "2"])
    assert training.TrainArgs.from_mapping(vars(args)).schedule(steps_per_epoch=10) == (3, 20)
    # a fraction of all steps when neither warm-up length is given
    train = training.TrainArgs(max_epochs=2, warmup_epochs=None, warmup_fraction=0.1)
    assert train.schedule(steps_per_epoch=13) == (3, 26)


# ----------------------------------------------------------------------------- logging

def test_logger_console_jsonl_and_plot(tmp_path, capsys, single_process):
    rt = training.setup_runtime("cpu")
    logger = training.Logger(rt, tmp_path)
    logger.log({"loss": torch.tensor(2.5), "lr": 3e-4, "epoch": 0}, step=1)
    logger.log({"loss": 1.25, "lr": 2e-4, "epoch": 0}, step=2, console=False)
    logger.log({"loss": 1.0, "lr": 2e-4, "epoch": 0}, step=2)   # a resumed run repeats step 2
    logger.close()
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["step 1 | loss 2.5000 | lr 3.000e-04 | epoch 0",
                   "step 2 | loss 1.0000 | lr 2.000e-04 | epoch 0"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 2] and rows[0]["loss"] == 2.5
    assert training.read_metrics(tmp_path / "metrics.jsonl")["loss"] == [(1, 2.5), (2, 1.0)]
    png = training.plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "plots" / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in png.parent.iterdir() if p.name != "curves.png"]
    with pytest.raises(KeyError, match="accuracy"):
        training.plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "x.png", keys=["accuracy"])


def test_curves_have_integer_steps_and_the_consoles_epochs(tmp_path, monkeypatch):
    from training import plotting

    rows = [{"step": s, "epoch": (s - 1) // 4, "loss": 1.0 / s} for s in range(1, 9)]
    rows += [{"step": 4, "epoch": 0, "val_loss": 0.5}, {"step": 8, "epoch": 1, "val_loss": 0.4}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    figures = []
    monkeypatch.setattr(plotting, "save_figure", lambda fig, png: figures.append(fig))
    training.plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "c.png", keys=["val_loss"])
    ax = figures[0].axes[0]
    assert all(float(t).is_integer() for t in ax.get_xticks())   # no 4.5 between epochs
    top = ax.child_axes[0]
    assert list(top.get_xticks()) == [4, 8]
    assert [t.get_text() for t in top.get_xticklabels()] == ["0", "1"]   # as the console
    # 100 epochs: every 20th labelled, the last one kept
    assert plotting.epoch_ends([(s, s // 10) for s in range(1000)], most=5) == {
        19: 199, 39: 399, 59: 599, 79: 799, 99: 999}


def test_logger_silent_off_rank0(tmp_path, capsys):
    rt = training.Runtime(device=torch.device("cpu"), rank=1, world_size=2)
    training.Logger(rt, tmp_path / "run", wandb=True).log({"loss": 1.0}, step=1)  # no wandb needed
    assert capsys.readouterr().out == "" and not (tmp_path / "run").exists()


def test_wandb_missing_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)   # makes `import wandb` fail
    rt = training.Runtime(device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="pip install wandb"):
        training.Logger(rt, tmp_path, wandb=True)


def test_wandb_run_is_resumed_by_id(tmp_path, monkeypatch):
    calls = []

    class FakeRun:
        def log(self, metrics, step):
            calls.append(("log", metrics, step))

        def finish(self):
            calls.append(("finish",))

    def init(**kwargs):
        calls.append(("init", kwargs))
        return FakeRun()

    fake = types.SimpleNamespace(init=init)   # public API only: no wandb.util
    monkeypatch.setitem(sys.modules, "wandb", fake)
    rt = training.Runtime(device=torch.device("cpu"))
    for _ in range(2):
        logger = training.Logger(rt, tmp_path, wandb=True, project="p", run_name="r",
                              config=argparse.Namespace(lr=1e-3, out_dir=tmp_path))
        logger.log({"loss": 1.0}, step=3)
        logger.close()
    inits = [c[1] for c in calls if c[0] == "init"]
    assert inits[0]["id"] == inits[1]["id"] and inits[0]["resume"] == "allow"
    assert inits[0]["config"] == {"lr": 1e-3, "out_dir": str(tmp_path)}
    assert ("log", {"loss": 1.0}, 3) in calls and ("finish",) in calls
