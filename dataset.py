"""EEG samples -> tokens: channel vocabulary, safe sample loading, patching, padding, PickleLoader.

A sample file holds one window {"X": (C, T) microvolts, "ch_names": [...], "y": int}. The model
sees it as C * (T // 200) tokens, one per channel-second, in time-major order (spec section 2).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

PATCH_SIZE = 200  # samples per token: 1 s at SAMPLING_RATE
SAMPLING_RATE = 200
N_FREQ_BINS = 100  # first FFT amplitude bins kept as the frequency target (spec section 3)
SIGNAL_SCALE = 100.0  # microvolts are divided by this before patching (spec section 2)

# Index = position: the public checkpoints' channel embeddings depend on this exact order
# (spec section 2, 139 names).
CHANNEL_VOCAB: list[str] = """
FP1 FPZ FP2 AF9 AF7 AF5 AF3 AF1 AFZ AF2 AF4 AF6 AF8 AF10 F9 F7 F5 F3 F1 FZ F2 F4 F6 F8 F10
FT9 FT7 FC5 FC3 FC1 FCZ FC2 FC4 FC6 FT8 FT10 T9 T7 C5 C3 C1 CZ C2 C4 C6 T8 T10 TP9 TP7 CP5
CP3 CP1 CPZ CP2 CP4 CP6 TP8 TP10 P9 P7 P5 P3 P1 PZ P2 P4 P6 P8 P10 PO9 PO7 PO5 PO3 PO1 POZ
PO2 PO4 PO6 PO8 PO10 O1 OZ O2 O9 CB1 CB2 IZ O10 T3 T5 T4 T6 M1 M2 A1 A2 CFC1 CFC2 CFC3 CFC4
CFC5 CFC6 CFC7 CFC8 CCP1 CCP2 CCP3 CCP4 CCP5 CCP6 CCP7 CCP8 T1 T2 FTT9h TTP7h TPP9h FTT10h
TPP8h TPP10h FP1-F7 F7-T7 T7-P7 P7-O1 FP2-F8 F8-T8 T8-P8 P8-O2 FP1-F3 F3-C3 C3-P3 P3-O1
FP2-F4 F4-C4 C4-P4 P4-O2 pad I1 I2
""".split()
assert len(CHANNEL_VOCAB) == 139

PAD_CHANNEL = "pad"

# Channel order of the public code's TUAB/TUEV/TUSL files, which carry no "ch_names" (spec section 1).
LEGACY_TUH_CHANNELS: list[str] = (
    "FP1 FP2 F3 F4 C3 C4 P3 P4 O1 O2 F7 F8 T3 T4 T5 T6 A1 A2 FZ CZ PZ T1 T2".split()
)

_INDEX = {name: i for i, name in enumerate(CHANNEL_VOCAB)}
_INDEX_UPPER = {name.upper(): i for i, name in enumerate(CHANNEL_VOCAB)}


def channel_index(name: str) -> int:
    """Position of a channel name in CHANNEL_VOCAB (case-insensitive: FTT9H == FTT9h)."""
    if name in _INDEX:
        return _INDEX[name]
    index = _INDEX_UPPER.get(name.upper())
    if index is None:
        raise ValueError(f"unknown EEG channel {name!r}: not in the 139-name channel vocabulary")
    return index


def vocab_spelling(name: str) -> str | None:
    """The vocabulary's own spelling of a channel name, or None when it is not in the vocabulary."""
    index = _INDEX_UPPER.get(name.upper())
    return None if index is None else CHANNEL_VOCAB[index]


# ----------------------------------------------------------------------------- safe unpickling


class UnsafePickleError(pickle.UnpicklingError):
    """A sample file asked to import something other than plain data."""


# What numpy arrays and scalars need to be rebuilt (numpy 1.x and 2.x module names, all protocols).
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles store array bytes as latin-1 text
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        if module == "numpy" and name.endswith("DType"):  # numpy 2 dtype classes, e.g. Float32DType
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self._source}: refused to load global '{module}.{name}'; sample files may only hold "
            "numpy arrays, numbers, strings, lists, tuples and dicts"
        )


def safe_load_pickle(path):
    """Unpickle a file allowing only plain data and numpy arrays; never runs code from the file.

    Unpickles straight from the open file: reading it into memory first costs a copy of the
    whole sample and its page faults (about 7x the time of the load itself)."""
    with open(path, "rb") as file:
        return _RestrictedUnpickler(file, str(path)).load()


# ----------------------------------------------------------------------------- samples


