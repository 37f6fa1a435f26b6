"""The whole-recording Python entry point: a recording (a path or an mne.io.Raw) and a task in,
a per-window pandas DataFrame, a summary row and the warnings out.

    import inference
    loaded = inference.load_model("best.pt")
    result = inference.analyse_recording(raw, "HMC", loaded, abstain=0.6)
    result.windows.head(); result.summary; result.warnings; result.sleep
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dataset import SAMPLING_RATE
from tasks import Task

from . import agreement as agree
from . import ood, sleep
from . import qc as quality
from .answers import answer_windows
from .loading import LoadedModel, resolve_task
from .recordings import (
    BLOCK_SECONDS,
    Recording,
    RecordingError,
    display_name,
    display_path,
    open_recording,
)

ENVELOPE_WIDTH = 2000       # columns of the overview's min/max envelope


@dataclass
class RecordingResult:
    windows: object             # pandas.DataFrame, one row per window
    summary: dict               # the recordings.csv row
    warnings: list[str]
    annotations: object         # the file's own mne.Annotations (onsets from its start)
    signal: dict                # channels used, sfreq, montage text, filters text
    sleep: dict | None          # hypnogram summary of a sleep-staging task
    task: Task | None = None
    overview: dict = field(default_factory=dict)   # times, mins, maxs of the whole recording
    agreement: dict | None = None   # with known labels: balanced accuracy, kappa, confusion


def envelope(data: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(mins, maxs), each (C, <= width): every column the extremes of its stretch of samples,
    so a spike or a burst of muscle stays as tall as it is and nothing folds into slow waves
    (plain decimation, data[:, ::step], aliases)."""
    data = np.asarray(data)
    if data.shape[-1] <= width:
        return data.copy(), data.copy()
    edges = np.unique(np.linspace(0, data.shape[-1], width + 1).astype(int))[:-1]
    return np.minimum.reduceat(data, edges, axis=-1), np.maximum.reduceat(data, edges, axis=-1)


class _Envelope:
    """The whole recording's min/max envelope, filled block by block."""

    def __init__(self, n_channels: int, n_samples: int, width: int):
        self.edges = np.unique(np.linspace(0, n_samples, width + 1).astype(int))
        self.mins = np.full((n_channels, len(self.edges) - 1), np.inf, dtype=np.float32)
        self.maxs = np.full_like(self.mins, -np.inf)

    def add(self, start: int, data: np.ndarray) -> None:
        bins = np.searchsorted(self.edges, np.arange(start, start + data.shape[1]), "right") - 1
        firsts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        cols = bins[firsts]
        ok = (cols >= 0) & (cols < self.mins.shape[1])
        lo = np.minimum.reduceat(data, firsts, axis=1)[:, ok]
        hi = np.maximum.reduceat(data, firsts, axis=1)[:, ok]
        self.mins[:, cols[ok]] = np.minimum(self.mins[:, cols[ok]], lo)
        self.maxs[:, cols[ok]] = np.maximum(self.maxs[:, cols[ok]], hi)

    def result(self) -> dict:
        filled = np.isfinite(self.mins).all(axis=0)
        centres = (self.edges[:-1] + self.edges[1:]) / 2 / SAMPLING_RATE
        return {"times": centres[filled], "mins": self.mins[:, filled],
                "maxs": self.maxs[:, filled]}


def _signal_info(rec: Recording) -> dict:
    stand_ins = [f"{raw} -> {electrode} (bipolar derivation read as its active electrode)"
                 for raw, electrode in rec.stand_ins]
    return {"channels": list(rec.ch_names), "sfreq": SAMPLING_RATE, "source_sfreq": rec.sfreq,
            "left_out": [{"channel": raw, "reason": why} for raw, why in rec.left_out],
            "montage": "; ".join(stand_ins) or "as recorded (referential)",
            "filters": rec.filters_text(), "window_seconds": rec.window_s,
            "stride_seconds": rec.stride_s, "n_windows": rec.n_windows,
            "seconds": rec.seconds}


