"""Which precision a NeuroLM computes in: what `--dtype auto` means on this machine, and the
inference copy of a model in bf16.

bf16 pays only where the hardware multiplies it natively: CUDA GPUs that support it, and CPUs
with AVX512-BF16 or AMX-BF16 (x86) or the BF16 extension (Arm), as PyTorch's oneDNN backend sees
them. oneDNN also runs bf16 on plain AVX512 CPUs, by conversion and slower than fp32: not native.
NEUROLM_CPU_BF16=0 or 1 overrides the CPU detection (the test suite pins it to 0 so that its
numbers do not depend on the CPU it runs on).

Training keeps fp32 weights and optimizer state and runs its forward passes under autocast
(training/runtime.py). Answering needs no fp32 master copy: `to_inference_precision` casts the
model's weights once, and on CPUs packs every Linear's weight for oneDNN, whose bf16
matrix-vector products are what makes batch-1 decoding faster than fp32 (PyTorch's default bf16
path for a single row is slower than its fp32 one). What must stay fp32 does: the option
log-likelihoods and the greedy choice are computed from fp32 logits (model_neurolm), and
LayerNorm's statistics are accumulated in fp32 by PyTorch's bf16 kernels.
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
INFERENCE_DTYPE_CHOICES = ("auto", *INFERENCE_DTYPES)
CPU_BF16_ENV = "NEUROLM_CPU_BF16"


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices in hardware (see the module docstring)."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):    # a build without the check: assume emulation
        return False
    capabilities = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    if capabilities.get("architecture", "x86_64") in ("x86_64", "AMD64", "x86", "i386"):
        # oneDNN's check above is true on any AVX512 CPU; the matrix units are these flags
        return bool(capabilities.get("avx512_bf16") or capabilities.get("amx_bf16"))
    return True    # Arm: oneDNN's check is the BF16 extension itself


def bf16_is_native(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def auto_amp_dtype(device: torch.device) -> torch.dtype | None:
    """Training's `--dtype auto`: bf16 autocast where bf16 is native, fp16 (+ GradScaler) on
    GPUs without bf16, fp32 (None: no autocast) elsewhere."""
    if bf16_is_native(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else None


def resolve_inference_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """`--dtype` of answering (simple_inference, the whole-recording path): "auto" is bf16
    where it is native, else fp32. ValueError for an unknown name."""
    if isinstance(dtype, torch.dtype):
        if dtype not in INFERENCE_DTYPES.values():
            raise ValueError(f"--dtype {dtype} is not one of {', '.join(INFERENCE_DTYPE_CHOICES)}")
        return dtype
    if dtype in (None, "", "auto"):
        return torch.bfloat16 if bf16_is_native(device) else torch.float32
    if dtype not in INFERENCE_DTYPES:
        raise ValueError(f"unknown --dtype {dtype!r}; choose one of "
                         f"{', '.join(INFERENCE_DTYPE_CHOICES)}")
    return INFERENCE_DTYPES[dtype]


# ----------------------------------------------------------------------------------------------
# The inference copy


def onednn_packing_available() -> bool:
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """An inference-only bf16 Linear whose weight is held once, in oneDNN's packed layout (what
    torch.compile's CPU backend does with frozen weights). Row blocks split at `splits` are
    packed apart so that a part (the text rows of NeuroLM's head) is computed alone. It has no
    state_dict: an inference copy is never saved."""

    def __init__(self, linear: nn.Linear, splits: tuple[int, ...] = ()):
        super().__init__()
        weight = linear.weight.detach()
        bounds = [0, *splits, weight.shape[0]]
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.parts = [torch.ops.mkldnn._reorder_linear_weight(weight[lo:hi].contiguous(), 1)
                      for lo, hi in zip(bounds[:-1], bounds[1:])]
        self.biases = [None if linear.bias is None else linear.bias.detach()[lo:hi].contiguous()
                       for lo, hi in zip(bounds[:-1], bounds[1:])]

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.parts[index], self.biases[index],
                                                  "none", [], "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.part(x, i) for i in range(len(self.parts))]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed bf16"


def text_head(head: nn.Module, h: torch.Tensor, n_text: int) -> torch.Tensor:
    """Logits of the first n_text rows of an output head (nn.Linear, or PackedLinear split
    there); the callers read them in fp32 (greedy choice, option log-likelihoods)."""
    if isinstance(head, PackedLinear):
        return head.part(h.to(torch.bfloat16), 0)
    return F.linear(h, head.weight[:n_text])


def to_inference_precision(model: nn.Module, dtype: torch.dtype,
                           head_splits: dict[str, tuple[int, ...]] | None = None,
                           pack: bool = True) -> nn.Module:
    """Cast an eval-mode model's weights to `dtype` once, in place (fp32: unchanged). On a CPU
    in bf16, with `pack`, every nn.Linear becomes a PackedLinear (head_splits: {module name: row
    splits}). Call it last: the packed weights do not move between devices."""
    model.eval()
    if dtype == torch.float32:
        return model
    model.to(dtype)
    device = next(model.parameters()).device
    if (not pack or dtype != torch.bfloat16 or device.type != "cpu"
            or not onednn_packing_available()):
        return model
    splits = head_splits or {}
    linears = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear]
    for name, linear in linears:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, PackedLinear(linear, splits.get(name, ())))
    return model


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a model's inputs are cast to (that of its first floating parameter)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32
