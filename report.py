"""What a person reads of an evaluation: the per-sample predictions CSVs, the confusion-matrix
PNGs, and `report.md` / `report.html` beside results.json. evaluation.py calls it at every
evaluation of a training run (the files of best.pt) and for train_instruction.py --eval_only.

Files under a run folder:
  predictions/<task>_<split>_<mode>.csv  one row per evaluated sample (PREDICTION_COLUMNS, then
                                         prob_<class> per class in scoring mode)
  confusion/<task>_<split>.png           one panel per mode, rows normalised by the true class,
                                         counts in the cells
  calibration/<task>.png                 reliability diagrams before / after temperature scaling
  report.md, report.html                 configuration, data, metrics with 95 % intervals,
                                         confusion matrices, curves, the chosen checkpoint
Takes plain dicts (results.json's layout) and imports no evaluation code.
"""
from __future__ import annotations

import csv
import html
import io
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import utils
from downstream_dataset import TASKS

MODES = ("generation", "scoring")
LEVELS = ("window", "recording", "subject")
PREDICTIONS_DIR = "predictions"
CONFUSION_DIR = "confusion"
CALIBRATION_DIR = "calibration"
REPORT_NAME = "report.md"
REPORT_HTML_NAME = "report.html"
CURVES = ("curves.png", "val_balanced_accuracy.png")
PREDICTION_COLUMNS = ("file", "recording", "subject", "window", "onset_s", "true", "true_name",
                      "predicted", "predicted_name", "generated_text")


# ----------------------------------------------------------------------------- predictions

def predictions_path(out_dir, task: str, split: str, mode: str) -> Path:
    return Path(out_dir) / PREDICTIONS_DIR / f"{task}_{split}_{mode}.csv"


def _blank(value):
    """Unknown origin fields ("" / -1 / NaN) as empty cells."""
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, int) and value < 0:
        return ""
    return value


def write_predictions(results: dict, out_dir) -> list[Path]:
    """predictions/<task>_<split>_<mode>.csv from evaluation.evaluate_tasks' results (their
    "predictions" entries); a blank `predicted` is an invalid generated answer."""
    written = []
    for task, splits in results.items():
        names = TASKS[task].label_names
        for split, entry in splits.items():
            pred = entry.get("predictions")
            if not pred:
                continue
            for mode in MODES:
                if mode not in pred:
                    continue
                probs = pred.get("probs") if mode == "scoring" else None
                header = [*PREDICTION_COLUMNS, *(f"prob_{n}" for n in names)] if probs \
                    else list(PREDICTION_COLUMNS)
                buffer = io.StringIO()
                writer = csv.writer(buffer, lineterminator="\n")
                writer.writerow(header)
                for i, label in enumerate(pred["label"]):
                    p = pred[mode][i]
                    valid = p is not None and p >= 0
                    text = pred["generated_text"][i] if mode == "generation" else ""
                    row = [_blank(pred[k][i]) for k in ("file", "recording", "subject",
                                                        "window", "onset_s")]
                    row += [label, names[label], p if valid else "",
                            names[p] if valid else "", text]
                    if probs:
                        row += [f"{q:.6g}" for q in probs[i]]
                    writer.writerow(row)
                path = predictions_path(out_dir, task, split, mode)
                path.parent.mkdir(parents=True, exist_ok=True)
                payload = buffer.getvalue()
                utils.atomic_write(path, lambda tmp: tmp.write_text(payload, encoding="utf-8"))
                written.append(path)
    return written


