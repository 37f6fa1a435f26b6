"""Issue 22, defect 6 and the export's file mode: sizes stored in a checkpoint (model_args,
encoder_args, vq_args) or in an exported config.json are checked before anything is built, and
what `python -m evaluation export` writes is readable by others.

"Before anything is built" is asserted, not timed: the model classes are replaced by spies that
record every construction and the device it happened on; a bad size must fail before any
construction, a shape that does not fit the stored tensors may only have been tried on the meta
device (no memory)."""
from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from inference_fixtures import tiny_neurolm, tiny_vq

import model.checkpoints as checkpoints
from model import CheckpointError, load_neurolm, load_vq, neurolm_checkpoint, vq_checkpoint
from model.export import EXPORT_CONFIG, EXPORT_WEIGHTS, export

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    vq = tiny_vq()
    torch.save(vq_checkpoint(vq), folder / "vq.pt")
    torch.save(neurolm_checkpoint(tiny_neurolm(vq)), folder / "lm.pt")
    export(folder / "lm.pt", folder / "exported")
    return folder


@pytest.fixture
def built(monkeypatch):
    """Devices on which a NeuroLM or VQ_Align was constructed during the test."""
    devices = []

    def spy(cls):
        def construct(*args, **kwargs):
            devices.append(torch.get_default_device().type)
            return cls(*args, **kwargs)
        return construct

    monkeypatch.setattr(checkpoints, "NeuroLM", spy(checkpoints.NeuroLM))
    monkeypatch.setattr(checkpoints, "VQ_Align", spy(checkpoints.VQ_Align))
    return devices


def with_args(saved, tmp_path, key, **changes) -> Path:
    name = "vq.pt" if key in ("encoder_args", "decoder_args", "vq_args") else "lm.pt"
    ckpt = torch.load(saved / name, weights_only=True)
    ckpt[key] = {**ckpt[key], **changes}
    path = tmp_path / f"bad-{name}"
    torch.save(ckpt, path)
    return path


# ----------------------------------------------------------------------------- sizes checked


