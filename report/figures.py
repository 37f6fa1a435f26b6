"""The report's figures: confusion matrices (confusion/<task>_<split>.png) and reliability
diagrams (calibration/<task>.png)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import utils
from report.predictions import MODES
from report.tables import num

CONFUSION_DIR = "confusion"
CALIBRATION_DIR = "calibration"


def confusion_png(out_dir, task: str, split: str) -> Path:
    return Path(out_dir) / CONFUSION_DIR / f"{task}_{split}.png"


def plot_confusions(results: dict, out_dir) -> list[Path]:
    """confusion/<task>_<split>.png from results.json-style results (metrics with
    "confusion"): one panel per mode, colour = share of the true class, text = count."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task, splits in results.items():
        for split, entry in splits.items():
            panels = [(m, entry[m]["confusion"]) for m in MODES
                      if isinstance(entry.get(m), dict) and entry[m].get("confusion")]
            if not panels:
                continue
            fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 0.6, 4),
                                     squeeze=False)
            for ax, (mode, conf) in zip(axes[0], panels):
                _confusion_panel(ax, conf, f"{task} {split} — {mode}")
            fig.tight_layout()
            png = confusion_png(out_dir, task, split)
            png.parent.mkdir(parents=True, exist_ok=True)
            utils.save_figure(fig, png)
            written.append(png)
    return written


def _confusion_panel(ax, conf: dict, title: str) -> None:
    counts = np.asarray(conf["counts"], dtype=np.int64)
    columns = list(conf["predicted"])
    if counts[:, -1].sum() == 0:           # no invalid answers: no invalid column
        counts, columns = counts[:, :-1], columns[:-1]
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for (i, j), n in np.ndenumerate(counts):
        ax.text(j, i, str(n), ha="center", va="center",
                color="white" if share[i, j] > 0.6 else "black", fontsize=9)
    ax.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    ax.set_yticks(range(len(conf["classes"])), conf["classes"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)


# ----------------------------------------------------------------------------- calibration

def reliability_png(out_dir, task: str) -> Path:
    return Path(out_dir) / CALIBRATION_DIR / f"{task}.png"


def plot_reliability(calibration: dict, out_dir) -> list[Path]:
    """calibration/<task>.png: reliability diagrams (accuracy against mean confidence per
    confidence bin), one panel per split, before and after temperature scaling, from
    evaluation.calibration.calibrate's output (results.json "calibration")."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for task, cal in calibration.items():
        panels = list((cal.get("reliability") or {}).items())
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), squeeze=False)
        for ax, (split, curves) in zip(axes[0], panels):
            scores = cal if split == cal.get("split") else cal.get(split, {})
            ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
            for when, colour in (("before", "tab:red"), ("after", "tab:blue")):
                bins = curves[when]
                points = [(c, a) for c, a in zip(bins["confidence"], bins["accuracy"])
                          if c is not None]
                if points:
                    ece = scores.get(f"ece_{when}")
                    label = f"{when} (ECE {num(ece)})" if when == "before" else \
                        f"T = {cal['temperature']:.2f} (ECE {num(ece)})" + (
                            "" if cal.get("applied", True) else
                            f"; fitted {cal['fitted_temperature']:.2f} not applied")
                    ax.plot(*zip(*points), marker="o", color=colour, label=label)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xlabel("confidence (top class probability)")
            ax.set_ylabel("accuracy")
            ax.set_title(f"{task} {split} (n {scores.get('n', '?')})", fontsize=10)
            ax.legend(fontsize=8, loc="upper left")
            ax.grid(alpha=0.3)
        fig.tight_layout()
        png = reliability_png(out_dir, task)
        png.parent.mkdir(parents=True, exist_ok=True)
        utils.save_figure(fig, png)
        written.append(png)
    return written
