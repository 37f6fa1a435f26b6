"""What a run over many recordings writes: one folder per recording named after it, one
recordings.csv (a row per recording, unreadable ones with their error) and one windows.csv (a
row per window across recordings, with its file). Every file is written atomically; windows.csv
grows as the recordings are answered and is renamed into place when the run ends."""
from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import numpy as np

from utils import UserError, atomic_write, json_safe, write_json

from .qc import FLAGS
from .recordings import display_path
from .sleep import class_time

RECORDING_COLUMNS = ["file", "path", "status", "error", "task", "seconds", "channels",
                     "n_windows", "answered", "qc_flagged", "qc_skipped", "uncertain", "answer",
                     "answer_prob", "calibrated", "warnings"] + [f"qc_{f}" for f in FLAGS] + [
                     "agreement_balanced_accuracy", "agreement_kappa", "agreement_n"]
WINDOW_BASE = ["file", "window", "start_s", "duration_s", "generated_text", "label",
               "label_name"]
WINDOW_TAIL = ["known_label", "uncertain", "qc_flags", "inference_seconds"]


def window_columns(label_names) -> list[str]:
    return WINDOW_BASE + [f"prob_{c}" for c in label_names] + WINDOW_TAIL


def folder_name(name: str) -> str:
    """A recording's folder: its name without the suffix, characters a file system may refuse
    replaced."""
    stem = name[:-len(Path(name).suffix)] if Path(name).suffix else name
    return re.sub(r'[\\/:*?"<>|]', "_", stem).strip(". ") or "recording"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.6g}"
    return str(value)


class RunWriter:
    """The output folder of one run over many recordings."""

    def __init__(self, out_dir, label_names):
        self.out_dir = Path(out_dir)
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"--out_dir {out_dir}: cannot create it: {err}") from None
        self.columns = window_columns(label_names)
        self.rows: list[dict] = []
        self.folders: set[str] = set()
        self._tmp = self.out_dir / f".windows.csv.part{os.getpid()}"
        self._file = open(self._tmp, "w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(self.columns)

    def folder(self, name: str) -> Path:
        """A new folder for a recording; a second recording of the same name gets _2, _3 ..."""
        base = folder_name(name)
        candidate, n = base, 1
        while candidate in self.folders:
            n += 1
            candidate = f"{base}_{n}"
        self.folders.add(candidate)
        path = self.out_dir / candidate
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add(self, summary: dict, windows=None) -> None:
        self.rows.append(summary)
        if windows is not None:
            for row in windows[self.columns].itertuples(index=False):
                self._csv.writerow([_cell(v) for v in row])
            self._file.flush()

    def close(self) -> list[str]:
        """Rename windows.csv into place and write recordings.csv; their names."""
        self._file.close()
        os.replace(self._tmp, self.out_dir / "windows.csv")
        columns = RECORDING_COLUMNS + sorted({k for r in self.rows for k in r}
                                             - set(RECORDING_COLUMNS))

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                out = csv.writer(f)
                out.writerow(columns)
                for row in self.rows:
                    out.writerow([_cell(row.get(c)) for c in columns])
        atomic_write(self.out_dir / "recordings.csv", write)
        return ["recordings.csv", "windows.csv"]

    def abandon(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


def error_row(name: str, path, task_name: str, error: str, status: str = "error") -> dict:
    return {"file": name, "path": display_path(path), "status": status, "error": error,
            "task": task_name}


def write_answers(folder: Path, result, extra: dict | None = None) -> str:
    """answers.json of a recording: its summary, warnings, signal, sleep statistics, and one
    record per window."""
    records = json.loads(result.windows.to_json(orient="records"))
    payload = {"file": result.summary["file"], "source": result.summary["path"],
               "task": result.task.name, "prompt": result.task.prompt,
               "channels": result.signal["channels"], "left_out": result.signal["left_out"],
               "window_seconds": result.signal["window_seconds"],
               "stride_seconds": result.signal["stride_seconds"],
               "n_windows": result.signal["n_windows"], "signal": result.signal,
               "summary": result.summary, "warnings": result.warnings, "sleep": result.sleep,
               "agreement": result.agreement,
               "class_time": class_time(result.task, result.windows,
                                        result.signal["stride_seconds"]),
               **(extra or {}), "windows": records}
    write_json(folder / "answers.json", json_safe(payload), indent=2)
    return "answers.json"
