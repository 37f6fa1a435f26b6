"""EEG samples -> tokens: channel vocabulary, safe sample loading, patching, padding, PickleLoader.

A sample file holds one window {"X": (C, T) microvolts, "ch_names": [...], "y": int}. The model
sees it as C * (T // 200) tokens, one per channel-second, in time-major order (spec section 2).
"""

from __future__ import annotations

import os
import pickle
import re
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

# Channel order of the public code's TUAB/TUEV/TUSL files, which carry no "ch_names"
# (spec section 1).
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


# ----------------------------------------------------------------------------- channel names

# How recordings spell channels, one row per convention: (source, pattern, replacement), applied
# in order to the stripped, upper-cased name. A name that then matches the vocabulary (directly,
# as a bipolar pair it holds, or by its active electrode) is that entry; anything else is left
# out with a reason, never failing a recording by itself.
CHANNEL_NAME_RULES: tuple[tuple[str, str, str], ...] = (
    ("EDF+ signal-type prefix (TUH 'EEG FP1-REF', EEGMAT 'EEG Fp1', 'EEG:Fp1', 'EEG_Fp1')",
     r"^EEG[\s:_-]*", ""),
    ("BCI2000 / PhysioNet EEGMMIDB trailing and embedded dots ('Fc5.', 'C3..', 'F.z')",
     r"\.", ""),
    ("spaces around a derivation's dash ('Fp1 - F7')", r"\s*-\s*", "-"),
    ("reference suffixes: TUH '-REF' / '-LE', average '-AVG' / '-AV' / '-AR' / '-CAR', "
     "linked ears '-LER' / '-AA'", r"-(REF|LE|LER|AA|AVG|AV|AR|CAR)$", ""),
)

# Old and new 10-20 names of one position (Acharya et al. 2016, ACNS guideline 2): both spellings
# land on the old one, the spelling of the TUH pretraining corpus whose embeddings carry the most
# training. The vocabulary keeps both rows because the public checkpoints have both.
TEN_TWENTY_ALIASES: dict[str, str] = {"T7": "T3", "T8": "T4", "P7": "T5", "P8": "T6"}

# Ear and mastoid references: 'C3-M2' (HMC), 'T3-A1' are named by their active electrode; a
# derivation between two of them ('EEG A2-A1' in EEGMAT) is not a scalp channel.
REFERENCE_ELECTRODES = frozenset({"A1", "A2", "M1", "M2"})

# Signal-type prefixes of channels that are not EEG (EDF+ convention, Sleep-EDF, EEGMAT).
NON_EEG_PREFIXES = ("ECG", "EKG", "EOG", "EMG", "RESP", "TEMP", "EVENT", "SPO2", "PULSE",
                    "PHOTIC", "IBI", "BURSTS", "SUPPR", "STATUS", "TRIGGER")


def clean_channel_name(name: str) -> str:
    """A channel name after the CHANNEL_NAME_RULES, upper case: 'EEG Fc5.-REF' -> 'FC5'."""
    cleaned = name.strip().upper()
    for _, pattern, replacement in CHANNEL_NAME_RULES:
        cleaned = re.sub(pattern, replacement, cleaned)
    return cleaned


def _canonical(electrode: str) -> str:
    return TEN_TWENTY_ALIASES.get(electrode, electrode)


# Bipolar pairs of the vocabulary keyed by their canonical electrodes: 'T3-T5' finds 'T7-P7'.
_VOCAB_PAIRS = {tuple(_canonical(p) for p in name.upper().split("-")): name
                for name in CHANNEL_VOCAB if "-" in name}


