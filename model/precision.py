"""Which precision a NeuroLM computes in: what `--dtype auto` means on this machine, and the
inference copy of a model in bf16.

bf16 pays only where the hardware multiplies it natively: CUDA GPUs that support it, and CPUs
with AVX512-BF16 or AMX-BF16 (x86) or the BF16 extension (Arm), as PyTorch's oneDNN backend sees
them. oneDNN also runs bf16 on plain AVX512 CPUs, by conversion and slower than fp32: not native.
NEUROLM_CPU_BF16=0 or 1 overrides the CPU detection (the test suite pins it to 0 so that its
numbers do not depend on the CPU it runs on).

Training keeps fp32 weights and optimizer state and runs its forward passes under autocast
(training/runtime.py). Answering needs no fp32 master copy: `to_inference_precision` holds every
Linear's weight once in bf16 (on CPUs packed for oneDNN, whose bf16 matrix-vector products are
what makes batch-1 decoding faster than fp32) and leaves the rest fp32: the residual stream,
LayerNorm, embeddings, softmaxes. Measured on a trained model (`python -m evaluation agree`),
bf16's error in option probabilities came almost all from one place: the head's logits rounded
to bf16 (1/256 of a logit of ~16 is 0.06 in log-probability); `text_head` therefore returns fp32
logits whose largest values, and the scored tokens' (model_neurolm), are recomputed in fp32.
The second place was the frozen EEG encoder, whose tokens share one large vector: its products
are centered (CenteredLinear), the shared part computed in fp32. int8 (`--dtype int8`, CPUs)
holds the Linears' weights in int8 with per-row scales for PyTorch's dynamic-quantised kernels,
the rest fp32.
"""
from __future__ import annotations

import os
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "int8": torch.qint8}
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
    if dtype == "int8" and device.type != "cpu":
        raise ValueError(f"--dtype int8 runs on CPUs only (PyTorch's dynamic-quantised "
                         f"kernels), not on {device}")
    return INFERENCE_DTYPES[dtype]


# ----------------------------------------------------------------------------------------------
# The inference copy


def onednn_packing_available() -> bool:
    return (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class PackedLinear(nn.Module):
    """An inference-only Linear whose weight is held once in a low precision: bf16 (on a CPU in
    oneDNN's packed layout, what torch.compile's CPU backend does with frozen weights; input
    cast to bf16, output bf16) or int8 (per-row scales, packed for PyTorch's dynamic-quantised
    kernel, which quantises each input on the fly; fp32 in and out). The model around it stays
    fp32 (see to_inference_precision). Row blocks split at `splits` are held apart so that a part
    (the text rows of NeuroLM's head) is computed alone. It has no state_dict: an inference copy
    is never saved."""

    def __init__(self, linear: nn.Linear, splits: tuple[int, ...] = (),
                 dtype: torch.dtype = torch.bfloat16, with_bias: bool = True):
        super().__init__()
        bounds = [0, *splits, linear.out_features]
        blocks = list(zip(bounds[:-1], bounds[1:]))
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.dtype = dtype
        weight = linear.weight.detach()
        bias = None if linear.bias is None or not with_bias else linear.bias.detach()
        self.text_rows = None   # bf16 heads: their text rows unpacked (exact_top_logits)
        if dtype == torch.qint8:
            self.packed = True
            self.parts = [int8_prepack(weight[lo:hi], None if bias is None else bias[lo:hi])
                          for lo, hi in blocks]
            return
        weight = weight.to(torch.bfloat16)
        bias = None if bias is None else bias.to(torch.bfloat16)
        self.packed = weight.device.type == "cpu" and onednn_packing_available()
        self.parts = [weight[lo:hi].contiguous() for lo, hi in blocks]
        if self.packed:
            self.parts = [torch.ops.mkldnn._reorder_linear_weight(w, 1) for w in self.parts]
        self.biases = [None if bias is None else bias[lo:hi].contiguous() for lo, hi in blocks]
        if splits:
            self.text_rows = weight[:bounds[1]].contiguous() if self.packed else self.parts[0]

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        if self.dtype == torch.qint8:
            return torch.ops.quantized.linear_dynamic(x.float(), self.parts[index], False)
        x = x.to(torch.bfloat16)
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.parts[index], self.biases[index],
                                                      "none", [], "")
        return F.linear(x, self.parts[index], self.biases[index])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.part(x, i) for i in range(len(self.parts))]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def extra_repr(self) -> str:
        layout = "packed " if self.packed else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{layout}{str(self.dtype).removeprefix('torch.')}")


