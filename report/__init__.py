"""What a person reads of an evaluation: the per-sample predictions CSVs, the confusion-matrix
PNGs, and `report.md` / `report.html` beside results.json. the evaluation package calls it at every
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
from report.document import REPORT_HTML_NAME, REPORT_NAME, report_blocks, write_report
from report.figures import (
    CALIBRATION_DIR,
    CONFUSION_DIR,
    confusion_png,
    plot_confusions,
    plot_reliability,
    reliability_png,
)
from report.predictions import (
    LEVELS,
    MODES,
    PREDICTION_COLUMNS,
    PREDICTIONS_DIR,
    predictions_path,
    read_predictions,
    write_predictions,
)
from report.tables import metrics_rows

__all__ = ["CALIBRATION_DIR", "CONFUSION_DIR", "LEVELS", "MODES", "PREDICTIONS_DIR",
           "PREDICTION_COLUMNS", "REPORT_HTML_NAME", "REPORT_NAME", "confusion_png",
           "metrics_rows", "plot_confusions", "plot_reliability", "predictions_path",
           "read_predictions", "reliability_png", "report_blocks", "write_predictions",
           "write_report"]
