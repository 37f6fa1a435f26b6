"""Figures of a recording's answers: one window's EEG, the whole-recording timeline a
clinician reads (min/max envelope, fixed sensitivity with a true scale bar, an answer strip with
uncertain and QC marks, probability trends, the file's own events) and a hypnogram."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils import save_figure

from .agreement import stage_of

SENSITIVITIES_UV = (5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 2000,
                    5000, 10000, 100000, 1000000)   # the clinical steps, then the absurd


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt
    return plt


def nice_scale_uv(X: np.ndarray) -> float:
    """A round amplitude (1, 2 or 5 times a power of ten) near a typical channel's spread."""
    spread = float(np.median(np.percentile(X, 95, axis=1) - np.percentile(X, 5, axis=1)))
    if not np.isfinite(spread) or spread <= 0:
        return 1.0
    exponent = np.floor(np.log10(spread))
    for mult in (1, 2, 5, 10):
        if mult * 10**exponent >= spread / 2:
            return float(mult * 10**exponent)
    return float(10 ** (exponent + 1))


def draw_eeg(X: np.ndarray, ch_names: list[str], sfreq: float, title: str):
    """A figure of the channels stacked top to bottom with their names, time in seconds, and a
    microvolt scale bar; its first len(ch_names) lines are the channel traces."""
    plt = _pyplot()
    n_ch, n_t = X.shape
    scale = nice_scale_uv(X)
    gap = 2.0 * scale  # room for a typical channel between two baselines
    t = np.arange(n_t) / sfreq
    offsets = -gap * np.arange(n_ch)
    fig, ax = plt.subplots(figsize=(min(4 + n_t / sfreq * 0.6, 20), 1.2 + 0.3 * n_ch))
    centred = X - np.median(X, axis=1, keepdims=True)
    for row, off in zip(centred, offsets):
        ax.plot(t, row + off, lw=0.6, color="k")
    ax.set_yticks(offsets, ch_names)
    ax.set_xlabel("time (s)")
    ax.set_xlim(0, n_t / sfreq)
    ax.set_ylim(offsets[-1] - gap, gap)
    x_bar = n_t / sfreq * 1.01   # scale bar just right of the traces
    ax.plot([x_bar, x_bar], [gap * 0.5, gap * 0.5 - scale], color="tab:red", lw=2, clip_on=False)
    ax.text(x_bar * 1.005, gap * 0.5 - scale / 2, f"{scale:g} \u00b5V", color="tab:red",
            va="center", ha="left", fontsize=8, clip_on=False)
    ax.set_title(title, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_eeg(X: np.ndarray, ch_names: list[str], sfreq: float, path: Path, title: str) -> int:
    """draw_eeg saved as a PNG; returns the number of channel traces drawn."""
    fig = draw_eeg(X, ch_names, sfreq, title)
    n_traces = len(fig.axes[0].lines) - 1  # all lines but the scale bar
    save_figure(fig, path, bbox_inches="tight")  # "tight" keeps the scale bar label
    return n_traces


def sensitivity_uv(mins: np.ndarray, maxs: np.ndarray) -> float:
    """A fixed clinical sensitivity (microvolts between two baselines) that fits the median
    channel's typical excursion: one number for the whole page, as an EEG reader sets it."""
    spread = float(np.median(np.percentile(maxs, 95, axis=1) - np.percentile(mins, 5, axis=1)))
    for step in SENSITIVITIES_UV:
        if step >= spread / 2:   # neighbours touch only at their largest excursions
            return float(step)
    return float(SENSITIVITIES_UV[-1])


def class_colours(label_names):
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {name: cmap(i % 10) for i, name in enumerate(label_names)}


def runs(values, starts, stride: float):
    """(value, start, width) of each run of equal consecutive values, windows `stride` apart."""
    out = []
    for value, start in zip(values, starts):
        if out and out[-1][0] == value and abs(out[-1][1] + out[-1][2] - start) < 1e-6:
            out[-1][2] += stride
        else:
            out.append([value, float(start), float(stride)])
    return [tuple(r) for r in out]


def draw_timeline(result, title: str):
    """The whole-recording figure: EEG envelope, answer strip, probability trends, events."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    env, table, task = result.overview, result.windows, result.task
    names = result.signal["channels"]
    times, mins, maxs = env["times"], env["mins"], env["maxs"]
    gap = sensitivity_uv(mins, maxs)
    offsets = -gap * np.arange(len(names))
    end = max(float(times[-1]) if len(times) else 0, float(result.summary.get("seconds", 0)))
    fig, (ax_eeg, ax_strip, ax_prob) = plt.subplots(
        3, 1, sharex=True, figsize=(16, 3.5 + 0.28 * len(names)),
        gridspec_kw={"height_ratios": [max(3, len(names) / 3), 0.6, 2]})
    centre = np.median((mins + maxs) / 2, axis=1, keepdims=True)
    for lo, hi, off in zip(mins - centre, maxs - centre, offsets):
        ax_eeg.fill_between(times, np.clip(lo, -gap, gap) + off, np.clip(hi, -gap, gap) + off,
                            lw=0.3, color="k", step="mid")
    step = max(1, len(names) // 32)
    ax_eeg.set_yticks(offsets[::step], names[::step], fontsize=7)
    ax_eeg.set_ylim(offsets[-1] - gap, gap)
    x_bar = end * 1.005   # a true scale bar: the sensitivity drawn in the traces' own units
    ax_eeg.plot([x_bar, x_bar], [0, -gap], color="tab:red", lw=2, clip_on=False)
    ax_eeg.text(x_bar, -gap / 2, f" {gap:g} \u00b5V", color="tab:red", va="center",
                fontsize=8, clip_on=False)
    ax_eeg.set_title(title, fontsize=9)
    ann = result.annotations
    for onset, duration, text in zip(ann.onset, ann.duration, ann.description):
        if duration > 0 and duration < end:
            ax_eeg.axvspan(onset, onset + duration, color="tab:orange", alpha=0.15, lw=0)
        ax_eeg.axvline(onset, color="tab:orange", lw=0.6, alpha=0.8)
    shown = list(zip(ann.onset, ann.description))[:60]
    for onset, text in shown:
        ax_eeg.text(onset, gap * 0.9, str(text)[:20], rotation=90, fontsize=6, va="top",
                    color="tab:orange")

    colours = class_colours(task.label_names)
    stride = result.signal["stride_seconds"]
    # one bar per run of equal answers: a night of windows stays a handful of artists
    strip = [(row.label_name, bool(row.uncertain)) for row in table.itertuples(index=False)]
    for (label, uncertain), start, width in runs(strip, table["start_s"], stride):
        ax_strip.broken_barh([(start, width)], (0.35, 0.65), lw=0,
                             facecolor=colours.get(label, (0.85, 0.85, 0.85, 1)),
                             hatch="///" if uncertain else None, edgecolor="white")
    for flagged, start, width in runs(list(table["qc_flags"] != ""), table["start_s"], stride):
        if flagged:
            ax_strip.broken_barh([(start, width)], (0, 0.3), color="tab:red", lw=0)
    ax_strip.set_ylim(0, 1)
    ax_strip.set_yticks([])
    ax_strip.set_ylabel("answer", rotation=0, ha="right", va="center", fontsize=8)
    handles = [Patch(color=c, label=n) for n, c in colours.items()]
    handles += [Patch(facecolor="grey", hatch="///", edgecolor="white", label="uncertain"),
                Patch(color="tab:red", label="QC flag")]
    ax_strip.legend(handles=handles, fontsize=7, ncol=len(handles), loc="upper center",
                    bbox_to_anchor=(0.5, -0.1), frameon=False)

    centres = table["start_s"] + table["duration_s"] / 2
    for name in task.label_names:
        ax_prob.plot(centres, table[f"prob_{name}"], lw=1, color=colours[name], label=name)
    ax_prob.set_ylim(0, 1)
    ax_prob.set_ylabel("p (calibrated)" if result.summary.get("calibrated") else "p")
    ax_prob.set_xlabel("time (s)")
    ax_prob.set_xlim(0, end)
    for ax in (ax_eeg, ax_strip, ax_prob):
        ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_timeline(result, path: Path, title: str) -> None:
    save_figure(draw_timeline(result, title), path, bbox_inches="tight")


def plot_hypnogram(result, path: Path, title: str) -> None:
    """Stages over time, Wake on top and deeper stages below, as sleep reports draw them."""
    plt = _pyplot()
    task, table = result.task, result.windows.sort_values("start_s")
    order = list(task.label_names)
    rem = next((n for n in order if stage_of(n) == "rem"), None)
    if rem is not None:   # REM drawn just under Wake, as in every clinical hypnogram
        order.remove(rem)
        order.insert(1, rem)
    level = {name: -i for i, name in enumerate(order)}
    hours = table["start_s"].to_numpy() / 3600
    y = np.array([level.get(s, np.nan) for s in table["label_name"]], dtype=float)
    fig, ax = plt.subplots(figsize=(12, 3))
    ax.step(hours, y, where="post", color="k", lw=1)
    if rem is not None:
        ax.step(hours, np.where(y == level[rem], y, np.nan), where="post", color="tab:red",
                lw=3)
    ax.set_yticks([level[n] for n in order], order)
    ax.set_xlabel("time (h)")
    ax.set_title(title, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    save_figure(fig, path, bbox_inches="tight")
