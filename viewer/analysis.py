"""The viewer's one contact with the model: the whole-recording path of `inference/`.

`Engine` holds the one loaded model; its `run` is the job queue's runner (the same
`analyse_recording` the command line calls) and `signal_page` draws on the same preprocessing the
model read (`inference.read_signal`), decimated by min/max envelope (`inference.envelope`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from inference.annotations import write_all as write_annotation_files
from utils import UserError
from viewer.files import read_annotations
from viewer.jobs import RESULT_FILE, AnalysisError, Request

WINDOWS_CSV = "windows.csv"
RECORDINGS_CSV = "recordings.csv"


def _plain(value):
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def task_info(task) -> dict:
    return {"name": task.name, "question": task.prompt, "classes": list(task.label_names),
            "source": task.source, "window_seconds": task.window_seconds}


class Engine:
    """One model in memory (inference.load_model), its tasks, and the two things the viewer
    asks of it."""

    def __init__(self, model_path, tokenizer_path=None, device: str = "auto", base_folder=None):
        from inference import load_model
        self.model_path = Path(model_path)
        self.loaded = load_model(str(model_path), tokenizer_path, device=device,
                                 base_folder=base_folder)
        stat = self.model_path.stat()
        self.identity = (str(self.model_path.resolve()), stat.st_size, stat.st_mtime_ns,
                         str(tokenizer_path))

    @property
    def tasks(self) -> dict:
        return dict(self.loaded.tasks)

    def describe(self) -> dict:
        return {"model_path": str(self.model_path), "device": str(self.loaded.device),
                "tasks": [task_info(t) for t in self.tasks.values()]}

    def task(self, name: str):
        tasks = self.tasks
        if name not in tasks:
            raise KeyError(f"unknown task {name!r}; this model knows {', '.join(tasks)}")
        return tasks[name]

    def run(self, request: Request, out_dir: Path, progress) -> None:
        """Answer every window of the recording and write result.json and the downloads."""
        from inference import analyse_recording
        try:
            result = analyse_recording(request.path, self.task(request.task), self.loaded,
                                       qc=request.qc, abstain=request.abstain,
                                       progress=progress)
        except UserError as err:   # the input's fault: its message says why
            raise AnalysisError(str(err)) from None
        write_result(result, self.task(request.task), request, out_dir)

    def signal_page(self, path: Path, task_name: str, start_s: float, stop_s: float,
                    width: int) -> dict:
        from inference import envelope, read_signal
        try:
            data, ch_names, sfreq = read_signal(path, self.task(task_name), start_s, stop_s,
                                                loaded=self.loaded)
        except UserError as err:
            raise AnalysisError(str(err)) from None
        mins, maxs = envelope(np.asarray(data), width)
        return {"channels": list(ch_names), "sfreq": float(sfreq), "start_s": start_s,
                "stop_s": start_s + np.asarray(data).shape[1] / float(sfreq),
                "width": int(np.asarray(mins).shape[1]), "unit": "uV",
                "mins": np.round(np.asarray(mins, float), 2).tolist(),
                "maxs": np.round(np.asarray(maxs, float), 2).tolist()}


def write_result(result, task, request: Request, out_dir: Path) -> None:
    """result.json (what the page reads) beside windows.csv, recordings.csv and the annotation
    files, in the job's temporary folder (the queue renames it into place)."""
    from inference.outputs import RunWriter

    windows = result.windows
    writer = RunWriter(out_dir, task.label_names)   # the command line's columns and cells
    writer.add(result.summary, windows)
    writer.close()
    annotation_files = write_annotation_files(out_dir, Path(request.path).name, result)
    record = {
        "recording": request.recording, "task": task_info(task), "qc": request.qc,
        "abstain": request.abstain,
        "prob_columns": [c for c in windows.columns if c.startswith("prob_")],
        "windows": windows.to_dict(orient="records"),
        "summary": result.summary, "warnings": list(result.warnings),
        "signal": result.signal, "sleep": result.sleep,
        "annotations": read_annotations(Path(request.path)),   # the file's own, as on pages
        "files": [WINDOWS_CSV, RECORDINGS_CSV, *annotation_files],
    }
    (out_dir / RESULT_FILE).write_text(json.dumps(_plain(record)), encoding="utf-8")
