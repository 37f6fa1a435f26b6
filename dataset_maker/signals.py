"""Reading one recording: open it with MNE, pick and check its channels, band-pass, notch,
resample to 200 Hz, cut windows. `load_eeg` returns the signal with what was done to it
(`Eeg.provenance`, which the shard store keeps with every window)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

import dataset

TARGET_SFREQ = dataset.SAMPLING_RATE
BAND_HZ = (0.1, 75.0)  # the band-pass of the paper's preprocessing
FLAT_STD_VOLTS = 1e-9  # a channel with less than 0.001 uV of variation carries no EEG
EDF_HEADER_BYTES = 256
EDF_SIGNAL_HEADER_BYTES = 256


class BadRecording(Exception):
    """A recording that is skipped; the message is its reason in errors.tsv."""


@dataclass(frozen=True)
class SignalSpec:
    """How a dataset's recordings are read: which channels, which mains, which rate to expect."""

    # normalised names in output order; None = every vocabulary channel present
    channels: tuple[str, ...] | None
    mains_hz: float
    expected_sfreq: float | None = None
    cnt_format: str = "auto"
    band_hz: tuple[float, float] = BAND_HZ   # band-pass; prepare_custom.py --band changes it


@dataclass
class Eeg:
    data: np.ndarray  # (C, T) float64 microvolts at 200 Hz
    ch_names: list[str]
    raw_ch_names: list[str]
    source_sfreq: float
    left_out: list = field(default_factory=list)  # [(raw name, why)] of channels not kept
    # what was done to it: source_file, source_sfreq, band_low_hz, band_high_hz, notch_hz
    provenance: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.data.shape[1] / TARGET_SFREQ



def normalise_channel_name(name: str) -> str:
    """'EEG Fp1-REF' -> 'FP1'; 'EEG C3-M2' -> 'C3'; vocabulary spellings kept ('FTT9h'); through
    the one normaliser, dataset.normalise_channel. A name it cannot place comes back cleaned
    ('EEG EKG1-REF' -> 'EKG1')."""
    return dataset.normalise_channel(name) or dataset.clean_channel_name(name)


def read_raw(path: Path, cnt_format: str = "auto"):
    """Open a recording with MNE (data loaded): EDF/BDF/CNT by their readers, any other format
    through mne.io.read_raw."""
    import mne

    suffix = path.suffix.lower()
    try:
        if suffix == ".edf":
            return mne.io.read_raw_edf(path, preload=True, verbose="ERROR")
        if suffix == ".bdf":
            return mne.io.read_raw_bdf(path, preload=True, verbose="ERROR")
        if suffix == ".cnt":
            return _read_cnt(path, cnt_format)
        # BrainVision .vhdr, FIF, EEGLAB .set, ...: whatever MNE's generic reader knows
        return mne.io.read_raw(path, preload=True, verbose="ERROR")
    except BadRecording:
        raise
    except Exception as error:  # MNE raises many types for damaged files
        if "unsupported file" in str(error).lower():
            raise BadRecording(f"unsupported file type {suffix!r} (not a format MNE reads)") \
                from error
        raise BadRecording(f"unreadable: {type(error).__name__}: {error}") from error


def _read_cnt(path: Path, cnt_format: str):
    """CNT headers often do not say 16 or 32 bit: MNE's 'auto' fails on many files, and a wrong
    explicit format reads without error but gives noise, so keep the format whose signal is
    smoothest (EEG is strongly autocorrelated, mis-decoded bytes are not)."""
    import mne

    read = partial(mne.io.read_raw_cnt, path, preload=True, verbose="ERROR")
    if cnt_format != "auto":
        return read(data_format=cnt_format)
    try:
        return read(data_format="auto")
    except Exception:
        pass
    candidates = []
    for data_format in ("int32", "int16"):
        try:
            raw = read(data_format=data_format)
        except Exception:
            continue
        candidates.append((_roughness(raw.get_data()), data_format, raw))
    if not candidates:
        raise BadRecording("unreadable CNT with data_format auto, int32 and int16")
    return min(candidates, key=lambda c: c[0])[2]


def _roughness(data: np.ndarray) -> float:
    std = data.std(axis=1)
    keep = std > 0
    if not keep.any():
        return float("inf")
    step = np.abs(np.diff(data[keep], axis=1)).mean(axis=1)
    return float(np.median(step / std[keep]))


def channel_sample_rates(raw) -> list[float] | None:
    """Per-channel rates from the EDF/BDF header, where MNE keeps them (it resamples mixed
    rates)."""
    extras = (getattr(raw, "_raw_extras", None) or [None])[0] or {}
    n_samps, record = extras.get("n_samps"), extras.get("record_length")
    if n_samps is None or record is None:
        return None
    duration = record[0] if np.ndim(record) else record
    return [float(n) / float(duration) for n in np.asarray(n_samps).tolist()] if duration else None


def _edf_field(header: bytes, start: int, width: int, count: int) -> list[str]:
    return [header[start + i * width: start + (i + 1) * width].decode("latin-1").strip()
            for i in range(count)]


