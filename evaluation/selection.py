"""What a training run keeps of its evaluations: best.pt selection, results.json (the results
book), the printed table and the validation plot, and instruction tuning's `Stage.validate`."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np

import report
import utils
from evaluation.calibration import calibrate, checkpoint_calibration
from evaluation.run import EVAL_MODES, PREDICTIONS, evaluate_tasks
from tasks import BUILTIN_TASKS, get_task, task_records

SELECTION = ("val", "scoring", "balanced_accuracy")   # what the validation plot shows
SELECTION_RULE = ("the tasks and both modes (generation and scoring), among checkpoints whose "
                  "generation answers are mostly valid; ties go to the later checkpoint")
MAX_INVALID_RATE = 0.5     # more invalid generation answers than this on a task: never best.pt
RESULTS_NAME = "results.json"
BEST_NAME = "best.pt"
VAL_PLOT_NAME = "val_balanced_accuracy.png"


def publishable(results: dict) -> dict:
    """results without the per-sample predictions (those go to the predictions CSVs)."""
    return {name: {split: {k: v for k, v in entry.items() if k != PREDICTIONS}
                   for split, entry in splits.items()}
            for name, splits in results.items()}


def mean_val_balanced_accuracy(results: dict, modes: Iterable[str] = ("scoring",)) -> float:
    """Mean over the tasks and `modes` of the validation balanced accuracy; NaN when none."""
    values = [r["val"][mode]["balanced_accuracy"] for r in results.values()
              for mode in modes if mode in r.get("val", {})]
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(values)) if values else math.nan


def selection_score(results: dict) -> float:
    """What picks best.pt: the mean validation balanced accuracy over the tasks and both
    evaluation modes (those evaluated), so a model that scores options well but cannot answer
    is not best; see `selection` for the invalid-answer rule."""
    return mean_val_balanced_accuracy(results, EVAL_MODES)


def worst_invalid_rate(results: dict) -> tuple[float, str | None]:
    """(highest validation invalid-answer rate of generation over the tasks, its task)."""
    rates = [(r["val"]["generation"]["invalid_rate"], name) for name, r in results.items()
             if "generation" in r.get("val", {})
             and math.isfinite(r["val"]["generation"]["invalid_rate"])]
    return max(rates) if rates else (0.0, None)


def selection(results: dict) -> dict:
    """{"score", "eligible", "invalid_rate", "invalid_task"} of one evaluation. An evaluation
    whose generation answers are mostly invalid (rate above MAX_INVALID_RATE on any task) is
    not eligible: eligible evaluations always beat ineligible ones, then the higher score, and a
    tie goes to the later evaluation."""
    rate, task = worst_invalid_rate(results)
    score = selection_score(results)
    return {"score": score, "eligible": bool(math.isfinite(score) and rate <= MAX_INVALID_RATE),
            "invalid_rate": rate, "invalid_task": task}


def selection_reason(chosen: dict, evaluations: list[dict]) -> str:
    """One line saying why `chosen` (an evaluation record) is best.pt."""
    sel = chosen["selection"]
    line = (f"best.pt = step {chosen['iter_num']} (epoch {chosen['epoch']}): mean validation "
            f"balanced accuracy {sel['score']:.3f} over {SELECTION_RULE}")
    if sel["invalid_task"] is not None:
        line += (f"; highest invalid-answer rate {sel['invalid_rate']:.2f} "
                 f"({sel['invalid_task']})")
    if not sel["eligible"]:
        line += f", above {MAX_INVALID_RATE:g} on every evaluation so far: none was eligible"
    others = [e for e in evaluations if e is not chosen and "selection" in e]
    excluded = [e for e in others if not e["selection"]["eligible"]
                and e["selection"]["score"] >= sel["score"] and sel["eligible"]]
    if excluded:
        line += ("; not chosen despite a score as high: step(s) "
                 + ", ".join(str(e["iter_num"]) for e in excluded)
                 + f" (invalid answers above {MAX_INVALID_RATE:g})")
    ties = [e for e in others if e["selection"]["score"] == sel["score"]
            and e["selection"]["eligible"] == sel["eligible"]]
    if ties:
        line += "; tied with step(s) " + ", ".join(str(e["iter_num"]) for e in ties) + \
                ", the later wins"
    return line


def summary_metrics(results: dict) -> dict:
    """Scalars for metrics.jsonl: the selection score and each task's validation value."""
    split, mode, metric = SELECTION
    out = {"val_mean_balanced_accuracy": mean_val_balanced_accuracy(results),
           "val_selection_score": selection_score(results)}
    for name, r in results.items():
        if mode in r.get(split, {}):
            out[f"val_{name}_balanced_accuracy"] = r[split][mode][metric]
    return out


