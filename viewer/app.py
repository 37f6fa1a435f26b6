"""The viewer's HTTP API and page (FastAPI; the OpenAPI docs are at /docs).

Every answer is JSON; errors are {"detail": message} with 400 (bad input), 404 (unknown
recording, job or file), 409 (results asked before the job is done), 413 (upload too large),
422 (not readable EEG) or 503 with Retry-After (analysis queue full).
"""
from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from viewer.files import FileProblem, RecordingFolder, read_annotations
from viewer.jobs import RESULT_FILE, AnalysisError, JobQueue, QueueFull
from viewer.jobs import Request as JobRequest

STATIC = Path(__file__).parent / "static"
QC_MODES = ("flag", "skip")
MAX_PAGE_SECONDS = 600.0
MAX_PAGE_WIDTH = 8000
# Signal pages read at once; more wait their turn (20 clients' 100 pages at once peaked at 851 MB
# with the request thread pool's 40 readers: bench/bench_serve.py).
PAGE_READERS = 4


@dataclass
class ViewerConfig:
    data_dir: Path
    out_dir: Path                 # uploads/ and results/ live here
    max_upload_mb: float = 512.0
    max_queued: int = 8
    # Host headers answered (None: any). On loopback serve.py names only loopback ones, so a web
    # page elsewhere cannot reach the API through a DNS name rebound to 127.0.0.1.
    allowed_hosts: list[str] | None = None


class AnalysisBody(BaseModel):
    recording: str = Field(description="recording id, as GET /api/recordings lists it")
    task: str = Field(description="task name, as GET /api/tasks lists it")
    qc: str = Field("flag", description="flag: answer flagged windows and mark them; skip: "
                                        "leave them unanswered")
    abstain: float | None = Field(None, description="mark windows whose top probability is "
                                                    "below this as uncertain (0..1)")


def host_name(header: str) -> str:
    """The name in a Host header without its port: '[::1]:8000' -> '[::1]'."""
    if header.startswith("["):
        return header.split("]")[0] + "]"
    return header.split(":")[0] if header.count(":") <= 1 else header


def _bad(message: str) -> FileProblem:
    return FileProblem(400, message)