def check_edf_header(path: Path) -> set[str]:
    """What MNE reads without complaint (its warnings are silenced) but must not pass: a file
    shorter than its header promises (truncated) -> BadRecording. Returns the labels of signals
    whose digital minimum equals their digital maximum (scaling undefined)."""
    bytes_per_sample = 3 if path.suffix.lower() == ".bdf" else 2
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(EDF_HEADER_BYTES)
        try:
            n_signals = int(head[252:256].decode("latin-1").strip())
            header_bytes = int(head[184:192].decode("latin-1").strip())
            n_records = int(head[236:244].decode("latin-1").strip())
        except ValueError:
            return set()  # MNE's reader names what is wrong with such a header
        signals = f.read(n_signals * EDF_SIGNAL_HEADER_BYTES)
    if len(signals) < n_signals * EDF_SIGNAL_HEADER_BYTES:
        raise BadRecording(f"truncated: {size} bytes, shorter than its own header")
    labels = _edf_field(signals, 0, 16, n_signals)
    offset = n_signals * (16 + 80 + 8 + 8 + 8)
    digital_min = _edf_field(signals, offset, 8, n_signals)
    digital_max = _edf_field(signals, offset + 8 * n_signals, 8, n_signals)
    n_samples = _edf_field(signals, offset + 16 * n_signals + 80 * n_signals, 8, n_signals)
    try:
        record_bytes = sum(int(n) for n in n_samples) * bytes_per_sample
    except ValueError:
        return set()
    if n_records > 0 and record_bytes > 0:
        expected = header_bytes + n_records * record_bytes
        if size < expected:
            raise BadRecording(f"truncated: {size} bytes, the header promises {expected} "
                               f"({n_records} records of {record_bytes} bytes)")
    return {label for label, low, high in zip(labels, digital_min, digital_max) if low == high}


def load_eeg(path, spec: SignalSpec) -> Eeg:
    """Read, pick, check, band-pass, notch, resample to 200 Hz; microvolts. Raises BadRecording."""
    path = Path(path)
    undefined_scaling = set()
    if path.suffix.lower() in (".edf", ".bdf") and path.is_file():
        undefined_scaling = check_edf_header(path)
    raw = read_raw(path, spec.cnt_format)
    raw_names = list(raw.ch_names)
    picks, names, left_out = _pick_channels(raw_names, spec.channels)
    unscaled = [raw_names[i] for i in picks if raw_names[i] in undefined_scaling]
    if unscaled:
        raise BadRecording(f"undefined scaling (digital minimum = maximum) in channels: "
                           f"{', '.join(unscaled)}")
    _check_sampling_rate(raw, picks, spec.expected_sfreq)
    raw.pick(picks)
    raw.rename_channels(dict(zip([raw_names[i] for i in picks], names)))
    raw.set_channel_types({n: "eeg" for n in names}, on_unit_change="ignore", verbose="ERROR")
    _check_values(raw.get_data(), names)
    nyquist = raw.info["sfreq"] / 2
    low, high = spec.band_hz
    raw.filter(l_freq=low or None, h_freq=high if high < nyquist else None, verbose="ERROR")
    if spec.mains_hz < nyquist:
        raw.notch_filter(spec.mains_hz, verbose="ERROR")
    provenance = {"source_file": str(path), "source_sfreq": float(raw.info["sfreq"]),
                  "band_low_hz": low, "band_high_hz": high if high < nyquist else None,
                  "notch_hz": spec.mains_hz if spec.mains_hz < nyquist else None}
    if raw.info["sfreq"] != TARGET_SFREQ:
        raw.resample(TARGET_SFREQ, verbose="ERROR")
    data = raw.get_data(units="uV")
    return Eeg(data=data, ch_names=names, raw_ch_names=raw_names,
               source_sfreq=float(raw.info["sfreq"]), left_out=left_out, provenance=provenance)


def _pick_channels(raw_names, wanted):
    picks, names, left_out, missing = dataset.match_channels(raw_names, wanted)
    if missing:
        raise BadRecording(f"missing channels: {', '.join(missing)}")
    if not picks:
        names = [raw for raw, _ in left_out]
        listed = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
        raise BadRecording(f"missing channels: no channel of the vocabulary found among {listed}")
    return picks, names, left_out


def _check_sampling_rate(raw, picks, expected):
    rates = channel_sample_rates(raw)
    if rates is not None:
        picked = {round(rates[i], 6) for i in picks}
        if len(picked) > 1:
            raise BadRecording(f"sampling-rate mismatch: channels sampled at {sorted(picked)} Hz")
        if picked and abs(picked.pop() - raw.info["sfreq"]) > 1e-6:
            raise BadRecording(f"sampling-rate mismatch: header says {raw.info['sfreq']} Hz")
    if expected is not None and abs(raw.info["sfreq"] - expected) > 1e-6:
        raise BadRecording(f"sampling-rate mismatch: {raw.info['sfreq']:g} Hz, "
                           f"expected {expected:g} Hz")


def _check_values(data, names):
    finite = np.isfinite(data)
    if not finite.all():
        bad = [names[i] for i in np.where(~finite.all(axis=1))[0]]
        raise BadRecording(f"NaN/Inf values in channels: {', '.join(bad)}")
    flat = [names[i] for i in np.where(data.std(axis=1) < FLAT_STD_VOLTS)[0]]
    if flat:
        raise BadRecording(f"flat channels: {', '.join(flat)}")


def windows(data: np.ndarray, seconds: float, stride_seconds: float | None = None, start: int = 0,
            stop: int | None = None) -> list[np.ndarray]:
    """Cut float32 windows of `seconds` (every `stride_seconds`) from samples [start, stop)."""
    length = int(round(seconds * TARGET_SFREQ))
    stride = int(round((stride_seconds or seconds) * TARGET_SFREQ))
    stop = data.shape[1] if stop is None else min(stop, data.shape[1])
    return [
        np.ascontiguousarray(data[:, s : s + length], dtype=np.float32)
        for s in range(max(start, 0), stop - length + 1, stride)
    ]


def require_duration(eeg: Eeg, seconds: float):
    if eeg.seconds < seconds:
        raise BadRecording(f"too short: {eeg.seconds:.1f} s, one window needs {seconds:g} s")