@pytest.mark.parametrize("changes, message", [
    (dict(n_layer=100000), r"model_args.n_layer = 100000 is out of range"),
    (dict(n_embd=1e6), r"model_args.n_embd = 1000000.0 is not a whole number"),
    (dict(n_embd=10**6), r"model_args.n_embd = 1000000 is out of range"),
    (dict(n_layer=-2), r"model_args.n_layer = -2 is out of range"),
    (dict(n_head=0), r"model_args.n_head = 0 is out of range"),
    (dict(block_size=-5), r"model_args.block_size = -5 is out of range"),
    (dict(n_head=3), r"model_args.n_embd = 32 is not divisible by n_head = 3"),
    (dict(dropout=float("nan")), r"model_args.dropout = nan is not a number"),
    (dict(bias="yes"), r"model_args.bias = 'yes' is not true/false"),
    (dict(gelu_approximate="exact"), r"model_args.gelu_approximate = 'exact' is not one of"),
    (dict(n_layer="1"), r"model_args.n_layer = '1' is not a whole number"),
    (dict(n_layer=500), r"model_args.n_layer = 500, but the weights hold 1 layer"),
])
def test_bad_lm_sizes_fail_before_any_model_is_built(saved, tmp_path, built, changes, message):
    path = with_args(saved, tmp_path, "model_args", **changes)
    with pytest.raises(CheckpointError, match=message) as error:
        load_neurolm(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert built == []


@pytest.mark.parametrize("key, changes, message", [
    ("encoder_args", dict(n_layer=100000), r"encoder_args.n_layer = 100000 is out of range"),
    ("encoder_args", dict(n_layer=7), r"encoder_args.n_layer = 7, but the weights hold 1"),
    ("encoder_args", dict(n_embd=-32), r"encoder_args.n_embd = -32 is out of range"),
    ("encoder_args", dict(out_chans=6), r"encoder_args.out_chans = 6 is not a multiple of 4"),
    ("decoder_args", dict(n_head=5), r"decoder_args.n_embd = 32 is not divisible by n_head"),
    ("vq_args", dict(decay=float("inf")), r"vq_args.decay = inf is not a number"),
])
def test_bad_vq_sizes_fail_before_any_model_is_built(saved, tmp_path, built, key, changes,
                                                     message):
    path = with_args(saved, tmp_path, key, **changes)
    with pytest.raises(CheckpointError, match=message):
        load_vq(path)
    assert built == []


def test_a_state_dict_of_non_tensors_is_refused(saved, tmp_path, built):
    ckpt = torch.load(saved / "lm.pt", weights_only=True)
    ckpt["model"]["GPT2.transformer.wpe.weight"] = 12
    torch.save(ckpt, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"'GPT2.transformer.wpe.weight' is not a tensor"):
        load_neurolm(tmp_path / "odd.pt")
    assert built == []


def test_sizes_that_do_not_fit_the_stored_tensors_are_tried_only_on_meta(saved, tmp_path,
                                                                         built):
    # sane on their own, but 4096 rows x 64 wide is not what the file holds
    path = with_args(saved, tmp_path, "model_args", n_embd=64, block_size=4096)
    with pytest.raises(CheckpointError, match=r"does not fit the model: .*shape mismatches: "
                       r"GPT2.lm_head.weight: checkpoint \(50368, 32\) vs model \(50368, 64\)"
                       ) as error:
        load_neurolm(path)
    assert "\n" not in str(error.value)
    assert built == ["meta"]


def test_good_checkpoints_still_load_and_build_once_for_real(saved, built):
    load_neurolm(saved / "lm.pt")
    load_vq(saved / "vq.pt")
    # a NeuroLM's checkpoint holds every tensor it has: its shape-checked meta build is given
    # storage and filled; the VQ's quantizer has a buffer no checkpoint holds, so it is built
    assert built == ["meta", "meta", "cpu"]


def exported_with(saved, folder: Path, tied=None, **model_args) -> Path:
    """A copy of the saved export whose config.json has these model_args (and tied map)."""
    folder.mkdir(exist_ok=True)
    (folder / EXPORT_WEIGHTS).write_bytes((saved / "exported" / EXPORT_WEIGHTS).read_bytes())
    config = json.loads((saved / "exported" / EXPORT_CONFIG).read_text())
    config["checkpoint"]["model_args"].update(model_args)
    config["tied"] = config["tied"] if tied is None else tied
    (folder / EXPORT_CONFIG).write_text(json.dumps(config))
    return folder


def test_exported_config_is_checked_the_same_way(saved, tmp_path, built):
    with pytest.raises(CheckpointError, match=r"n_layer = 100000 is out of range"):
        load_neurolm(exported_with(saved, tmp_path / "a", n_layer=100000))
    with pytest.raises(CheckpointError, match=r"config.json: tied tensor .* does not hold"):
        load_neurolm(exported_with(saved, tmp_path / "b",
                                   tied={"GPT2.lm_head.weight": "no.such.tensor"}))
    assert built == []


def test_bad_sizes_are_one_line_and_exit_2_in_the_cli(saved, tmp_path):
    folder = exported_with(saved, tmp_path / "exported", n_embd=1e6)
    bad_pt = with_args(saved, tmp_path, "model_args", n_layer=100000)
    for source in (folder, bad_pt):
        result = subprocess.run([sys.executable, "-m", "evaluation", "export", str(source),
                                 str(tmp_path / "out")], cwd=REPO, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert str(source) in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- export file mode


def test_exported_files_are_readable_by_others(saved, tmp_path):
    old = os.umask(0o022)
    try:
        out = export(saved / "lm.pt", tmp_path / "shared", card=lambda config: "# card\n")
    finally:
        os.umask(old)
    for name in (EXPORT_WEIGHTS, EXPORT_CONFIG, "README.md"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]   # no temp file left


def limit_file_size(max_bytes: int):
    """For a child process: writes past max_bytes fail with EFBIG, as on a full disk (ENOSPC)
    they fail with ENOSPC; the signal that would kill the process instead is ignored."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


def test_a_failed_export_write_is_one_line_and_keeps_the_previous_export(saved, tmp_path):
    out = tmp_path / "shared"
    export(saved / "lm.pt", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    result = subprocess.run([sys.executable, "-m", "evaluation", "export", str(saved / "lm.pt"),
                             str(out)], cwd=REPO, capture_output=True, text=True, timeout=120,
                            preexec_fn=limit_file_size(1 << 20))
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "model.safetensors: cannot be written" in result.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before   # no temp file, no tear
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(CheckpointError, match="cannot be made a folder"):
        export(saved / "lm.pt", not_a_folder / "out")