def read_predictions(path) -> dict:
    """A predictions CSV back as {"label", "predicted" (None = invalid), "probs" (or None),
    and every other column as a list of strings}."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    prob_cols = [c for c in (rows[0] if rows else {}) if c.startswith("prob_")]
    out = {c: [r[c] for r in rows] for c in PREDICTION_COLUMNS}
    out["label"] = [int(r["true"]) for r in rows]
    out["predicted"] = [int(r["predicted"]) if r["predicted"] else None for r in rows]
    out["probs"] = ([[float(r[c]) for c in prob_cols] for r in rows] if prob_cols else None)
    return out


# ----------------------------------------------------------------------------- confusion matrices

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
                    label = f"{when} (ECE {_num(ece)})" if when == "before" else \
                        f"T = {cal['temperature']:.2f} (ECE {_num(ece)})"
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


def calibration_blocks(out_dir: Path, calibration: dict) -> list[tuple]:
    """The report's calibration section: temperatures, ECE before / after, the diagrams."""
    if not calibration:
        return []
    rows = []
    for task, cal in calibration.items():
        test = cal.get("test") or {}
        rows.append([task, str(cal["n"]), f"{cal['temperature']:.3f}",
                     f"{_num(cal['ece_before'])} → {_num(cal['ece_after'])}",
                     f"{_num(test.get('ece_before'))} → {_num(test.get('ece_after'))}"
                     if test else "–"])
    blocks = [("h2", "Calibration"),
              ("p", "Option-scoring probabilities, temperature-scaled per task: softmax(log-"
                    "likelihoods / T), T fitted on the validation split by minimising the "
                    "negative log-likelihood; the test split uses the validation T. ECE: "
                    "expected calibration error over 10 equal-width confidence bins (lower is "
                    "better). The checkpoint carries T; inference reports calibrated "
                    "probabilities."),
              ("table", ["task", "val n", "T", "val ECE before → after",
                         "test ECE before → after"], rows)]
    for task in calibration:
        png = reliability_png(out_dir, task)
        if png.is_file():
            blocks.append(("img", f"{task} reliability", png.relative_to(out_dir).as_posix()))
    return blocks


# ----------------------------------------------------------------------------- report

def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}"


def _with_ci(m: dict, name: str) -> str:
    value = _num(m.get(name))
    low, high = (m.get("ci") or {}).get(name, (None, None))
    if value == "–" or low is None or not math.isfinite(low):
        return value
    return f"{value} [{low:.2f}, {high:.2f}]"


def metrics_rows(results: dict, splits=("test", "val")) -> tuple[list[str], list[list[str]]]:
    """The report's metrics table: one row per task, split, mode and level."""
    header = ["task", "split", "mode", "level", "n", "subjects", "balanced acc. [95 % CI]",
              "other metrics [95 % CI]", "invalid"]
    rows = []
    for task, by_split in results.items():
        others = [k for k in TASKS[task].metrics if k != "balanced_accuracy"]
        for split in splits:
            for mode in MODES:
                window = by_split.get(split, {}).get(mode)
                if not isinstance(window, dict):
                    continue
                for level in LEVELS:
                    m = window if level == "window" else window.get(level)
                    if not m:
                        continue
                    rows.append([task, split, mode, level, str(m["n"]),
                                 str(m.get("n_subjects") or "–"),
                                 _with_ci(m, "balanced_accuracy"),
                                 "; ".join(f"{k} {_with_ci(m, k)}" for k in others),
                                 _num(m.get("invalid_rate"), 2) if mode == "generation"
                                 else ""])
    return header, rows


def _chosen(record: dict) -> tuple[dict, str]:
    """The evaluation the report shows, and a line saying which checkpoint it is."""
    evaluations = record.get("evaluations") or []
    best = record.get("best")
    if best:
        shown = next((e for e in evaluations if e["iter_num"] == best["iter_num"]),
                     evaluations[-1])
        return shown, best.get("reason") or f"best.pt = step {best['iter_num']}"
    shown = evaluations[-1]
    return shown, f"evaluated checkpoint: {record.get('checkpoint')} (step {shown['iter_num']})"


