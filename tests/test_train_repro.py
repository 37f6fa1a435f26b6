"""Same command, same seed, same machine: the same numbers bit for bit (issue 22).

Two processes run the tokenizer and the LM pretraining for a few steps of the tiny preset with
loader worker processes and different Python hash seeds (as two shell runs get), and must write
identical weights, optimizer states and logged losses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from test_train_resume import assert_same
from train_fixtures import REPO, pretrain_args, tiny_inputs, vq_args

RUN = """
import train_pretrain, train_vq
train_vq.main({vq})
train_pretrain.main({pretrain})
"""


def run_twice(train_root, tmp_path) -> list:
    dataset, text = tiny_inputs(train_root)
    steps = ["--max_steps", "3", "--num_workers", "2"]
    results = []
    for hash_seed in ("1", "2"):
        out = tmp_path / f"run{hash_seed}"
        code = RUN.format(
            vq=repr(vq_args(dataset, text, out / "vq", *steps)),
            pretrain=repr(pretrain_args(out / "vq" / "last.pt", dataset, text, out / "lm",
                                        *steps, "--text_batch_size", "1")))
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-c", code],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        results.append(out)
    return results


def losses(path):
    return [{k: v for k, v in json.loads(line).items() if k != "time"}
            for line in path.read_text().splitlines()]


def test_two_runs_with_one_seed_are_bit_identical(train_root, tmp_path):
    a, b = run_twice(train_root, tmp_path)
    for stage in ("vq", "lm"):
        first = torch.load(a / stage / "last.pt", weights_only=True)
        second = torch.load(b / stage / "last.pt", weights_only=True)
        assert first["iter_num"] == 3
        for key in ("model", "optimizer", "rng"):
            assert_same(first[key], second[key], f"{stage}.{key}")
        assert losses(a / stage / "metrics.jsonl") == losses(b / stage / "metrics.jsonl")