def read_signal(source, task, start_s: float, stop_s: float, channels: str = "task",
                loaded: LoadedModel | None = None):
    """(data_uV (C, T), ch_names, sfreq) of [start_s, stop_s): the preprocessing the model
    reads (band-pass, notch, 200 Hz), for drawing a stretch of a long recording."""
    rec = open_recording(source, resolve_task(task, loaded), channels)
    start = max(0, int(round(start_s * SAMPLING_RATE)))
    stop = min(rec.n_out, int(round(stop_s * SAMPLING_RATE)))
    if stop <= start:
        return np.zeros((len(rec.ch_names), 0), np.float32), list(rec.ch_names), SAMPLING_RATE
    data, _, _ = rec.read(start, stop)
    return data.astype(np.float32), list(rec.ch_names), SAMPLING_RATE


def _recording_answer(task: Task, probs: np.ndarray, trusted: np.ndarray):
    """The class of highest mean probability over the trusted windows (clean and certain), or
    every answered window when none is trusted."""
    answered = ~np.isnan(probs).any(axis=1)
    pick = trusted & answered if (trusted & answered).any() else answered
    if not pick.any():
        return None, None
    mean = probs[pick].mean(axis=0)
    return task.label_names[int(mean.argmax())], float(mean.max())


def analyse_recording(source, task, loaded: LoadedModel, *, qc: str = "flag",
                      abstain: float | None = None, strict: bool = False, batch_size: int = 16,
                      channels: str = "task", progress=None, windows=None,
                      max_new_tokens: int | None = None, labels=None, label_map=None,
                      envelope_width: int = ENVELOPE_WIDTH) -> RecordingResult:
    """Answer every window of one recording (or the `windows` indices), streaming it block by
    block. qc "flag" answers flagged windows and marks them, "skip" leaves them unanswered;
    abstain P marks windows whose top probability is below P as uncertain (kept, counted
    apart); strict raises ood.OutOfDistribution when the recording earns a warning.
    labels (a label file or mne.Annotations; default: a Sleep-EDF companion hypnogram, else
    the file's own annotations when label_map is given) and label_map ("DESC=LABEL,..." or a
    dict) give the agreement with known labels.
    Raises RecordingError (a file that cannot be used; the message names it)."""
    import pandas as pd

    if qc not in quality.QC_MODES:
        raise ValueError(f"qc must be one of {', '.join(quality.QC_MODES)}, got {qc!r}")
    if abstain is not None and not (np.isfinite(abstain) and 0 <= abstain <= 1):
        raise ValueError(f"abstain must be a probability in [0, 1], got {abstain!r}")
    task = resolve_task(task, loaded)
    try:
        rec = open_recording(source, task, channels)
        ids = list(range(rec.n_windows)) if windows is None else list(windows)
        probe, _, _ = rec.read(0, min(rec.n_out, int(BLOCK_SECONDS * SAMPLING_RATE)))
        warnings = ood.recording_warnings(rec, task.name, loaded.training_profile.get(task.name),
                                          probe)
        if strict:
            ood.refuse(rec.name, warnings)
        rows, env = _stream(rec, task, loaded, ids, qc, batch_size, progress, max_new_tokens,
                            _Envelope(len(rec.ch_names), rec.n_out, envelope_width))
    except ood.OutOfDistribution:
        raise
    except RecordingError as err:
        raise RecordingError(f"{source_name(source)}: {err}") from None
    table = pd.DataFrame(rows)
    probs = table[[f"prob_{c}" for c in task.label_names]].to_numpy(dtype=float)
    top = np.nanmax(np.where(np.isnan(probs), -1, probs), axis=1)
    answered = ~np.isnan(probs).any(axis=1)
    table["uncertain"] = answered & (top < abstain) if abstain is not None else False
    flagged = table["qc_flags"] != ""
    label, p = _recording_answer(task, probs, ~flagged.to_numpy()
                                 & ~table["uncertain"].to_numpy(bool))
    summary = {"file": rec.name, "path": "" if rec.path is None else display_path(rec.path),
               "status": "ok", "error": "", "task": task.name, "seconds": round(rec.seconds, 3),
               "channels": len(rec.ch_names), "n_windows": len(table),
               "answered": int(answered.sum()), "qc_flagged": int(flagged.sum()),
               "qc_skipped": int((flagged & ~answered).sum()),
               "uncertain": int(table["uncertain"].sum()), "answer": label or "",
               "answer_prob": "" if p is None else round(p, 6),
               "warnings": "; ".join(warnings),
               "calibrated": loaded.temperature(task) is not None}
    for flag in quality.FLAGS:
        summary[f"qc_{flag}"] = int(table["qc_flags"].str.contains(flag).sum())
    sleep_summary = sleep.summary(task, table, rec.stride_s) if sleep.is_sleep_task(task) else None
    known = _known_labels(source, rec, labels, label_map)
    table["known_label"] = ""
    stats = None
    if known is not None:
        mapping = {**agree.default_label_map(task), **(
            label_map if isinstance(label_map, dict) else agree.parse_label_map(label_map, task))}
        truth = agree.window_truth(known, table, mapping)
        table["known_label"] = [task.label_names[t] if t >= 0 else "" for t in truth]
        stats = agree.agreement(task, truth, table)
        summary.update(agreement_balanced_accuracy=stats["balanced_accuracy"],
                       agreement_kappa=stats["kappa"], agreement_n=stats["n"])
    return RecordingResult(table, summary, warnings, rec.annotations, _signal_info(rec),
                           sleep_summary, task, env, stats)


