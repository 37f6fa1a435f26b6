"""Quality control of a window before it is answered: flat, clipped or saturated, dominated by
muscle or line noise, beyond a plausible amplitude, or inside the file's own BAD_* annotations.

Flat and clipped are judged on the file's own samples (a filter smooths a clipped plateau away,
and the notch removes the line noise to be measured); amplitude and muscle on the band-passed
200 Hz window the model reads.
"""
from __future__ import annotations

import numpy as np

QC_MODES = ("flag", "skip")
FLAGS = ("flat", "clipped", "high_amplitude", "muscle", "line_noise", "bad_annotation")

FLAT_PTP_UV = 0.5          # a half second varying less than this records nothing
FLAT_BLOCK_SECONDS = 0.5
FLAT_SHARE = 0.25          # of a channel's half seconds flat: a disconnected electrode
CLIPPED_FRACTION = 0.05    # of a channel's samples held at one value: a clipped rail
HIGH_AMPLITUDE_UV = 500.0  # band-passed scalp EEG past this is movement, electrode pop, volts
MUSCLE_BAND_HZ = (30.0, 75.0)
MUSCLE_FRACTION = 0.6      # of 1-75 Hz power above 30 Hz: EMG, not EEG (EEG's 1/f keeps it low)
LINE_FRACTION = 0.5        # of the file's power within 1 Hz of the mains


def _band_powers(x: np.ndarray, sfreq: float, *bands: tuple[float, float]) -> list[np.ndarray]:
    """(C,) power of each channel in each (low, high) band, from one spectrum."""
    spectrum = np.abs(np.fft.rfft(x - x.mean(axis=1, keepdims=True), axis=1)) ** 2
    freqs = np.fft.rfftfreq(x.shape[1], 1 / sfreq)
    return [spectrum[:, (freqs >= low) & (freqs <= high)].sum(axis=1) for low, high in bands]


def flat_channels(x: np.ndarray, sfreq: float) -> np.ndarray:
    """(C,) whether each channel is flat for FLAT_SHARE of the window's half-second blocks."""
    block = max(1, int(sfreq * FLAT_BLOCK_SECONDS))
    n = x.shape[1] // block
    if n == 0:
        return np.ptp(x, axis=1) < FLAT_PTP_UV
    blocks = x[:, :n * block].reshape(x.shape[0], n, block)
    return (np.ptp(blocks, axis=2) < FLAT_PTP_UV).mean(axis=1) >= FLAT_SHARE


def _rail_fraction(row: np.ndarray) -> float:
    """The share of samples held at one value (repeating the sample before): a converter or
    amplifier rail repeats its limit exactly, while EEG, even quantised, moves on."""
    held = row[1:][row[1:] == row[:-1]]
    if not held.size:
        return 0.0
    return float(np.unique(held, return_counts=True)[1].max()) / row.size


def window_flags(raw_uv: np.ndarray, sfreq: float, model_uv: np.ndarray, mains_hz: float,
                 bad_overlap: bool = False) -> list[str]:
    """The QC flags of one window: raw_uv (C, t) the file's samples, model_uv (C, T) the
    band-passed 200 Hz window; bad_overlap when it meets a BAD_* annotation."""
    flags = []
    flat = flat_channels(raw_uv, sfreq)
    if flat.any():
        flags.append("flat")
    live = raw_uv[~flat]
    if any(_rail_fraction(row) >= CLIPPED_FRACTION for row in live):
        flags.append("clipped")
    if np.abs(model_uv).max() > HIGH_AMPLITUDE_UV:
        flags.append("high_amplitude")
    live_model = model_uv[np.ptp(model_uv, axis=1) >= FLAT_PTP_UV]
    if live_model.shape[0]:
        total, high = _band_powers(live_model, 200.0, (1.0, MUSCLE_BAND_HZ[1]), MUSCLE_BAND_HZ)
        share = np.divide(high, total, out=np.zeros_like(high), where=total > 0)
        if np.median(share) > MUSCLE_FRACTION:
            flags.append("muscle")
    if live.size and mains_hz + 1 < sfreq / 2:
        total, line = _band_powers(live, sfreq, (1.0, sfreq / 2), (mains_hz - 1, mains_hz + 1))
        share = np.divide(line, total, out=np.zeros_like(line), where=total > 0)
        if np.median(share) > LINE_FRACTION:
            flags.append("line_noise")
    if bad_overlap:
        flags.append("bad_annotation")
    return flags


def bad_intervals(annotations) -> np.ndarray:
    """(n, 2) [start, stop) seconds of the annotations whose description starts with BAD
    (MNE's convention for segments to reject, case as MNE matches it: 'bad' too)."""
    keep = [i for i, d in enumerate(annotations.description) if d.upper().startswith("BAD")]
    if not keep:
        return np.zeros((0, 2))
    ann = annotations[keep]
    return np.stack([ann.onset, ann.onset + ann.duration], axis=1)


def overlaps(intervals: np.ndarray, start_s: float, stop_s: float) -> bool:
    """Whether [start_s, stop_s) meets any interval (a zero-length BAD mark inside counts)."""
    if not len(intervals):
        return False
    return bool(((intervals[:, 0] < stop_s) & (intervals[:, 1] >= start_s)
                 & ~((intervals[:, 1] == start_s) & (intervals[:, 1] > intervals[:, 0]))).any())
