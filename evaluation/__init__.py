"""Stage 4 evaluation: answering, metrics, every task's evaluation, and what a training run
keeps of it (results.json, best.pt, the validation plot, the printed table).

metrics: window metrics, confusion matrices, aggregation and bootstrap (numpy / scikit-learn);
run: answering a batch and evaluating tasks over datasets; selection: best.pt selection, the
results book and the training-time evaluation; cli: `python -m evaluation compare|export`.
"""
import setup_check  # noqa: F401  (first: `python -m evaluation` outside the .venv is one line)

# isort: split

from evaluation.cli import compare_runs, export, main, model_card
from evaluation.metrics import (
    BOOTSTRAP_SEED,
    CI_LEVEL,
    INVALID,
    LEVELS,
    N_BOOTSTRAP,
    aggregate,
    analyse_mode,
    bootstrap_intervals,
    confusion_matrix,
    confusion_metrics,
    get_metrics,
    weighted_aucs,
)
from evaluation.record import ResultsError, read_run
from evaluation.run import (
    EVAL_MODES,
    ORIGIN_KEYS,
    PREDICTIONS,
    SPLITS_EVALUATED,
    data_counts,
    evaluate_task,
    evaluate_tasks,
    evaluation_sets,
    evenly_spaced,
)
from evaluation.selection import (
    BEST_NAME,
    MAX_INVALID_RATE,
    RESULTS_NAME,
    SELECTION,
    SELECTION_RULE,
    VAL_PLOT_NAME,
    ResultsBook,
    TrainingEvaluation,
    format_table,
    mean_val_balanced_accuracy,
    plot_validation,
    publishable,
    selection,
    selection_reason,
    selection_score,
    summary_metrics,
    worst_invalid_rate,
    write_results,
)

__all__ = [
    "BEST_NAME", "BOOTSTRAP_SEED", "CI_LEVEL", "EVAL_MODES", "INVALID", "LEVELS",
    "MAX_INVALID_RATE", "N_BOOTSTRAP", "ORIGIN_KEYS", "PREDICTIONS", "RESULTS_NAME", "SELECTION",
    "SELECTION_RULE", "SPLITS_EVALUATED", "VAL_PLOT_NAME", "ResultsBook", "TrainingEvaluation",
    "aggregate", "analyse_mode", "bootstrap_intervals", "compare_runs", "confusion_matrix",
    "confusion_metrics", "data_counts", "evaluate_task", "evaluate_tasks", "evaluation_sets",
    "evenly_spaced", "export", "format_table", "get_metrics", "main",
    "mean_val_balanced_accuracy", "model_card", "plot_validation",
    "publishable", "read_run", "ResultsError", "selection", "selection_reason", "selection_score",
    "summary_metrics", "weighted_aucs", "worst_invalid_rate",
    "write_results",
]