def explain_channel(name: str) -> tuple[str | None, str]:
    """(vocabulary entry or None, why): how a recording's channel name is read."""
    cleaned = clean_channel_name(name)
    if not cleaned:
        return None, "empty name"
    if cleaned.startswith(NON_EEG_PREFIXES):
        return None, "not an EEG channel"
    parts = cleaned.split("-")
    if len(parts) == 1:
        entry = vocab_spelling(_canonical(cleaned))
        if entry is None or entry == PAD_CHANNEL:
            return None, "not in the 139-name channel vocabulary"
        return entry, "vocabulary name" if entry.upper() == cleaned else f"10-20 alias of {entry}"
    if len(parts) != 2 or not all(parts):
        return None, "not in the 139-name channel vocabulary"
    active, reference = (_canonical(p) for p in parts)
    if (active, reference) in _VOCAB_PAIRS:
        return _VOCAB_PAIRS[(active, reference)], "bipolar pair of the vocabulary"
    if active in REFERENCE_ELECTRODES and reference in REFERENCE_ELECTRODES:
        return None, "a derivation between two reference electrodes"
    entry = vocab_spelling(active)
    if entry is None or entry == PAD_CHANNEL:
        return None, "its active electrode is not in the 139-name channel vocabulary"
    # 'C3-M2' (HMC), 'Fpz-Cz' (Sleep-EDF): a derivation is named by its active electrode, as the
    # public code names HMC's F4-M1 F4.
    return entry, f"derivation named by its active electrode {entry}"


def normalise_channel(name: str) -> str | None:
    """The vocabulary entry a recording's channel name stands for, or None (explain_channel says
    why): 'EEG Fp1-REF' -> 'FP1', 'Fc5.' -> 'FC5', 'T7' and 'T3' -> 'T3', 'EEG C3-M2' -> 'C3',
    'T3-T5' -> 'T7-P7'."""
    return explain_channel(name)[0]


def match_channels(raw_names, wanted=None):
    """Which of a recording's channels to keep: (indices into raw_names, vocabulary names, left
    out as [(raw name, reason)], missing wanted names).

    wanted None: every channel the vocabulary knows, in file order, the first of duplicates.
    Otherwise the wanted names in their order (matched through normalise_channel, so a task's
    'T3' finds a recording's 'T7..'), spelled as wanted."""
    first, left_out = {}, []
    for i, raw in enumerate(raw_names):
        entry, why = explain_channel(raw)
        if entry is None:
            left_out.append((raw, why))
        elif entry in first:
            left_out.append((raw, f"duplicate of {raw_names[first[entry]]!r} ({entry})"))
        else:
            first[entry] = i
    if wanted is None:
        picks = sorted(first.values())
        names = [normalise_channel(raw_names[i]) for i in picks]
        return picks, names, left_out, []
    picks, names, missing = [], [], []
    for name in wanted:
        entry = normalise_channel(name)
        if entry in first:
            picks.append(first[entry])
            names.append(name)
        else:
            missing.append(name)
    kept = set(picks)
    left_out += [(raw_names[i], "not a channel of the task") for i in sorted(first.values())
                 if i not in kept]
    return picks, names, left_out, missing


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

SAMPLE_SUFFIX = ".pkl"


def sample_files(dirs_or_files, split: str | None = None) -> list[Path]:
    """The sample files (*.pkl) of one folder or of each item of a list, each folder's sorted by
    name, in the order given. With `split`, a folder's `<folder>/<split>/` is read; a list item
    ending in .pkl is one sample file. A missing folder or file, or a folder without sample
    files, raises FileNotFoundError naming it."""
    single = isinstance(dirs_or_files, (str, os.PathLike))
    files = []
    for item in map(Path, [dirs_or_files] if single else dirs_or_files):
        if item.suffix == SAMPLE_SUFFIX or item.is_file():
            if not item.is_file():
                raise FileNotFoundError(f"{item}: no such sample file")
            files.append(item)
            continue
        folder = item if split is None else item / split
        hint = "write them with a dataset_maker/prepare_*.py script" + (
            "" if split is None else f" (--out_dir {item})")
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a folder of sample files (*{SAMPLE_SUFFIX}); "
                                    f"{hint}")
        found = sorted(folder.glob(f"*{SAMPLE_SUFFIX}"))
        if not found:
            raise FileNotFoundError(f"{folder} holds no sample files (*{SAMPLE_SUFFIX}); {hint}")
        files += found
    return files


