"""Raw EEG -> sample files: one prepare script per dataset, the shared core in common.py.

A built-in task's preprocessing (channels, window, stride, band, mains) is declared once, in
tasks/builtin.py; each prepare_<X>.py reads it from there and adds what only its dataset's files
need (label codes, layout on disk, splits)."""

# The prepare script of each dataset (demo.py and make_synthetic run or read them by this name).
PREPARE_SCRIPTS = {"TUH_pretrain": "prepare_TUH_pretrain", "TUAB": "prepare_TUAB",
                   "TUEV": "prepare_TUEV", "TUSL": "prepare_TUSL", "HMC": "prepare_HMC",
                   "SEED": "prepare_SEED", "Workload": "prepare_workload"}