def create_app(config: ViewerConfig, engine) -> FastAPI:
    """The app over one engine (viewer.analysis.Engine, or any object with its `tasks`,
    `identity`, `describe`, `run` and `signal_page`)."""
    folder = RecordingFolder(config.data_dir, Path(config.out_dir) / "uploads",
                             int(config.max_upload_mb * 2**20))
    jobs = JobQueue(engine.run, Path(config.out_dir) / "results", max_queued=config.max_queued)
    app = FastAPI(title="NeuroLM viewer", description=__doc__)
    app.state.folder, app.state.jobs, app.state.engine = folder, jobs, engine
    page_readers = threading.BoundedSemaphore(PAGE_READERS)
    if config.allowed_hosts:
        @app.middleware("http")
        async def known_hosts_only(request: Request, call_next):
            host = request.headers.get("host", "")
            if host_name(host) not in config.allowed_hosts:
                return JSONResponse({"detail": f"host {host!r} is not served here (the viewer "
                                               "answers only its loopback names)"},
                                    status_code=400)
            return await call_next(request)

    @app.exception_handler(FileProblem)
    async def file_problem(_, err: FileProblem):
        return JSONResponse({"detail": str(err)}, status_code=err.status)

    @app.exception_handler(AnalysisError)
    async def unreadable(_, err: AnalysisError):
        return JSONResponse({"detail": str(err)}, status_code=422)

    @app.exception_handler(QueueFull)
    async def queue_full(_, err: QueueFull):
        return JSONResponse({"detail": str(err)}, status_code=503,
                            headers={"Retry-After": str(err.retry_after_s)})

    @app.exception_handler(RequestValidationError)
    async def invalid(_, err: RequestValidationError):
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            parts.append(f"{where}: {e.get('msg')}")
        return JSONResponse({"detail": "; ".join(parts) or "bad request"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_, err: StarletteHTTPException):
        return JSONResponse({"detail": str(err.detail)}, status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    def job_or_404(job_id: str):
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"job {job_id!r}: no such job (the server forgets jobs when "
                                   "it restarts; start the analysis again, its result is kept)")
        return job

    def task_or_400(name: str):
        try:
            return engine.task(name)
        except KeyError as err:
            raise _bad(str(err.args[0])) from None

    # ------------------------------------------------------------------ page

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------------ API

    @app.get("/api/status")
    def status():
        return {**engine.describe(), "queued": jobs.queued(), "data_dir": str(folder.data_dir),
                "max_upload_bytes": folder.max_upload_bytes}

    @app.get("/api/tasks")
    def tasks():
        return engine.describe()["tasks"]

    @app.get("/api/recordings")
    def recordings():
        return [r.to_dict() for r in folder.listing()]

    @app.get("/api/recordings/{recording_id:path}")
    def recording(recording_id: str):
        return folder.info(recording_id, folder.resolve(recording_id)).to_dict()

    @app.post("/api/uploads", status_code=201)
    async def upload(request: Request, filename: str):
        """The recording's bytes as the request body (Content-Type application/octet-stream,
        not multipart), its name in ?filename=."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/octet-stream":   # what a cross-site form cannot send unasked
            raise _bad(f"upload {filename!r}: send the file's bytes as "
                       f"application/octet-stream (got {kind or 'no content type'})")
        declared = request.headers.get("content-length")
        up = folder.start_upload(filename, int(declared) if declared and declared.isdigit()
                                 else None)
        try:
            async for chunk in request.stream():
                up.write(chunk)
        except BaseException:
            up.abort()
            raise
        return (await run_in_threadpool(up.finish)).to_dict()

    def job_request(body: AnalysisBody) -> JobRequest:
        path = folder.resolve(body.recording)
        task_or_400(body.task)
        if body.qc not in QC_MODES:
            raise _bad(f"qc {body.qc!r}: must be one of {', '.join(QC_MODES)}")
        if body.abstain is not None and not (math.isfinite(body.abstain)
                                             and 0 <= body.abstain <= 1):
            raise _bad(f"abstain {body.abstain}: must be a probability in 0..1")
        info = folder.info(body.recording, path)
        if info.error:
            raise AnalysisError(f"{body.recording}: not a readable EEG file ({info.error})")
        stat = path.stat()
        return JobRequest(body.recording, path, body.task, body.qc, body.abstain,
                          (str(path), stat.st_size, stat.st_mtime_ns, *engine.identity))

    @app.post("/api/analyses", status_code=202)
    def start_analysis(body: AnalysisBody):
        """Queue an analysis (or join the same one queued or running, or return its kept
        result at once); poll GET /api/jobs/{id}."""
        return jobs.submit(job_request(body)).to_dict()

    @app.get("/api/analyses/kept")
    def kept_analysis(recording: str, task: str, qc: str = "flag", abstain: float | None = None):
        """The kept result of this analysis as a done job, without starting anything; 404 when
        it has not run (with these options, on this file and model)."""
        job = jobs.kept(job_request(AnalysisBody(recording=recording, task=task, qc=qc,
                                                 abstain=abstain)))
        if job is None:
            raise HTTPException(404, f"no kept analysis of {recording} for task {task} with "
                                     "these options")
        return job.to_dict()

    @app.get("/api/jobs/{job_id}")
    def job_status(job_id: str):
        return job_or_404(job_id).to_dict()

    @app.delete("/api/jobs/{job_id}")
    def cancel_job(job_id: str):
        job_or_404(job_id)
        return jobs.cancel(job_id).to_dict()

    @app.get("/api/jobs/{job_id}/results")
    def job_results(job_id: str):
        job = job_or_404(job_id)
        if job.state != "done":
            raise HTTPException(409, f"job {job_id}: {job.state}"
                                   + (f" ({job.error})" if job.error else "")
                                   + "; results exist only for a done job")
        text = (jobs.result_dir(job) / RESULT_FILE).read_text(encoding="utf-8")
        return JSONResponse({**json.loads(text), "job": job.to_dict()})

    @app.get("/api/jobs/{job_id}/files/{name}")
    def job_file(job_id: str, name: str):
        job = job_or_404(job_id)
        if job.state != "done":
            raise HTTPException(409, f"job {job_id}: {job.state}; no files yet")
        result = json.loads((jobs.result_dir(job) / RESULT_FILE).read_text(encoding="utf-8"))
        if name not in result["files"]:   # only the files the analysis wrote, by exact name
            raise HTTPException(404, f"job {job_id}: no file {name!r}; it has "
                                   f"{', '.join(result['files'])}")
        return FileResponse(jobs.result_dir(job) / name, filename=name)

    @app.get("/api/signal")
    def signal(recording: str, task: str, start_s: float = 0.0, duration_s: float = 10.0,
               width: int = 1000):
        """Channels x `width` columns of min/max envelope (microvolts) of the task's
        preprocessed signal from start_s for duration_s, and the file's annotations there."""
        path = folder.resolve(recording)
        task_or_400(task)
        if not (math.isfinite(start_s) and start_s >= 0):
            raise _bad(f"start_s {start_s}: must be a finite number >= 0")
        if not (math.isfinite(duration_s) and 0 < duration_s <= MAX_PAGE_SECONDS):
            raise _bad(f"duration_s {duration_s}: must be in (0, {MAX_PAGE_SECONDS:g}]")
        if not 1 <= width <= MAX_PAGE_WIDTH:
            raise _bad(f"width {width}: must be in 1..{MAX_PAGE_WIDTH}")
        info = folder.info(recording, path)
        if info.error:
            raise AnalysisError(f"{recording}: not a readable EEG file ({info.error})")
        if start_s >= info.duration_s:
            raise _bad(f"start_s {start_s}: beyond the recording's end ({info.duration_s:.1f} s)")
        stop_s = min(start_s + duration_s, info.duration_s)
        with page_readers:   # bounded: each read holds a filtered stretch of the recording
            page = engine.signal_page(path, task, start_s, stop_s, width)
        page["annotations"] = [a for a in read_annotations(path)
                               if a["onset_s"] < stop_s and a["onset_s"] + a["duration_s"]
                               >= start_s]
        page["duration_total_s"] = info.duration_s
        return page

    return app
