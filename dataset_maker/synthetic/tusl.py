"""Synthetic TUSL: blocks of background, seizure and slowing (.tse_agg) per subject."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_maker import prepare_TUSL
from dataset_maker import synthetic_signals as sig
from dataset_maker.synthetic import base


def tusl_plan(scale):
    window = prepare_TUSL.WINDOW_SECONDS
    return (base.scaled_count(9, scale, 5), base.scaled_count(3, scale, 1),
            base.scaled_seconds(30, scale, window, step=window))


def make_tusl(root: Path, seed: int, scale: float) -> list[base.Written]:
    """Blocks of background, seizure and slowing (multiples of the 10 s window) in every
    subject."""
    n_subjects, blocks_per_class, block_s = tusl_plan(scale)
    written = []
    for _, rng, subject, sid in base.tuh_subjects(seed, "TUSL", n_subjects):
        labels = rng.permutation(np.repeat(list(prepare_TUSL.LABELS), blocks_per_class))
        lengths = block_s + prepare_TUSL.WINDOW_SECONDS * rng.integers(0, 2, len(labels))
        edges = np.r_[0, np.cumsum(lengths)]
        seconds = int(edges[-1])
        state_of = {"bckg": "normal", "seiz": "seizure_bg", "slow": "slowing"}
        plan = [(a, b, base.STATES[state_of[lab]])
                for a, b, lab in zip(edges[:-1], edges[1:], labels)]

        def seizures(scalp, x):
            for a, b, lab in zip(edges[:-1], edges[1:], labels):
                if lab != "seiz":
                    continue
                focal = rng.random() < 0.5
                gains = scalp.lateral(rng.choice([-1, 1]), 0.3) if focal else scalp.maps["broad"]
                wave = sig.seizure_rhythm(scalp.fs, b - a, rng.uniform(6.5, 8.0),
                                          rng.uniform(3.0, 4.5))
                sig.add_transient(x, scalp.fs, a, wave, gains * rng.uniform(120, 200))

        path = root / sid / "s001_2012" / "01_tcp_ar" / f"{sid}_s001_t000.edf"
        written.append(base.write_tuh_recording(path, rng, subject, "TUSL", seconds, plan,
                                                extra=seizures))
        rows = [f"{a:.4f} {b:.4f} {lab} 1.0000" for a, b, lab in zip(edges[:-1], edges[1:], labels)]
        base.write_text(path.with_suffix(".tse_agg"),
                        "version = tse_v1.0.0\n\n" + "\n".join(rows) + "\n")
    return written
