"""Signal models for the synthetic default data: EEG-like background, rhythms and transients.

Everything is in microvolts and vectorised with numpy. A recording is rendered as a list of
segments, each with a "state" (RMS amplitude of each rhythm), cross-faded into one another;
transients (spikes, spindles, blinks, muscle bursts, seizures, ...) are added on top.
The shapes and amplitudes follow textbook clinical EEG, exaggerated so that every label of the
downstream tasks is separable by spectrum and topography.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------------------------
# Electrode geometry: 10-10 names -> points on a unit sphere (azimuthal equidistant around CZ).
# --------------------------------------------------------------------------------------------

# Angle (degrees) from CZ along the midline, positive = anterior, for each row prefix, and the
# angle (from the anterior direction) at which that row meets the FPZ-T7-OZ circumference.
_ROWS = {
    "FP": (72, 18), "AF": (54, 36), "F": (36, 54), "FC": (18, 72), "FT": (18, 72),
    "C": (0, 90), "T": (0, 90), "CP": (-18, 108), "TP": (-18, 108), "P": (-36, 126),
    "PO": (-54, 144), "O": (-72, 162), "I": (-90, 180),
}
# Lateral index at which each row reaches the circumference (FP1 and O1 already lie on it).
_EDGE_INDEX = {"FP": 1, "O": 1, "I": 1}
# 10-20 names that the 10-10 system renamed, and electrodes off the 10-10 grid.
_ALIASES = {"T3": "T7", "T4": "T8", "T5": "P7", "T6": "P8", "A1": "TP9", "A2": "TP10",
            "M1": "TP9", "M2": "TP10"}
_POLAR = {"T1": (100.0, -80.0), "T2": (100.0, 80.0), "CB1": (105.0, -155.0),
          "CB2": (105.0, 155.0)}  # (angle from CZ, azimuth from anterior, + = right)


def _polar_of(name: str) -> tuple[float, float]:
    name = _ALIASES.get(name.upper(), name.upper())
    if name in _POLAR:
        return _POLAR[name]
    prefix = name.rstrip("0123456789Z")
    suffix = name[len(prefix):]
    if prefix not in _ROWS or not suffix:
        raise ValueError(f"no scalp position for channel {name!r}")
    midline, edge_azimuth = _ROWS[prefix]
    if suffix == "Z":
        return abs(midline), (0.0 if midline >= 0 else 180.0)
    number = int(suffix)
    side = -1.0 if number % 2 else 1.0  # odd = left
    k = (number + 1) // 2
    edge = _EDGE_INDEX.get(prefix, 4)
    # Interpolate in the plane between the midline point and the circumference point.
    mid = np.array([0.0, float(midline)])
    rim = 72.0 * np.array([np.sin(np.radians(edge_azimuth)), np.cos(np.radians(edge_azimuth))])
    point = mid + (rim - mid) * (k / edge)
    radius = float(np.hypot(*point))
    azimuth = float(np.degrees(np.arctan2(point[0], point[1])))
    return radius, side * azimuth


def electrode_xyz(names: list[str]) -> np.ndarray:
    """(n, 3) unit vectors: x right, y anterior, z up (CZ = (0, 0, 1))."""
    out = np.empty((len(names), 3))
    for i, name in enumerate(names):
        radius, azimuth = np.radians(_polar_of(name))
        out[i] = (np.sin(radius) * np.sin(azimuth), np.sin(radius) * np.cos(azimuth),
                  np.cos(radius))
    return out


def spatial_mixing(xyz: np.ndarray, length: float = 0.6) -> np.ndarray:
    """Cholesky factor of an exponential-decay correlation between electrodes (volume
    conduction)."""
    dist = np.linalg.norm(xyz[:, None, :] - xyz[None, :, :], axis=-1)
    corr = np.exp(-dist / length) + 1e-3 * np.eye(len(xyz))
    return np.linalg.cholesky(corr / corr[0, 0])


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _near(xyz, point, width):
    return np.exp(-np.sum((xyz - np.asarray(point)) ** 2, axis=1) / width**2)


def scalp_maps(xyz: np.ndarray) -> dict[str, np.ndarray]:
    """Topographies (max 1) of the rhythms and artefacts."""
    x, y, z = xyz.T
    maps = {
        "broad": 0.8 + 0.2 * sigmoid(y / 0.3),
        "central": 0.4 + 0.6 * _near(xyz, (0, 0, 1), 0.8),
        "frontal_midline": 0.15 + 0.85 * _near(xyz, (0, 0.59, 0.81), 0.55),
        "posterior": 0.1 + 0.9 * sigmoid((-y - 0.3) / 0.18),
        "frontocentral": 0.4 + 0.6 * sigmoid((y + 0.1) / 0.25),
        "temporal": 0.2 + 0.8 * sigmoid((np.abs(x) - 0.6) / 0.12),
        "eye_vertical": np.exp(-np.linalg.norm(xyz - (0, 1.0, -0.15), axis=1) / 0.25),
        "eye_horizontal": np.sign(x) * np.exp(-np.linalg.norm(
            xyz - np.stack([np.sign(x) * 0.75, np.full_like(x, 0.6), np.full_like(x, -0.2)], 1),
            axis=1) / 0.3),
    }
    return {k: v / np.abs(v).max() for k, v in maps.items()}


# --------------------------------------------------------------------------------------------
# Background and rhythms: one FFT per segment, states cross-faded.
# --------------------------------------------------------------------------------------------

RHYTHMS = {  # name: (centre Hz or None = subject's own, bandwidth Hz, topography)
    "delta": (1.8, 0.9, "broad"),
    "theta": (5.8, 1.0, "central"),
    "fm_theta": (6.2, 0.7, "frontal_midline"),
    "alpha": (None, 0.9, "posterior"),
    "beta": (20.0, 4.0, "frontocentral"),
    "gamma": (38.0, 5.0, "temporal"),
}


@dataclass
class Subject:
    """Per-subject variation, so that a label is not one fixed spectrum."""

    gain: float
    alpha_hz: float
    exponent: float  # 1/f^exponent background power
    band_gain: dict = field(default_factory=dict)
    spindle_hz: float = 13.0
    mains_uv: float = 2.0

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "Subject":
        return cls(gain=rng.uniform(0.8, 1.2), alpha_hz=rng.uniform(8.8, 11.2),
                   exponent=rng.uniform(1.4, 2.0),
                   band_gain={k: rng.uniform(0.85, 1.15) for k in RHYTHMS},
                   spindle_hz=rng.uniform(12.0, 14.5), mains_uv=rng.uniform(2.0, 6.0))


@dataclass
class Segment:
    start: int  # sample
    stop: int
    state: dict  # rhythm -> RMS microvolts, "bg" -> background RMS, "tilt" -> {rhythm: lateral}


def _band(freqs, centre, width):
    return np.exp(-0.5 * ((freqs - centre) / width) ** 2)


def _unit_rms(h, n):
    # Unit white noise through gain h (rfft "ortho" bins) has variance 2 * sum(h^2) / n.
    return h / np.sqrt(max(2.0 * np.sum(h**2) / n, 1e-12))


def _segment_signal(rng, mixing, maps, xyz, fs, n, state, subject):
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    background = (freqs**2 + 1.0) ** (-subject.exponent / 4) * freqs**2 / (freqs**2 + 0.3**2)
    tilt = state.get("tilt", {})
    topographies, shapes = [np.ones(len(xyz))], [state.get("bg", 10.0) * _unit_rms(background, n)]
    for name, (centre, width, topo) in RHYTHMS.items():
        amp = state.get(name, 0.0) * subject.band_gain.get(name, 1.0)
        if amp <= 0:
            continue
        shape = _band(freqs, subject.alpha_hz if centre is None else centre, width)
        shapes.append(amp * _unit_rms(shape, n))
        topographies.append(maps[topo] * np.clip(1.0 + tilt.get(name, 0.0) * xyz[:, 0], 0.1, None))
    gain = np.stack(topographies, axis=1) @ np.stack(shapes)  # (C, F): every channel's spectrum
    noise = mixing @ rng.standard_normal((len(xyz), n))
    spectrum = np.fft.rfft(noise, axis=1, norm="ortho")
    spectrum *= gain
    return subject.gain * np.fft.irfft(spectrum, n=n, axis=1, norm="ortho")


def render_segments(rng, xyz, fs, n_samples, segments, subject, fade_s=0.5) -> np.ndarray:
    """Background + rhythms of each segment, joined with equal-power cross-fades."""
    mixing, maps = spatial_mixing(xyz), scalp_maps(xyz)
    out = np.zeros((len(xyz), n_samples))
    pad = int(fade_s * fs)
    for i, seg in enumerate(segments):
        lo = max(seg.start - (pad if i > 0 else 0), 0)
        hi = min(seg.stop + (pad if i < len(segments) - 1 else 0), n_samples)
        piece = _segment_signal(rng, mixing, maps, xyz, fs, hi - lo, seg.state, subject)
        weight = np.ones(hi - lo)
        ramp = np.sin(0.5 * np.pi * np.linspace(0, 1, 2 * pad, endpoint=False))
        if i > 0 and 2 * pad <= hi - lo:
            weight[: 2 * pad] = ramp
        if i < len(segments) - 1 and 2 * pad <= hi - lo:
            weight[-2 * pad:] *= ramp[::-1]
        out[:, lo:hi] += piece * weight
    return out


# --------------------------------------------------------------------------------------------
# Transients: waveforms with unit peak, added with a per-channel gain.
# --------------------------------------------------------------------------------------------

def add_transient(x: np.ndarray, fs: float, onset_s: float, wave: np.ndarray, gains) -> None:
    """x[:, onset:] += gains * wave, clipped to the recording."""
    start = int(round(onset_s * fs))
    lo, hi = max(start, 0), min(start + wave.shape[-1], x.shape[1])
    if hi <= lo:
        return
    part = wave[..., lo - start: hi - start]
    gains = np.asarray(gains, dtype=float)
    x[:, lo:hi] += (gains[:, None] * part) if part.ndim == 1 else gains[:, None] * part


def _t(fs, duration):
    return np.arange(int(round(duration * fs))) / fs


def spike_and_wave(fs, rate_hz=3.0):
    """One spike (~60 ms, negative) followed by a slow wave, lasting 1 / rate_hz."""
    t = _t(fs, 1.0 / rate_hz)
    spike = -np.exp(-0.5 * ((t - 0.04) / 0.012) ** 2)
    wave = 0.7 * np.exp(-0.5 * ((t - 0.04 - 0.45 / rate_hz) / (0.16 / rate_hz)) ** 2)
    return spike + wave


def sharp_wave(fs, width_s=0.08):
    """Triphasic sharp transient (periodic discharges, vertex waves)."""
    t = _t(fs, 5 * width_s)
    c = 2 * width_s
    return (-np.exp(-0.5 * ((t - c) / (width_s / 2.5)) ** 2)
            + 0.35 * np.exp(-0.5 * ((t - c + width_s) / (width_s / 2)) ** 2)
            + 0.45 * np.exp(-0.5 * ((t - c - 1.2 * width_s) / (width_s / 1.5)) ** 2))


def spindle(fs, hz, duration):
    t = _t(fs, duration)
    return np.sin(2 * np.pi * hz * t) * np.sin(np.pi * t / duration) ** 2


def k_complex(fs):
    t = _t(fs, 1.2)
    return -np.exp(-0.5 * ((t - 0.25) / 0.08) ** 2) + 0.6 * np.exp(-0.5 * ((t - 0.65) / 0.18) ** 2)


def blink(fs):
    t = _t(fs, 0.45)
    return np.sin(np.pi * t / 0.45) ** 3


def saccade(fs, hold_s):
    """Eye turns, holds, returns: a smoothed box seen through AC coupling."""
    t = _t(fs, hold_s + 0.3)
    rise = sigmoid((t - 0.1) / 0.012) - sigmoid((t - 0.1 - hold_s) / 0.012)
    return rise * np.exp(-t / 2.0)


def slow_eye_roll(fs, duration):
    t = _t(fs, duration)
    return np.sin(2 * np.pi * t / duration) * np.sin(np.pi * t / duration)


def sawtooth_train(fs, hz, duration):
    t = _t(fs, duration)
    phase = (hz * t) % 1.0
    saw = np.where(phase < 0.8, phase / 0.8, (1.0 - phase) / 0.2) * 2 - 1
    return saw * np.sin(np.pi * t / duration)


def seizure_rhythm(fs, duration, hz_start, hz_end):
    """Rhythmic sharp discharge whose frequency slows through the seizure."""
    t = _t(fs, duration)
    hz = np.linspace(hz_start, hz_end, len(t))
    phase = 2 * np.pi * np.cumsum(hz) / fs
    wave = np.sin(phase) + 0.45 * np.sin(2 * phase + 0.6) + 0.2 * np.sin(3 * phase + 1.1)
    envelope = np.clip(t / 1.5, 0, 1) * np.clip((duration - t) / 1.0, 0, 1)
    return wave / np.abs(wave).max() * envelope


def periodic_discharges(fs, duration, period_s, rng):
    out = np.zeros(int(round(duration * fs)))
    sharp = sharp_wave(fs, 0.07)
    onset = rng.uniform(0, 0.3)
    while onset < duration - 0.4:
        i = int(onset * fs)
        seg = out[i: i + len(sharp)]
        seg += sharp[: len(seg)]
        onset += period_s * rng.uniform(0.9, 1.1)
    return out


def band_noise(rng, fs, n_channels, duration, lo_hz, hi_hz, taper=True):
    """Independent band-limited noise per channel, unit RMS; with a Hann envelope (muscle bursts)
    or without (steady muscle tone)."""
    n = int(round(duration * fs))
    freqs = np.fft.rfftfreq(n, 1.0 / fs)
    gain = ((freqs >= lo_hz) & (freqs <= min(hi_hz, 0.45 * fs))).astype(float)
    spectrum = np.fft.rfft(rng.standard_normal((n_channels, n)), axis=1) * gain
    noise = np.fft.irfft(spectrum, n=n, axis=1)
    noise /= noise.std() + 1e-12
    return noise * np.hanning(n) if taper else noise


def mains(rng, fs, n_channels, n_samples, hz, amplitude_uv):
    """Power-line hum at the dataset's mains frequency, different strength on each channel."""
    omega_t = 2 * np.pi * hz * np.arange(n_samples) / fs
    amp = amplitude_uv * rng.uniform(0.3, 1.5, n_channels)
    phase = rng.uniform(0, 2 * np.pi, n_channels)
    # sin(wt + p) = sin(wt) cos(p) + cos(wt) sin(p): two outer products instead of C * T sines.
    return (np.outer(amp * np.cos(phase), np.sin(omega_t))
            + np.outer(amp * np.sin(phase), np.cos(omega_t)))


def ecg_mv(rng, fs, n_samples):
    """ECG lead in millivolts: QRS spike and T wave at 55-80 beats per minute."""
    out = np.zeros(n_samples)
    t = _t(fs, 0.6)
    beat = 1.0 * np.exp(-0.5 * ((t - 0.1) / 0.012) ** 2) - 0.15 * np.exp(
        -0.5 * ((t - 0.125) / 0.01) ** 2) + 0.25 * np.exp(-0.5 * ((t - 0.35) / 0.05) ** 2)
    period = 60.0 / rng.uniform(55, 80)
    onset = rng.uniform(0, period)
    while onset * fs < n_samples:
        i = int(onset * fs)
        seg = out[i: i + len(beat)]
        seg += beat[: len(seg)]
        onset += period * rng.uniform(0.95, 1.05)
    return out + 0.02 * rng.standard_normal(n_samples)