def load_sample(path) -> dict:
    """Read one sample file, ours or the public code's, as {"X": float32 (C, T), "ch_names", "y"}."""
    raw = safe_load_pickle(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a dict sample, got {type(raw).__name__}")
    if "X" in raw:
        signal, label = raw["X"], raw.get("y")
    elif "signal" in raw:  # public TUEV files: 1-based labels
        signal = raw["signal"]
        label = None if raw.get("label") is None else _as_int(raw["label"], path) - 1
    else:
        raise ValueError(f"{path}: sample has neither 'X' nor 'signal' (keys: {sorted(raw)})")
    X = np.asarray(signal, dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{path}: signal must be 2-D (channels, time), got shape {X.shape}")
    ch_names = [str(c) for c in raw.get("ch_names", LEGACY_TUH_CHANNELS)]
    if len(ch_names) != X.shape[0]:
        raise ValueError(f"{path}: {X.shape[0]} signal rows but {len(ch_names)} channel names")
    return {"X": X, "ch_names": ch_names, "y": None if label is None else _as_int(label, path)}


def _as_int(value, path) -> int:
    array = np.asarray(value).reshape(-1)
    if array.size != 1:
        raise ValueError(f"{path}: label must be a single number, got {value!r}")
    return int(array[0])


def eeg_tokens(X, ch_names, max_tokens: int) -> dict:
    """Patch a (C, T) microvolt window into padded time-major tokens (spec section 2)."""
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    n_channels = X.shape[0]
    if n_channels > max_tokens:
        raise ValueError(f"{n_channels} channels do not fit in {max_tokens} tokens (one second each)")
    # Whole seconds only: a partial trailing second or seconds beyond the block are dropped.
    n_seconds = min(X.shape[1] // PATCH_SIZE, max_tokens // n_channels)
    n_real = n_seconds * n_channels
    patches = (X[:, : n_seconds * PATCH_SIZE] / SIGNAL_SCALE).reshape(n_channels, n_seconds, PATCH_SIZE)
    chans = torch.tensor([channel_index(c) for c in ch_names], dtype=torch.long)

    x = torch.zeros(max_tokens, PATCH_SIZE)
    x[:n_real] = patches.transpose(0, 1).reshape(n_real, PATCH_SIZE)  # token a*C + c
    input_chans = torch.full((max_tokens,), channel_index(PAD_CHANNEL), dtype=torch.long)
    input_chans[:n_real] = chans.repeat(n_seconds)
    input_time = torch.zeros(max_tokens, dtype=torch.long)
    input_time[:n_real] = torch.arange(n_seconds).repeat_interleave(n_channels)
    input_mask = torch.zeros(max_tokens, dtype=torch.bool)
    input_mask[:n_real] = True
    return {"x": x, "input_chans": input_chans, "input_time": input_time, "input_mask": input_mask}


def _standardise(values: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(v - mean) / std over all rows and columns of one sample's real tokens.

    std is the sample standard deviation (n - 1), as the public code's torch.std. weights (one
    per column) count a column that many times in the mean and std (mirrored FFT bins)."""
    if values.numel() == 0:
        return values
    if weights is None:
        mean, std = values.mean(), values.std()
    else:
        n = values.shape[0] * weights.sum()
        mean = (values * weights).sum() / n
        std = (((values - mean) ** 2 * weights).sum() / (n - 1)).sqrt()
    return (values - mean) / (std if std > 0 else 1.0)


def _full_fft_bin_counts(patch_size: int) -> torch.Tensor:
    """How often each rfft bin occurs in the full FFT of a real patch (its mirror images)."""
    counts = torch.full((patch_size // 2 + 1,), 2.0)
    counts[0] = 1.0
    if patch_size % 2 == 0:
        counts[-1] = 1.0  # the Nyquist bin has no mirror
    return counts


def reconstruction_targets(tokens: dict) -> dict:
    """Standardised FFT-amplitude and raw-patch targets of the tokenizer (spec section 3);
    padded rows stay zero. eeg_tokens puts the real tokens first, so they are a prefix.

    The frequency target is the public one: the full FFT amplitude (all P bins) standardised
    over all its bins, then its first 100 bins kept. A real patch's full spectrum is its rfft
    plus mirror images, so the rfft with mirror counts gives the same mean and std."""
    x, n_real = tokens["x"], int(tokens["input_mask"].sum())
    amplitude = torch.fft.rfft(x[:n_real], dim=-1).abs()                  # (n_real, P/2 + 1)
    standardised = _standardise(amplitude, _full_fft_bin_counts(x.shape[1]))
    y_freq = torch.zeros(x.shape[0], N_FREQ_BINS)
    y_freq[:n_real] = standardised[:, :N_FREQ_BINS]
    y_raw = torch.zeros_like(x)
    y_raw[:n_real] = _standardise(x[:n_real])
    return {"y_freq": y_freq, "y_raw": y_raw}


class PickleLoader(Dataset):
    """Sample files -> padded token dicts; with targets=True also the tokenizer's y_freq / y_raw."""

    def __init__(self, files, block_size: int = 1024, targets: bool = True):
        self.files = [Path(f) for f in files]
        self.block_size = block_size
        self.targets = targets

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        sample = load_sample(self.files[index])
        item = eeg_tokens(sample["X"], sample["ch_names"], self.block_size)
        if self.targets:
            item.update(reconstruction_targets(item))
        return item
