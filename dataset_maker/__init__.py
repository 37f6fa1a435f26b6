"""Raw EEG -> sample files: one prepare script per dataset, the shared core in common.py.

Each prepare_<X>.py is the one home of its dataset's facts (channels, label codes, mains
frequency, window seconds); make_synthetic.py and simple_inference.py read them from there."""

import importlib

# The prepare script of each dataset, by the name make_synthetic and the task table use.
PREPARE_SCRIPTS = {"TUH_pretrain": "prepare_TUH_pretrain", "TUAB": "prepare_TUAB",
                   "TUEV": "prepare_TUEV", "TUSL": "prepare_TUSL", "HMC": "prepare_HMC",
                   "SEED": "prepare_SEED", "Workload": "prepare_workload"}


def prepare_module(name: str):
    """The prepare script module of a dataset named as in PREPARE_SCRIPTS."""
    return importlib.import_module(f"{__name__}.{PREPARE_SCRIPTS[name]}")
