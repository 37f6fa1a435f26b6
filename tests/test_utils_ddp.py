"""training.py under `torchrun --nproc_per_node=2` on CPU (gloo): a tiny DDP loop with gradient
accumulation ends with identical parameters on both ranks, ranks read disjoint data, and only
rank 0 writes checkpoints and metrics."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path

    import torch
    from torch import nn

    import training

    out = Path(sys.argv[1])
    runtime = training.setup_runtime("cpu", seed=0)
    assert runtime.ddp and runtime.world_size == 2, runtime
    assert torch.distributed.get_backend() == "gloo"

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 8)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 1)

        def forward(self, x):
            return self.head(self.norm(torch.relu(self.fc(x))))

    class Points(torch.utils.data.Dataset):
        def __init__(self, n):
            g = torch.Generator().manual_seed(5)
            self.x = torch.randn(n, 4, generator=g)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return i, self.x[i], self.x[i].sum(0, keepdim=True)

    torch.manual_seed(100 + runtime.rank)   # different inits: DDP must make them agree
    model = training.prepare_model(Net(), runtime)
    init = {k: v.clone() for k, v in training.unwrap(model).state_dict().items()}
    optimizer = training.configure_optimizer(model, 1e-2, 0.1, (0.9, 0.95), runtime.device_type)
    scaler = runtime.make_grad_scaler()
    loader = training.make_loader(Points(16), 2, runtime, shuffle=True, num_workers=0, seed=0,
                               drop_last=True)
    ckpt = training.Checkpointer(out / "ckpt", keep=2, is_main=runtime.is_main)
    logger = training.Logger(runtime, out / "ckpt")
    grad_accum, iter_num, seen = 2, 0, {}
    for epoch in range(2):
        loader.set_epoch(epoch)
        seen[epoch] = []
        batches = list(loader)
        for start in range(0, len(batches), grad_accum):
            for micro, (idx, x, y) in enumerate(batches[start:start + grad_accum]):
                seen[epoch] += idx.tolist()
                with training.accumulation_context(model, micro, grad_accum), runtime.autocast():
                    loss = nn.functional.mse_loss(model(x), y) / grad_accum
                    scaler.scale(loss).backward()
            result = training.optimizer_step(optimizer, scaler, grad_clip=1.0, step=iter_num)
            assert not result.skipped
            iter_num += 1
            logger.log({"loss": runtime.mean_across_ranks(loss.item())}, step=iter_num)
        ckpt.save(training.training_state(model, optimizer, scaler, iter_num, epoch,
                                       loader.batches_per_epoch), iter_num)
    runtime.barrier()
    torch.save({"params": training.unwrap(model).state_dict(), "init": init, "seen": seen,
                "iter_num": iter_num}, out / f"rank{runtime.rank}.pt")
    logger.close()
    training.cleanup_runtime()
''')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_stay_identical(tmp_path):
    script = tmp_path / "ddp_loop.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["iter_num"] == r1["iter_num"] == 4     # 2 epochs x 4 batches / grad_accum 2
    for name, p0 in r0["params"].items():
        assert torch.equal(p0, r1["params"][name]), f"{name} differs between ranks"
        assert torch.equal(r0["init"][name], r1["init"][name]), "DDP did not broadcast init"
    assert not torch.equal(r0["params"]["fc.weight"], r0["init"]["fc.weight"])
    for epoch in (0, 1):
        a, b = r0["seen"][epoch], r1["seen"][epoch]
        assert not set(a) & set(b) and sorted(a + b) == list(range(16)), (epoch, a, b)
    ckpts = sorted(p.name for p in (tmp_path / "ckpt").glob("*.pt"))
    assert ckpts == ["ckpt-0000002.pt", "ckpt-0000004.pt", "last.pt"]
    saved = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    for name, p0 in r0["params"].items():
        assert torch.equal(saved["model"][name], p0), "checkpoint keys must be unwrapped"
    lines = (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4, "only rank 0 logs"
    assert proc.stdout.count("step 1 | loss") == 1
