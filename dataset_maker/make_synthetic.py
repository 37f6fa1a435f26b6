"""Synthetic raw EEG in the layouts and file formats of the seven NeuroLM datasets (one maker
per dataset in dataset_maker/synthetic/).

The embedded default data of the project: with no access to TUH, HMC, SEED or EEGMAT, this writes
small look-alike raw trees (EDF files, .rec, .tse_agg, _sleepscoring.txt, trials.json) that the
prepare scripts read exactly as they read the real datasets (docs/INTERFACES.md, "Raw layouts").
Labels are made learnable: each class has its own strong, consistent spectral/topographic
signature (slowing for abnormal, frontal theta for workload, stage rhythms for sleep, ...),
varied a little per subject.

    python dataset_maker/make_synthetic.py --out_dir data/raw --seed 0 [--scale 1.0]

Deterministic: the same seed and scale give the same bytes. Every recording draws from its own
random stream, so --datasets picks a subset without changing what the others contain.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)
except ModuleNotFoundError:
    sys.exit("error: not set up: run `bash scripts/setup_env.sh`, then `source .venv/bin/activate`")
# isort: split

from dataset_maker.synthetic.base import (  # noqa: F401  (the names tests and benches use)
    DATASETS,
    EEGMAT_ELECTRODES,
    HMC_EEG,
    SEED_CHANNELS,
    SEED_HZ,
    TUH_ELECTRODES,
    TUH_HZ,
    Written,
    tuh_subject_id,
)
from dataset_maker.synthetic.hmc import make_hmc
from dataset_maker.synthetic.seed import make_seed, seed_trials  # noqa: F401
from dataset_maker.synthetic.tuab import (  # noqa: F401
    make_tuab,
    tuab_plan,
    write_tuab_recording,
)
from dataset_maker.synthetic.tuev import make_tuev
from dataset_maker.synthetic.tuh_pretrain import make_tuh_pretrain
from dataset_maker.synthetic.tusl import make_tusl
from dataset_maker.synthetic.workload import make_workload

MAKERS = {"TUH_pretrain": make_tuh_pretrain, "TUAB": make_tuab, "TUEV": make_tuev,
          "TUSL": make_tusl, "HMC": make_hmc, "SEED": make_seed, "Workload": make_workload}


def make_synthetic(out_dir, seed: int = 0, scale: float = 1.0,
                   datasets=None) -> dict[str, list[Written]]:
    """Write the raw trees of the chosen datasets under out_dir/<name>; returns the EDF files."""
    if scale <= 0:
        raise ValueError(f"--scale must be positive, got {scale}")
    unknown = set(datasets or ()) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown dataset(s) {sorted(unknown)}; choose from {list(DATASETS)}")
    out_dir = Path(out_dir)
    return {name: MAKERS[name](out_dir / name, seed, scale) for name in (datasets or DATASETS)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out_dir", required=True, help="writes OUT_DIR/<dataset>/... raw trees")
    parser.add_argument("--seed", type=int, default=0, help="same seed -> same bytes")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies subject counts and recording lengths (small floors keep "
                             "every class in every split)")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    args = parser.parse_args(argv)
    written = make_synthetic(args.out_dir, args.seed, args.scale, args.datasets)
    total_h = 0.0
    for name, files in written.items():
        hours = sum(w.seconds for w in files) / 3600
        total_h += hours
        print(f"{name:13s} {len(files):3d} EDF files {hours:6.2f} h  "
              f"-> {Path(args.out_dir) / name}")
    print(f"{'total':13s} {sum(map(len, written.values())):3d} EDF files {total_h:6.2f} h")


if __name__ == "__main__":
    main()