# Where a window comes from, in our sample files (dataset_maker.common.write_sample); the public
# code's files and older ones lack them: None.
SAMPLE_META = {"recording": str, "subject": str, "window": int, "onset_s": float}

# Larger than any EEG in microvolts (0.1 V): a file holding such values was scaled wrongly
# (an EDF with undefined scaling gives ~1e6) and would make the model answer gibberish.
MAX_ABS_MICROVOLTS = 1e5


class SampleFileError(ValueError):
    """A sample file that cannot be used (unreadable, truncated, wrong shape or label, too
    short, NaN/Inf or absurd values); the message starts with the file's path."""


def load_sample(path) -> dict:
    """Read one sample file, ours or the public code's, as {"X": float32 (C, T), "ch_names", "y",
    "recording", "subject", "window", "onset_s"} (the last four None when the file lacks them).

    Every problem with the file is a SampleFileError naming it (an UnsafePickleError for a
    refused global; FileNotFoundError when it is missing)."""
    try:
        return _load_sample(path)
    except (SampleFileError, UnsafePickleError, FileNotFoundError):
        raise
    except Exception as error:  # truncated/empty pickles, object arrays, odd label types
        raise SampleFileError(f"{path}: not a usable sample file "
                              f"({type(error).__name__}: {error})") from error


def _load_sample(path) -> dict:
    raw = safe_load_pickle(path)
    if not isinstance(raw, dict):
        raise SampleFileError(f"{path}: expected a dict sample, got {type(raw).__name__}")
    if "X" in raw:
        signal, label = raw["X"], raw.get("y")
    elif "signal" in raw:  # public TUEV files: 1-based labels
        signal = raw["signal"]
        label = None if raw.get("label") is None else _as_int(raw["label"], path) - 1
    else:
        raise SampleFileError(f"{path}: sample has neither 'X' nor 'signal' (keys: {sorted(raw)})")
    X = np.asarray(signal, dtype=np.float32)
    if X.ndim != 2:
        raise SampleFileError(f"{path}: signal must be 2-D (channels, time), got shape {X.shape}")
    if X.shape[1] < PATCH_SIZE:
        raise SampleFileError(f"{path}: {X.shape[1]} time samples, shorter than one second "
                              f"({PATCH_SIZE} samples at {SAMPLING_RATE} Hz)")
    if not np.isfinite(X).all():
        raise SampleFileError(f"{path}: signal holds NaN/Inf values")
    peak = float(np.abs(X).max()) if X.size else 0.0
    if peak > MAX_ABS_MICROVOLTS:
        raise SampleFileError(f"{path}: signal reaches {peak:.3g}, not EEG in microvolts "
                              f"(limit {MAX_ABS_MICROVOLTS:g}); was the recording scaled wrongly?")
    ch_names = [str(c) for c in raw.get("ch_names", LEGACY_TUH_CHANNELS)]
    if len(ch_names) != X.shape[0]:
        raise SampleFileError(f"{path}: {X.shape[0]} signal rows but {len(ch_names)} channel names")
    meta = {key: None if raw.get(key) is None else kind(raw[key])
            for key, kind in SAMPLE_META.items()}
    return {"X": X, "ch_names": ch_names, "y": None if label is None else _as_int(label, path),
            **meta}


def _as_int(value, path) -> int:
    array = np.asarray(value).reshape(-1)
    if array.size != 1 or array.dtype.kind not in "iub" and not (
            array.dtype.kind == "f" and float(array[0]).is_integer()):
        raise SampleFileError(f"{path}: label must be a single whole number, got {value!r}")
    return int(array[0])