class CenteredLinear(nn.Module):
    """An inference-only Linear for inputs whose tokens share one large vector (NeuroLM's EEG
    encoder): the sample's mean input over its tokens, c, goes through the fp32 weight (one row
    per sample) and only x - c through the low-precision PackedLinear. Rounding then scales with
    what tells a sample's tokens apart, not with the vector they share: on the demo's trained
    encoder that cut bf16's error in option probabilities from 0.037 to 0.012 (the encoder
    wholly in fp32: 0.009) at half the fp32 encoder's time. Inputs are (..., tokens, in)."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.weight = linear.weight.detach()   # the fp32 weight itself, not a copy
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.low = PackedLinear(linear, (), dtype, with_bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        center = x.mean(dim=-2, keepdim=True)
        if self.low.dtype == torch.bfloat16:   # subtracted and rounded in one pass
            spread = torch.sub(x, center, out=torch.empty_like(x, dtype=torch.bfloat16))
        else:
            spread = x - center
        # bf16 + fp32 adds into a new fp32 tensor: no separate cast of the product
        return torch.add(self.low(spread), F.linear(center, self.weight, self.bias))

    def extra_repr(self) -> str:
        return f"centered, {self.low.extra_repr()}"


def int8_prepack(weight: torch.Tensor, bias: torch.Tensor | None):
    """Weight (out, in) as int8 with one symmetric scale per output row, prepacked for
    torch.ops.quantized.linear_dynamic (bias stays fp32)."""
    scales = (weight.abs().amax(dim=1).clamp(min=1e-12) / 127).double()
    zero = torch.zeros(weight.shape[0], dtype=torch.long)
    with warnings.catch_warnings():   # PyTorch announces quantised tensors' move to torchao
        warnings.simplefilter("ignore", UserWarning)
        q = torch.quantize_per_channel(weight.float().contiguous(), scales, zero, 0, torch.qint8)
        return torch.ops.quantized.linear_prepack(q, None if bias is None else bias.float())


EXACT_TOP_LOGITS = 64   # largest text logits per position recomputed in fp32 (text_head)


def text_head(head: nn.Module, h: torch.Tensor, n_text: int) -> torch.Tensor:
    """Logits of the first n_text rows of an output head (nn.Linear, or PackedLinear split
    there); the callers read them in fp32 (greedy choice, option log-likelihoods).

    From a bf16 head the logits are fp32, and the EXACT_TOP_LOGITS largest of each position are
    recomputed in fp32 from fp32 h and the bf16 rows: a bf16 product rounds each logit to 1/256
    of its size (0.06 at a logit of 16), and that rounding alone moved a trained model's option
    probabilities by up to 0.06; the largest logits are what a softmax and the greedy choice
    read (the others' share of the softmax is small, their rounding errors average out)."""
    if not isinstance(head, PackedLinear):
        return F.linear(h, head.weight[:n_text])
    logits = head.part(h, 0)
    if head.dtype != torch.bfloat16:
        return logits
    return exact_top_logits(logits, h, head.text_rows, head.biases[0])


def exact_top_logits(logits: torch.Tensor, h: torch.Tensor, rows: torch.Tensor,
                     bias: torch.Tensor | None = None, k: int = EXACT_TOP_LOGITS) -> torch.Tensor:
    """fp32 logits (..., V) of low-precision `logits` = h @ rows.T + bias, the k largest of each
    position recomputed in fp32."""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices                  # (..., k)
    return recompute_logits(logits.float(), h, rows, bias, top)


def recompute_logits(logits: torch.Tensor, h: torch.Tensor, rows: torch.Tensor,
                     bias: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor:
    """fp32 `logits` (..., V) with those at `ids` (..., m) recomputed in fp32 from h (..., C)
    and the head's rows (V, C) (in place)."""
    exact = torch.einsum("...mc,...c->...m", rows[ids].float(), h.float())
    if bias is not None:
        exact += bias[ids].float()
    return logits.scatter_(-1, ids, exact)


def exact_head_logits(head: nn.Module, logits: torch.Tensor, h: torch.Tensor,
                      ids: torch.Tensor) -> torch.Tensor:
    """text_head's fp32 logits with those at `ids` (..., m) (the tokens being scored) recomputed
    too, when `head` is a bf16 PackedLinear; else unchanged."""
    if not isinstance(head, PackedLinear) or head.text_rows is None:
        return logits
    return recompute_logits(logits, h, head.text_rows, head.biases[0],
                            ids.expand(*logits.shape[:-1], ids.shape[-1]))


def to_inference_precision(model: nn.Module, dtype: torch.dtype,
                           head_splits: dict[str, tuple[int, ...]] | None = None,
                           pack: bool = True, keep: tuple[str, ...] = (),
                           centered: tuple[str, ...] = ()) -> nn.Module:
    """An eval-mode model for answering in `dtype`, changed in place once (fp32: unchanged).

    bf16 with `pack`: every nn.Linear but those named in `keep` (left fp32) becomes a
    PackedLinear (head_splits: {module name: row splits}), or a CenteredLinear when named in
    `centered` (inputs whose tokens share one large vector), and nothing else changes: the
    residual stream, LayerNorm, the embeddings and the softmaxes stay fp32 and only the matrix
    products read bf16. That is where bf16's speed is, and rounding the residual stream at every
    layer is where most of its error was. Without `pack` (a Hugging Face LM, whose own code
    casts its norms to fp32) the whole model is cast. int8: the same with int8 PackedLinears.
    Call it last: the packed weights do not move between devices."""
    model.eval()
    if dtype == torch.float32:
        return model
    if not pack or dtype not in (torch.bfloat16, torch.qint8):
        return model.to(dtype)
    splits = head_splits or {}
    linears = [(name, m) for name, m in model.named_modules()
               if type(m) is nn.Linear and name not in keep]
    for name, linear in linears:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, CenteredLinear(linear, dtype) if name in centered
                else PackedLinear(linear, splits.get(name, ()), dtype))
    return model
