"""Analyses run one at a time by one worker thread over one model, from a bounded queue.

A job is identified by what determines its answer (the recording's bytes as seen by size and
mtime, the task, the options and the model), so the same request while one is queued or running
joins it, and a finished one is read back from its folder on disk at once, also after a restart.
A full queue refuses with QueueFull (the app answers 503 with a retry hint): nothing is dropped
silently. A runner that raises, or a cancelled job, leaves the job `failed` / `cancelled` with its
message, and the worker goes on with the next one.
"""
from __future__ import annotations

import hashlib
import json
import queue
import shutil
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

RESULT_FILE = "result.json"
STATES = ("queued", "running", "done", "failed", "cancelled")


class QueueFull(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"the analysis queue is full; retry in about {retry_after_s} s")
        self.retry_after_s = retry_after_s


class JobCancelled(Exception):
    pass


class AnalysisError(Exception):
    """An expected failure (unreadable recording, input refused): its message says it all."""


@dataclass(frozen=True)
class Request:
    """What an analysis is asked to do; `identity` pins everything its answer depends on."""
    recording: str            # recording id
    path: Path
    task: str
    qc: str
    abstain: float | None
    identity: tuple = ()

    def key(self) -> str:
        text = json.dumps([self.task, self.qc, self.abstain, *map(str, self.identity)])
        return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class Job:
    request: Request
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    state: str = "queued"
    done: int = 0
    total: int | None = None
    error: str | None = None
    cached: bool = False
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_requested: bool = False

    def to_dict(self) -> dict:
        r = self.request
        return {"id": self.id, "state": self.state, "recording": r.recording, "task": r.task,
                "qc": r.qc, "abstain": r.abstain, "done": self.done, "total": self.total,
                "error": self.error, "cached": self.cached, "created": self.created,
                "started": self.started, "finished": self.finished}


# runner(request, out_dir, progress(done, total)) writes RESULT_FILE and the downloads in out_dir
Runner = Callable[[Request, Path, Callable[[int, int], None]], None]


class JobQueue:
    def __init__(self, runner: Runner, results_dir: Path, max_queued: int = 8,
                 max_records: int = 1000):
        self.runner = runner
        self.results_dir = Path(results_dir)
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.max_records = max_records
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_queued)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._active: dict[str, Job] = {}      # key -> queued or running job
        self._lock = threading.Lock()
        self._durations: list[float] = []
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._work, name="analysis-worker", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ requests

    def result_dir(self, job: Job) -> Path:
        return self.results_dir / job.request.key()

    def kept(self, request: Request) -> Job | None:
        """A done job over the kept result of this request, or None when there is none."""
        with self._lock:
            return self._kept(request)

    def _kept(self, request: Request) -> Job | None:
        if not (self.results_dir / request.key() / RESULT_FILE).is_file():
            return None
        job = Job(request, state="done", cached=True, finished=time.time())
        self._remember(job)
        return job

    def submit(self, request: Request) -> Job:
        key = request.key()
        with self._lock:
            if key in self._active:
                return self._active[key]
            if (job := self._kept(request)) is not None:
                return job
            job = Job(request)
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise QueueFull(self.retry_after_s()) from None
            self._active[key] = job
            self._remember(job)
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.state in ("queued", "running"):
                job.cancel_requested = True
                if job.state == "queued":
                    self._finish(job, "cancelled", "cancelled before it started")
            return job

    def queued(self) -> int:
        return self._queue.qsize()

    def retry_after_s(self) -> int:
        """A retry hint: the queue's length times the mean duration of recent jobs."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 10.0
        return max(1, int(round(mean * (self._queue.qsize() + 1))))

    def close(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ worker

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        while len(self._jobs) > self.max_records:   # forget the oldest finished records
            oldest = next((j for j in self._jobs.values() if j.state not in ("queued", "running")),
                          None)
            if oldest is None:
                break
            del self._jobs[oldest.id]

    def _finish(self, job: Job, state: str, error: str | None = None) -> None:
        job.state, job.error, job.finished = state, error, time.time()
        self._active.pop(job.request.key(), None)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._lock:
                if job.state != "queued":   # cancelled while it waited
                    continue
                job.state, job.started = "running", time.time()
            self._run(job)

    def _run(self, job: Job) -> None:
        final = self.result_dir(job)
        tmp = self.results_dir / f".tmp-{job.id}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

        def progress(done: int, total: int) -> None:
            job.done, job.total = int(done), int(total)
            if job.cancel_requested:
                raise JobCancelled()

        try:
            self.runner(job.request, tmp, progress)
            if not (tmp / RESULT_FILE).is_file():
                raise RuntimeError(f"the analysis wrote no {RESULT_FILE}")
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)   # atomic: a folder with result.json is always complete
            state, error = "done", None
        except JobCancelled:
            state, error = "cancelled", "cancelled while running"
        except BaseException as err:  # any failure is the job's, never the server's
            lines = str(err).strip().splitlines()
            state, error = "failed", (lines[0] if lines else type(err).__name__)
            print(f"analysis {job.id} ({job.request.recording}, {job.request.task}) failed: "
                  f"{error}", file=sys.stderr)
            if not isinstance(err, AnalysisError):
                traceback.print_exc()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        with self._lock:
            if job.started is not None:
                self._durations = (self._durations + [time.time() - job.started])[-20:]
            self._finish(job, state, error)