def eeg_tokens(X, ch_names, max_tokens: int) -> dict:
    """Patch a (C, T) microvolt window into padded time-major tokens (spec section 2)."""
    X = torch.as_tensor(np.asarray(X, dtype=np.float32))
    n_channels = X.shape[0]
    if n_channels > max_tokens:
        raise ValueError(f"{n_channels} channels do not fit in {max_tokens} tokens "
                         f"(one second each)")
    # Whole seconds only: a partial trailing second or seconds beyond the block are dropped.
    n_seconds = min(X.shape[1] // PATCH_SIZE, max_tokens // n_channels)
    n_real = n_seconds * n_channels
    patches = (X[:, : n_seconds * PATCH_SIZE] / SIGNAL_SCALE).reshape(
        n_channels, n_seconds, PATCH_SIZE)
    chans = torch.tensor([channel_index(c) for c in ch_names], dtype=torch.long)

    x = torch.zeros(max_tokens, PATCH_SIZE)
    x[:n_real] = patches.transpose(0, 1).reshape(n_real, PATCH_SIZE)  # token a*C + c
    input_chans = torch.full((max_tokens,), channel_index(PAD_CHANNEL), dtype=torch.long)
    input_chans[:n_real] = chans.repeat(n_seconds)
    input_time = torch.zeros(max_tokens, dtype=torch.long)
    input_time[:n_real] = torch.arange(n_seconds).repeat_interleave(n_channels)
    input_mask = torch.zeros(max_tokens, dtype=torch.bool)
    input_mask[:n_real] = True
    return {"x_eeg": x, "input_chans": input_chans, "input_time": input_time,
            "input_mask": input_mask}


def _bin_weights(device) -> torch.Tensor:
    """How often each rfft bin occurs in a real patch's full 200-bin spectrum: the DC and
    Nyquist bins once, every other bin twice (its mirror image)."""
    weights = torch.full((PATCH_SIZE // 2 + 1,), 2.0, device=device)
    weights[0] = weights[-1] = 1.0
    return weights


def _standardise_batch(values, weights, rows, count):
    """(v - mean) / std per sample over its real rows (padded rows of `values` are zero), each
    column counted `weights` times; std unbiased (torch.std's n - 1) over `count` values;
    padded rows and empty samples zero. Sums over tokens come first: memory-bound, few passes."""
    mean = (values.sum(1) * weights).sum(-1) / count.clamp(min=1)
    centred = (values - mean[:, None, None]).mul_(rows)
    var = (centred.square().sum(1) * weights).sum(-1) / (count - 1).clamp(min=1)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))   # a flat sample: centred only
    return centred.div_(std[:, None, None])


def reconstruction_targets_batch(x_eeg: torch.Tensor, input_mask: torch.Tensor):
    """The tokenizer's targets (spec section 3) for a batch, on the device of `x_eeg`:
    x_eeg (B, N, 200), input_mask (B, N) -> y_freq (B, N, 100), y_raw (B, N, 200).

    y_freq: the FFT amplitude of each real patch, standardised per sample over all its real
    tokens and all 200 bins of the full spectrum (unbiased std, as the public code's torch.std),
    first 100 bins kept. The full spectrum of a real patch is its rfft plus mirror images, so
    the rfft's 101 bins weighted (1, 2, ..., 2, 1) give the same mean and std. y_raw: the real
    patches standardised per sample over all their samples (unbiased std). Padded rows and a
    sample without real tokens stay zero."""
    rows = input_mask.bool().unsqueeze(-1)
    x = torch.where(rows, x_eeg.float(), 0.0)
    rows = rows.to(x.dtype)
    count = rows.sum((1, 2)) * PATCH_SIZE
    amplitude = torch.fft.rfft(x, dim=-1).abs()
    y_freq = _standardise_batch(amplitude, _bin_weights(x.device), rows, count)
    y_raw = _standardise_batch(x, torch.ones((), device=x.device), rows, count)
    return y_freq[..., :N_FREQ_BINS].contiguous(), y_raw


def reconstruction_targets(tokens: dict) -> dict:
    """`reconstruction_targets_batch` for one item (a batch of one): {"y_freq", "y_raw"}."""
    y_freq, y_raw = reconstruction_targets_batch(tokens["x_eeg"][None], tokens["input_mask"][None])
    return {"y_freq": y_freq[0], "y_raw": y_raw[0]}


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
