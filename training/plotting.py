"""Metric curves from a run's metrics.jsonl into a PNG (`plot_metrics`), and `save_figure`."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


def read_metrics(jsonl_path: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value), ...]} sorted by step. A resumed run logs some steps twice:
    the later row wins. Non-numeric values and torn last lines are skipped."""
    path = Path(jsonl_path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file {path} does not exist")
    by_metric: dict[str, dict[int, float]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            step = row.get("step")
            if not isinstance(step, int):
                continue
            for key, value in row.items():
                if key in ("step", "time") or isinstance(value, bool):
                    continue
                if isinstance(value, (int, float)):
                    by_metric.setdefault(key, {})[step] = float(value)
    return {k: sorted(v.items()) for k, v in by_metric.items()}


def plot_metrics(jsonl_path: str | os.PathLike, out_png: str | os.PathLike,
                 keys: list[str] | None = None, title: str | None = None) -> Path:
    """One panel per metric (all numeric ones by default) against step; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = read_metrics(jsonl_path)
    ends = epoch_ends(series.get("epoch", []))
    if keys is not None:
        missing = [k for k in keys if k not in series]
        if missing:
            raise KeyError(f"{jsonl_path} has no metric {', '.join(missing)}; "
                           f"available: {', '.join(sorted(series))}")
        series = {k: series[k] for k in keys}
    if not series:
        raise ValueError(f"{jsonl_path} holds no numeric metrics to plot")
    cols = min(3, len(series))
    rows = math.ceil(len(series) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, points) in zip(axes.flat, series.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="." if len(points) < 50 else None)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ends:   # the console's 0-based epochs, at the step each one ended
            top = ax.secondary_xaxis("top")
            top.set_xticks(list(ends.values()), [str(e) for e in ends])
            top.set_xlabel("epoch", fontsize="small")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_png)


def epoch_ends(points: list[tuple[int, float]], most: int = 12) -> dict[int, int]:
    """{epoch: the last step logged in it} from the "epoch" metric, at most `most` of them
    (evenly thinned, the last kept), for an epoch axis numbered as the console prints it."""
    ends: dict[int, int] = {}
    for step, epoch in points:
        if float(epoch).is_integer():
            ends[int(epoch)] = max(step, ends.get(int(epoch), step))
    keys = sorted(ends)
    stride = max(1, math.ceil(len(keys) / most))
    kept = keys[::-1][::stride][::-1]
    return {e: ends[e] for e in kept}


def save_figure(fig, png: str | os.PathLike, **savefig_kwargs) -> Path:
    """fig as a PNG, written atomically, then closed."""
    import matplotlib.pyplot as plt

    from .io import atomic_write
    try:
        return atomic_write(png, lambda tmp: fig.savefig(tmp, format="png",
                                                         **{"dpi": 100, **savefig_kwargs}))
    finally:
        plt.close(fig)

