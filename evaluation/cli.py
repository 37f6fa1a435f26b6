"""`python -m evaluation compare RUN ...` (test metrics across runs) and `python -m evaluation
export CKPT OUT` (weights + config + model card)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

import report
from downstream_dataset import TASKS
from evaluation.run import EVAL_MODES, SPLITS_EVALUATED
from evaluation.selection import RESULTS_NAME


def run_evaluation(run) -> tuple[dict, dict]:
    """(results.json record, the evaluation it stands for: best.pt's, else the last) of a run
    folder or a results.json path."""
    path = Path(run)
    path = path / RESULTS_NAME if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no {RESULTS_NAME} (a train_instruction.py --out_dir)")
    record = json.loads(path.read_text(encoding="utf-8"))
    evaluations = record.get("evaluations") or []
    if not evaluations:
        raise ValueError(f"{path}: holds no evaluation")
    best = record.get("best")
    chosen = next((e for e in evaluations if best and e["iter_num"] == best["iter_num"]),
                  evaluations[-1])
    return record, chosen


def compare_runs(runs: list, split: str = "test") -> str:
    """One table of every task's `split` metrics (window level, both modes) across runs (e.g.
    seeds): mean ± sample std, and the number of runs that have it."""
    evaluations = [run_evaluation(run)[1]["results"] for run in runs]
    names = list(dict.fromkeys(n for e in evaluations for n in e))
    lines = [f"{len(runs)} runs, {split} split, best.pt of each (else its last evaluation); "
             "mean ± std over runs",
             f"{'task':<9} {'mode':<10} {'runs':>4}  metrics"]
    for name in names:
        metrics = ("balanced_accuracy", *[m for m in TASKS[name].metrics
                                          if m != "balanced_accuracy"])
        for mode in EVAL_MODES:
            found = [e[name][split][mode] for e in evaluations
                     if name in e and mode in e[name].get(split, {})]
            if not found:
                continue
            cells = []
            for metric in (*metrics, "invalid_rate") if mode == "generation" else metrics:
                values = np.array([m.get(metric, math.nan) for m in found], dtype=np.float64)
                values = values[np.isfinite(values)]
                if values.size:
                    std = values.std(ddof=1) if values.size > 1 else 0.0
                    cells.append(f"{metric} {values.mean():.3f} ± {std:.3f}")
            lines.append(f"{name:<9} {mode:<10} {len(found):>4}  " + "  ".join(cells))
    return "\n".join(lines)


def model_card(config: dict, run_dir: Path) -> str:
    """README.md of an exported model: what it is, and the test metrics of its run's report."""
    from model.checkpoints import ITER_NUM_KEY
    lines = [f"# NeuroLM {config['kind']} weights", "",
             f"Exported from `{config['source']}` (step {config['checkpoint'].get(ITER_NUM_KEY)})."
             " Load with `model.load_neurolm(FOLDER)` / `model.load_vq(FOLDER)` or "
             "`simple_inference.py --model_path FOLDER`.", ""]
    if (run_dir / RESULTS_NAME).is_file():
        record, chosen = run_evaluation(run_dir)
        header, rows = report.metrics_rows(chosen["results"], splits=("test",))
        rows = [r for r in rows if r[3] == "window"]
        data = [f"{t} {s}: {e.get('data', {}).get('samples')} samples, "
                f"{e.get('data', {}).get('subjects') or '?'} subjects"
                for t, splits in chosen["results"].items() for s, e in splits.items()]
        lines += [f"Tasks: {', '.join(chosen['results'])}.", "",
                  "Data evaluated: " + "; ".join(data) + ".", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                  *("| " + " | ".join(r) + " |" for r in rows), "",
                  f"From `{run_dir / report.REPORT_NAME}` (full report: confusion matrices, "
                  "recording and subject levels, training curves)."]
    return "\n".join(lines) + "\n"


def export(checkpoint, out_dir, tokenizer_path=None) -> Path:
    """model.safetensors + config.json + README.md (a model card from the checkpoint's run
    folder) in out_dir: the weights alone, which load_neurolm / load_vq read directly."""
    from model.export import export as export_weights
    return export_weights(checkpoint, out_dir, tokenizer_path,
                          card=lambda config: model_card(config, Path(checkpoint).parent))


def main(argv=None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m evaluation", description=(
        "compare: one table of test metrics across runs (mean ± std, e.g. over seeds); "
        "export: a checkpoint's weights as model.safetensors + config.json + a model card"))
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="python -m evaluation compare RUN_A RUN_B ...")
    cmp.add_argument("runs", nargs="+", help="train_instruction.py --out_dir folders "
                                             "(or their results.json)")
    cmp.add_argument("--split", default="test", choices=SPLITS_EVALUATED)
    exp = sub.add_parser("export", help="python -m evaluation export CKPT OUT_DIR")
    exp.add_argument("checkpoint", help="a NeuroLM (best.pt, last.pt) or VQ checkpoint")
    exp.add_argument("out_dir", help="folder for model.safetensors, config.json, README.md")
    exp.add_argument("--tokenizer_path", default=None,
                     help="the VQ checkpoint, when the LM checkpoint lacks the encoder")
    args = parser.parse_args(argv)
    try:
        if args.command == "compare":
            print(compare_runs(args.runs, args.split))
        else:
            out = export(args.checkpoint, args.out_dir, args.tokenizer_path)
            size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
            print(f"exported {args.checkpoint} -> {out} ({size:.1f} MB)")
    except (FileNotFoundError, ValueError) as err:      # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0