def _known_labels(source, rec: Recording, labels, label_map):
    """The annotations holding a recording's known labels, or None."""
    import mne
    if isinstance(labels, mne.Annotations):
        return labels
    if labels is not None:
        return agree.read_labels(labels)
    found = agree.companion(rec.path) if rec.path is not None else None
    if found is not None:
        return agree.read_labels(found)
    return rec.annotations if label_map else None


def source_name(source) -> str:
    """How a path or an mne.io.Raw is named in messages and tables."""
    filenames = getattr(source, "filenames", None)
    if filenames is not None:
        return display_name(filenames[0]) if filenames and filenames[0] else "raw"
    return display_name(source)


def _stream(rec: Recording, task: Task, loaded: LoadedModel, ids, qc_mode, batch_size,
            progress, max_new_tokens, env: _Envelope):
    bad = quality.bad_intervals(rec.annotations)
    rows, pending = [], []
    temperature = loaded.temperature(task)
    done = 0

    def flush():
        nonlocal done
        todo = [r for r, _ in pending if r["_answer"]]
        for lo in range(0, len(todo), batch_size):
            part = todo[lo:lo + batch_size]
            got = answer_windows(loaded.model, task, [r.pop("_X") for r in part], rec.ch_names,
                                 loaded.device, temperature, max_new_tokens)
            for r, text, label, prob, seen in zip(part, got.texts, got.labels, got.probs,
                                                  got.seconds_seen):
                r.update(generated_text=text, label=label, seconds_seen=seen,
                         label_name=task.label_names[label] if label is not None else "",
                         inference_seconds=got.seconds / len(part))
                r.update({f"prob_{c}": float(v) for c, v in zip(task.label_names, prob)})
        for r, _ in pending:
            r.pop("_X", None)
            r.pop("_answer")
            rows.append(r)
        done += len(pending)
        pending.clear()
        if progress is not None:
            progress(done, len(ids))

    for chunk, starts, X, raws in rec.blocks(ids):
        for k, start, x, raw_uv in zip(chunk, starts, X, raws):
            env.add(k * rec.stride_samples, x)
            flags = quality.window_flags(raw_uv, rec.sfreq, x, rec.signal.mains_hz,
                                    quality.overlaps(bad, start, start + rec.window_s))
            row = {"file": rec.name, "window": k, "start_s": start, "duration_s": rec.window_s,
                   "generated_text": "", "label": None, "label_name": "",
                   **{f"prob_{c}": np.nan for c in task.label_names},
                   "uncertain": False, "qc_flags": ";".join(flags), "seconds_seen": 0,
                   "inference_seconds": 0.0, "_X": x,
                   "_answer": not (flags and qc_mode == "skip")}
            pending.append((row, None))
        if len(pending) >= batch_size:
            flush()
    flush()
    return rows, env.result()