def format_table(results: dict, tasks: dict | None = None) -> str:
    """One row per task, split and mode: balanced accuracy, the task's other metrics, invalid
    rate."""
    lines = [f"{'task':<9} {'split':<5} {'mode':<10} {'n':>5} {'bal_acc':>8}  other metrics"]
    for name, splits in results.items():
        task = get_task(name, tasks or BUILTIN_TASKS)
        for split, modes in splits.items():
            for mode, m in modes.items():
                if mode not in EVAL_MODES:
                    continue
                others = " ".join(f"{k} {m[k]:.3f}" for k in task.metrics
                                  if k != "balanced_accuracy" and m.get(k) is not None
                                  and math.isfinite(m[k]))
                if mode == "generation":
                    others += f" invalid {m['invalid_rate']:.3f}"
                lines.append(f"{name:<9} {split:<5} {mode:<10} {m['n']:>5} "
                             f"{m['balanced_accuracy']:>8.3f}  {others}")
    return "\n".join(lines)


def plot_validation(evaluations: list[dict], png: Path) -> None:
    """Validation balanced accuracy (scoring) per task against the epoch of the evaluation
    (0-based, as the console and the report number it)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    split, mode, metric = SELECTION
    fig, ax = plt.subplots(figsize=(7, 4))
    names = sorted({n for e in evaluations for n in e["results"]})
    for name in names:
        points = [(e["epoch"], e["results"][name][split][mode][metric]) for e in evaluations
                  if name in e["results"] and mode in e["results"][name].get(split, {})]
        points = [(x, y) for x, y in points if y is not None and math.isfinite(y)]
        if points:
            ax.plot(*zip(*points), marker="o", label=name)
    # the console's numbering ("evaluation after epoch 0"); whole epochs only
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (as printed after each evaluation)")
    ax.set_ylabel(f"{split} {metric} ({mode})")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    if names:
        ax.legend()
    fig.tight_layout()
    utils.save_figure(fig, png)


# ----------------------------------------------------------------------------- a run's record

class ResultsBook:
    """results.json of a training run: every evaluation, and the best one (which is best.pt).
    Its "tasks" are the run's full task definitions (Task.to_dict()), so reading the run back
    needs no task file."""

    def __init__(self, out_dir: Path, tasks: list, resumed_at: int | None,
                 config: dict | None = None):
        self.path = Path(out_dir) / RESULTS_NAME
        self.data = {"tasks": task_records(map(get_task, tasks)), "selection": SELECTION_RULE,
                     "config": config, "evaluations": [], "best": None}
        if resumed_at is not None and self.path.is_file():
            # the evaluations up to the resumed step happened in this run's history
            old = json.loads(self.path.read_text(encoding="utf-8"))
            self.data["evaluations"] = [e for e in old.get("evaluations", [])
                                        if e["iter_num"] <= resumed_at]
            best = old.get("best")
            if best and best["iter_num"] <= resumed_at:
                self.data["best"] = best

    def evaluated_at(self, iter_num: int) -> bool:
        return any(e["iter_num"] == iter_num for e in self.data["evaluations"])

    def add(self, epoch: int, iter_num: int, results: dict,
            calibration: dict | None = None) -> bool:
        """Record an evaluation (per-sample predictions left out) and its calibration; True
        when it is the new best (`selection`: eligible first, then the score; a tie goes to
        this later evaluation)."""
        sel = selection(results)
        record = {"epoch": epoch, "iter_num": iter_num,
                  "mean_val_balanced_accuracy": mean_val_balanced_accuracy(results),
                  "selection": sel, "results": publishable(results),
                  "calibration": calibration or {}}
        self.data["evaluations"].append(record)
        best = self.data["best"]
        improved = math.isfinite(sel["score"]) and (
            best is None or best.get("eligible") is None
            or (sel["eligible"], sel["score"]) >= (best["eligible"], best["score"]))
        if improved:
            best = {"epoch": epoch, "iter_num": iter_num, "score": sel["score"],
                    "eligible": sel["eligible"], "checkpoint": BEST_NAME}
        if best is not None:
            chosen = next(e for e in reversed(self.data["evaluations"])
                          if e["iter_num"] == best["iter_num"])
            best["reason"] = selection_reason(chosen, self.data["evaluations"])
        self.data["best"] = best
        utils.write_json(self.path, self.data)
        return improved


def write_results(out_dir: Path, tasks: list, checkpoint, iter_num: int | None,
                  results: dict, config: dict | None = None) -> Path:
    """results.json of one evaluation of a checkpoint file (train_instruction.py --eval_only),
    with its predictions CSVs, confusion matrices, reliability diagrams and report.md beside it.
    The temperatures fitted here are in results.json ("calibration"); the checkpoint file is
    left as it was."""
    path = Path(out_dir) / RESULTS_NAME
    calibration = calibrate(results)
    tasks = {t.name: t for t in map(get_task, tasks)}     # Task objects (or built-in names)
    data = {"tasks": task_records(tasks), "selection": SELECTION_RULE, "config": config,
            "checkpoint": str(checkpoint),
            "evaluations": [{"epoch": None, "iter_num": iter_num,
                             "mean_val_balanced_accuracy": mean_val_balanced_accuracy(results),
                             "selection": selection(results),
                             "results": publishable(results), "calibration": calibration}]}
    utils.write_json(path, data)
    report.write_predictions(results, out_dir, tasks)
    report.plot_confusions(data["evaluations"][0]["results"], out_dir)
    report.plot_reliability(calibration, out_dir)
    report.write_report(out_dir, data)
    return path


class TrainingEvaluation:
    """`Stage.validate` of instruction tuning. After every `every_epochs` epochs and at the end of
    training, rank 0 evaluates the unwrapped model on `eval_sets`, records the evaluation in
    results.json, prints the table, redraws the validation plot and, on a new best, writes
    best.pt: the very checkpoint state fit saves next. Each evaluation fits the tasks'
    temperatures on validation (evaluation.calibration); best.pt carries those of its own
    evaluation, and `checkpoint_entries` gives the latest ones to every later checkpoint. The
    other ranks wait at a barrier. Returns summary_metrics for metrics.jsonl ({} on other ranks
    and skipped epochs)."""

    def __init__(self, model, eval_sets: dict, runtime, out_dir, tasks: list,
                 every_epochs: int = 1, batch_size: int = 16,
                 modes: Iterable[str] = EVAL_MODES, max_rows: int | None = None,
                 config: dict | None = None):
        self.model, self.eval_sets, self.runtime = model, eval_sets, runtime
        self.out_dir = Path(out_dir)
        self.tasks = {t.name: t for t in map(get_task, tasks)}    # Task objects or names
        self.config = config
        self.every_epochs, self.batch_size = every_epochs, batch_size
        self.modes, self.max_rows = tuple(modes), max_rows
        self.book: ResultsBook | None = None     # opened at the first call: needs resumed_from
        self.calibration: dict = {}              # checkpoint_calibration of the latest evaluation

    def checkpoint_entries(self) -> dict:
        """Keys every checkpoint written after an evaluation carries: {"calibration": ...}."""
        return {"calibration": self.calibration} if self.calibration else {}

    def __call__(self, at: utils.Progress) -> dict:
        if (at.epoch + 1) % self.every_epochs and not at.is_last:
            return {}       # the same decision on every rank: no barrier needed
        summary = {}
        if self.runtime.is_main:
            if self.book is None:
                self.book = ResultsBook(self.out_dir, self.tasks.values(), at.resumed_from,
                                        self.config)
            if not self.book.evaluated_at(at.iter_num):    # a resumed, already evaluated end
                summary = self.evaluate(at)
        self.runtime.barrier()
        return summary

    def evaluate(self, at: utils.Progress) -> dict:
        results = evaluate_tasks(utils.unwrap(self.model), self.eval_sets, self.runtime,
                                 self.batch_size, self.modes, self.max_rows)
        calibration = calibrate(results)
        self.calibration = checkpoint_calibration(calibration, at.iter_num)
        improved = self.book.add(at.epoch, at.iter_num, results, calibration)
        self.runtime.print(f"evaluation after epoch {at.epoch} (step {at.iter_num}):\n"
                           + format_table(results, self.tasks) + "\n"
                           + self.book.data["best"]["reason"])
        plot_validation(self.book.data["evaluations"], self.out_dir / VAL_PLOT_NAME)
        if improved:
            utils.atomic_torch_save({**at.state(), **self.checkpoint_entries()},
                                    self.out_dir / BEST_NAME)
            # the published files are those of best.pt
            report.write_predictions(results, self.out_dir, self.tasks)
            report.plot_confusions(self.book.data["evaluations"][-1]["results"], self.out_dir)
            report.plot_reliability(calibration, self.out_dir)
        report.write_report(self.out_dir, self.book.data)
        return summary_metrics(results)
