"""--dtype auto resolves to bf16 exactly where bf16 is native (the detection mocked both ways),
fp32 elsewhere; explicit choices are kept; the detection reads PyTorch's oneDNN report."""
import pytest
import torch

import utils
from model import precision

CPU = torch.device("cpu")


@pytest.fixture(params=[True, False], ids=["native-bf16", "no-bf16"])
def native(request, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: request.param)
    return request.param


def test_auto_is_bf16_exactly_where_the_cpu_multiplies_it(native):
    expected = torch.bfloat16 if native else None
    assert utils.resolve_amp_dtype("auto", CPU) == expected
    assert utils.resolve_amp_dtype(None, CPU) == expected
    runtime = utils.setup_runtime(device="cpu", dtype="auto")
    assert runtime.amp_dtype == expected
    assert runtime.dtype_name == ("bfloat16" if native else "float32")
    with runtime.autocast():
        product = torch.mm(torch.ones(2, 2), torch.ones(2, 2))
    assert product.dtype == (torch.bfloat16 if native else torch.float32)
    assert not runtime.needs_grad_scaler          # bf16 and fp32 need no loss scaling
    assert precision.resolve_inference_dtype("auto", CPU) == (
        torch.bfloat16 if native else torch.float32)


def test_explicit_choices_do_not_depend_on_the_detection(native):
    assert utils.resolve_amp_dtype("float32", CPU) is None
    assert utils.resolve_amp_dtype("bfloat16", CPU) == torch.bfloat16
    assert precision.resolve_inference_dtype("float32", CPU) == torch.float32
    assert precision.resolve_inference_dtype("bfloat16", CPU) == torch.bfloat16
    with pytest.raises(ValueError, match="--dtype"):
        precision.resolve_inference_dtype("int4", CPU)


def test_training_keeps_fp32_master_weights_under_bf16_autocast(native):
    runtime = utils.setup_runtime(device="cpu", dtype="auto")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with runtime.autocast():
        loss = model(torch.randn(16, 4)).float().pow(2).mean()
    loss.backward()
    optimizer.step()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(v.dtype == torch.float32 for state in optimizer.state.values()
               for v in state.values() if torch.is_tensor(v) and v.dim() > 0)


@pytest.mark.parametrize("flags, native", [
    ({"architecture": "x86_64", "avx512_bf16": True, "amx_bf16": False}, True),
    ({"architecture": "x86_64", "avx512_bf16": False, "amx_bf16": True}, True),
    ({"architecture": "x86_64", "avx512_bf16": False, "amx_bf16": False}, False),   # emulated
    ({"architecture": "aarch64"}, True),    # oneDNN's own check is the BF16 extension there
])
def test_detection_reads_onednn_and_the_matrix_unit_flags(monkeypatch, flags, native):
    monkeypatch.delenv(precision.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags, raising=False)

    class OneDNN:
        @staticmethod
        def _is_mkldnn_bf16_supported():
            return True
    monkeypatch.setattr(torch.ops, "mkldnn", OneDNN)
    assert precision.cpu_has_native_bf16() is native
    OneDNN._is_mkldnn_bf16_supported = staticmethod(lambda: False)
    assert precision.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert precision.cpu_has_native_bf16() is False


def test_environment_overrides_the_detection(monkeypatch):
    monkeypatch.setenv(precision.CPU_BF16_ENV, "1")
    assert precision.cpu_has_native_bf16()
    monkeypatch.setenv(precision.CPU_BF16_ENV, "0")
    assert not precision.cpu_has_native_bf16()
