"""report.md / report.html beside results.json: configuration, data, metrics with 95 %
intervals, confusion matrices, calibration, curves, the chosen checkpoint."""
from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

import utils
from report.figures import confusion_png, reliability_png
from report.predictions import MODES
from report.tables import metrics_rows, notes_lines, num, per_class_table

REPORT_NAME = "report.md"
REPORT_HTML_NAME = "report.html"
CURVES = ("curves.png", "val_balanced_accuracy.png")


def calibration_blocks(out_dir: Path, calibration: dict) -> list[tuple]:
    """The report's calibration section: temperatures, ECE before / after, the diagrams."""
    if not calibration:
        return []
    rows = []
    for task, cal in calibration.items():
        test = cal.get("test") or {}
        applied = f"{cal['temperature']:.3f}"
        if not cal.get("applied", True):
            applied = f"1 (fitted {cal['fitted_temperature']:.3f} not applied: it raised the ECE)"
        rows.append([task, str(cal["n"]), applied,
                     f"{num(cal['ece_before'])} → {num(cal['ece_after'])}",
                     f"{num(test.get('ece_before'))} → {num(test.get('ece_after'))}"
                     if test else "–"])
    blocks = [("h2", "Calibration"),
              ("p", "Option-scoring probabilities, temperature-scaled per task: softmax(log-"
                    "likelihoods / T), T fitted on the validation split by minimising the "
                    "negative log-likelihood, and applied only when it does not raise the "
                    "validation ECE; the test split uses the validation T. ECE: "
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
    """The report as ("h1"/"h2", text) / ("p", text) / ("list", lines) / ("table", header,
    rows) / ("img", alt, path) blocks, rendered to Markdown and HTML alike."""
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
                         num((e.get("selection") or {}).get("score")),
                         str((e.get("selection") or {}).get("eligible", "")),
                         num((e.get("selection") or {}).get("invalid_rate"), 2)]
                        for e in evaluations]))
    blocks.append(("h2", "Data"))
    blocks.append(("table", ["task", "split", "samples", "recordings", "subjects"],
                   [[task, split, *(str(entry.get("data", {}).get(k) or "–")
                                    for k in ("samples", "recordings", "subjects"))]
                    for task, splits in results.items() for split, entry in splits.items()]))
    blocks.append(("h2", "Metrics"))
    blocks.append(("p", "95 % percentile bootstrap intervals (1000 resamples) over whole "
                        "subjects, or over windows when the sample files name no subject: "
                        "'CI resamples' says which and how many. With one unit there is no "
                        "interval (n/a), under 5 it is unreliable. n/a: a value that is not "
                        "defined for its n (the notes say why). Chance: the balanced accuracy "
                        "of a constant or random answer. Recording and subject levels: the "
                        "mean of the windows' class probabilities (scoring) or the majority of "
                        "the valid answers (generation). Invalid: share of generated answers "
                        "that name no class (counted as wrong)."))
    blocks.append(("table", *metrics_rows(results)))
    notes = notes_lines(results)
    if notes:
        blocks.append(("p", "Notes (missing values, missing levels, few units):"))
        blocks.append(("list", notes))
    blocks.append(("h2", "Confusion matrices"))
    blocks.append(("p", "Rows: the true class; cells: its share predicted as each class (rows "
                        "sum to 100 %); the invalid column only where generation gave invalid "
                        "answers. Sensitivity = recall of the class, specificity = share of "
                        "the other classes not called it, PPV = share of its calls that are "
                        "right."))
    for task, splits in results.items():
        for split, entry in splits.items():
            for mode in MODES:
                conf = (entry.get(mode) or {}).get("confusion")
                if conf:
                    blocks.append(("p", f"{task} {split}, {mode} (windows):"))
                    blocks.append(("table", *per_class_table(conf)))
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
        elif kind == "list":
            out.append("\n".join(f"- {line}" for line in block[1]))
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
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{e(line)}</li>" for line in block[1]) + "</ul>")
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