def report_blocks(out_dir, record: dict) -> list[tuple]:
    """The report as ("h", text) / ("p", text) / ("table", header, rows) / ("img", alt, path)
    blocks, rendered to Markdown and HTML alike."""
    out_dir = Path(out_dir)
    shown, chosen = _chosen(record)
    results = shown["results"]
    blocks: list[tuple] = [
        ("h1", "NeuroLM evaluation report"),
        ("p", f"Run folder `{out_dir}`, written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
              f"Tasks: {', '.join(results)}."),
        ("h2", "Checkpoint"),
        ("p", chosen),
        ("p", f"Selection rule: mean validation balanced accuracy over {record.get('selection')}."),
    ]
    evaluations = record.get("evaluations") or []
    if len(evaluations) > 1:
        blocks.append(("table", ["step", "epoch", "selection score", "eligible",
                                 "max invalid rate"],
                       [[str(e["iter_num"]), str(e["epoch"]),
                         _num((e.get("selection") or {}).get("score")),
                         str((e.get("selection") or {}).get("eligible", "")),
                         _num((e.get("selection") or {}).get("invalid_rate"), 2)]
                        for e in evaluations]))
    blocks.append(("h2", "Data"))
    blocks.append(("table", ["task", "split", "samples", "recordings", "subjects"],
                   [[task, split, *(str(entry.get("data", {}).get(k) or "–")
                                    for k in ("samples", "recordings", "subjects"))]
                    for task, splits in results.items() for split, entry in splits.items()]))
    blocks.append(("h2", "Metrics"))
    blocks.append(("p", "95 % percentile bootstrap intervals over subjects (1000 resamples; over "
                        "windows when the sample files name no subject). Recording and subject "
                        "levels: the mean of the windows' class probabilities (scoring) or the "
                        "majority of the valid answers (generation). Invalid: share of "
                        "generated answers that name no class (counted as wrong)."))
    blocks.append(("table", *metrics_rows(results)))
    blocks.append(("h2", "Confusion matrices"))
    for task, splits in results.items():
        for split in splits:
            png = confusion_png(out_dir, task, split)
            if png.is_file():
                blocks.append(("img", f"{task} {split}", png.relative_to(out_dir).as_posix()))
    blocks += calibration_blocks(out_dir, shown.get("calibration") or {})
    curves = [name for name in CURVES if (out_dir / name).is_file()]
    if curves:
        blocks.append(("h2", "Training curves"))
        blocks += [("img", name, name) for name in curves]
    config = record.get("config")
    if config:
        blocks.append(("h2", "Configuration"))
        blocks.append(("table", ["option", "value"],
                       [[str(k), str(v)] for k, v in sorted(config.items())]))
    return blocks


def _markdown(blocks) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {block[1]}")
        elif kind == "h2":
            out.append(f"## {block[1]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "img":
            out.append(f"![{block[1]}]({block[2]})")
        else:
            header, rows = block[1], block[2]
            cell = lambda v: str(v).replace("|", "\\|")     # noqa: E731
            out.append("\n".join(["| " + " | ".join(cell(h) for h in header) + " |",
                                  "|" + "---|" * len(header)]
                                 + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]))
    return "\n\n".join(out) + "\n"


def _html(blocks) -> str:
    e = html.escape
    out = ["<!doctype html><meta charset='utf-8'><title>NeuroLM evaluation report</title>",
           "<style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:"
           "collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:90%}</style>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(block[1])}</p>")
        elif kind == "img":
            out.append(f"<p><img src='{e(block[2])}' alt='{e(block[1])}'></p>")
        else:
            head = "".join(f"<th>{e(h)}</th>" for h in block[1])
            body = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>"
                           for r in block[2])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
    return "\n".join(out) + "\n"


def write_report(out_dir, record: dict) -> Path:
    """report.md and report.html in out_dir from a results.json record; returns report.md."""
    out_dir = Path(out_dir)
    if not record.get("evaluations"):
        raise ValueError(f"{out_dir}: no evaluation to report")
    blocks = report_blocks(out_dir, record)
    markdown, page = _markdown(blocks), _html(blocks)
    utils.atomic_write(out_dir / REPORT_HTML_NAME,
                       lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return utils.atomic_write(out_dir / REPORT_NAME,
                              lambda tmp: tmp.write_text(markdown, encoding="utf-8"))
