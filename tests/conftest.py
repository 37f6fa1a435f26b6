"""Fixtures every test file may ask for by name (pytest finds them here), and suite-wide
settings: `--dtype auto` means bf16 on CPUs with bf16 matrix units (model/precision.py), so the
detection is pinned to "no" and every test computes in fp32 on every CPU, subprocesses included
(tests/test_precision.py mocks the detection both ways)."""
import os
from pathlib import Path

import pytest
import torch

from model.precision import CPU_BF16_ENV

os.environ[CPU_BF16_ENV] = "0"


@pytest.fixture(scope="session")
def train_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train")


@pytest.fixture
def single_thread():
    """One intra-op thread: on a shared 2-core machine OpenMP spinning makes tiny models ~10x
    slower with two threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
