"""Fixtures every test file may ask for by name (pytest finds them here)."""
from pathlib import Path

import pytest
import torch


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
