"""The viewer's HTTP API (viewer/app.py) through FastAPI's test client: every endpoint, every
error status, path traversal, uploads that are not EEG, failed / cancelled jobs and a full queue.

These tests give the app a scripted engine (the runner and signal reader it is built with), so
each queue state can be held open on purpose; tests/test_viewer_model.py runs the same app on a
real tiny model through `inference/`.
"""
from __future__ import annotations

import json
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from inference_fixtures import WORKLOAD_EDF_NAMES
from raw_fixtures import write_edf

import serve
from tasks import BUILTIN_TASKS as TASKS
from viewer import ViewerConfig, create_app
from viewer.analysis import task_info
from viewer.files import read_header
from viewer.jobs import RESULT_FILE, AnalysisError

SECONDS = 40


class ScriptedEngine:
    """The engine interface of viewer.analysis.Engine with a scripted analysis: `gate` holds a
    job running until set, `fail` makes it raise."""

    identity = ("scripted",)

    def __init__(self):
        self.tasks = {"Workload": TASKS["Workload"], "HMC": TASKS["HMC"]}
        self.gate = threading.Event()
        self.gate.set()
        self.fail: BaseException | None = None
        self.runs = 0

    def describe(self):
        return {"model_path": "scripted", "device": "cpu",
                "tasks": [task_info(t) for t in self.tasks.values()]}

    def task(self, name):
        if name not in self.tasks:
            raise KeyError(f"unknown task {name!r}")
        return self.tasks[name]

    def run(self, request, out_dir: Path, progress):
        self.runs += 1
        duration = read_header(request.path)[0]
        starts = np.arange(0, duration - 3.999, 4.0)
        for i in range(len(starts)):
            progress(i, len(starts))
            while not self.gate.wait(0.01):
                progress(i, len(starts))      # where a cancelled job stops
        if self.fail is not None:
            raise self.fail
        windows = pd.DataFrame({"file": request.recording, "window": range(len(starts)),
                                "start_s": starts, "duration_s": 4.0, "generated_text": "Yes",
                                "label": 1, "label_name": "arithmetic", "prob_rest": 0.2,
                                "prob_arithmetic": 0.8, "uncertain": False, "qc_flags": ""})
        windows.to_csv(out_dir / "windows.csv", index=False)
        record = {"recording": request.recording, "task": task_info(self.task(request.task)),
                  "windows": windows.to_dict(orient="records"), "summary": {"windows": 10},
                  "warnings": [], "signal": {}, "sleep": None, "annotations": [],
                  "prob_columns": ["prob_rest", "prob_arithmetic"], "files": ["windows.csv"]}
        (out_dir / RESULT_FILE).write_text(json.dumps(record))

    def signal_page(self, path, task_name, start_s, stop_s, width):
        if path.name.startswith("flat"):
            raise AnalysisError(f"{path.name}: no EEG channel the task knows")
        n = len(WORKLOAD_EDF_NAMES)
        return {"channels": WORKLOAD_EDF_NAMES, "sfreq": 200.0, "start_s": start_s,
                "stop_s": stop_s, "width": width, "unit": "uV",
                "mins": [[-1.0] * width] * n, "maxs": [[1.0] * width] * n}


@pytest.fixture()
def folders(tmp_path):
    data = tmp_path / "data"
    write_edf(data / "rec.edf", WORKLOAD_EDF_NAMES, SECONDS, 250.0, seed=1)
    write_edf(data / "sub-01" / "night.edf", WORKLOAD_EDF_NAMES[:4], 20, 100.0, seed=2)
    write_edf(data / "flat.edf", WORKLOAD_EDF_NAMES[:2], 12, 100.0, seed=3)
    (data / "broken.edf").write_bytes(b"0       not an EDF header at all" * 10)
    (data / "notes.txt").write_text("not a recording")
    outside = tmp_path / "outside"
    write_edf(outside / "secret.edf", WORKLOAD_EDF_NAMES[:2], 8, 100.0, seed=4)
    os.symlink(outside / "secret.edf", data / "link_out.edf")
    os.symlink(outside, data / "dir_out")
    return data, outside, tmp_path / "out"


def make_client(folders, engine=None, **config):
    data, _, out = folders
    engine = engine or ScriptedEngine()
    app = create_app(ViewerConfig(data, out, **config), engine)
    return TestClient(app), engine


def wait_for(client, job_id, states=("done", "failed", "cancelled"), timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} stayed {job['state']}")


def start(client, recording="rec.edf", task="Workload", **options):
    return client.post("/api/analyses", json={"recording": recording, "task": task, **options})


# ---------------------------------------------------------------------------------- listing

def test_lists_recordings_with_header_facts_and_nothing_outside(folders):
    client, _ = make_client(folders)
    listing = {r["id"]: r for r in client.get("/api/recordings").json()}
    assert set(listing) == {"rec.edf", "sub-01/night.edf", "flat.edf", "broken.edf"}
    rec = listing["rec.edf"]
    assert rec["n_channels"] == len(WORKLOAD_EDF_NAMES) and rec["sfreq"] == 250.0
    assert rec["duration_s"] == pytest.approx(SECONDS) and rec["error"] is None
    assert listing["sub-01/night.edf"]["sfreq"] == 100.0
    assert listing["broken.edf"]["error"] and listing["broken.edf"]["duration_s"] is None
    one = client.get("/api/recordings/sub-01/night.edf")
    assert one.status_code == 200 and one.json()["n_channels"] == 4
    missing = client.get("/api/recordings/nope.edf")
    assert missing.status_code == 404 and "nope.edf" in missing.json()["detail"]


TRAVERSALS = ["../outside/secret.edf", "sub-01/../../outside/secret.edf",
              "%2e%2e/outside/secret.edf", "..%2Foutside%2Fsecret.edf",
              "%252e%252e%252Foutside%252Fsecret.edf",
              "/etc/passwd", "%2Fetc%2Fpasswd", "..\\outside\\secret.edf", "C:/Windows/win.ini",
              "~/secret.edf"]


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_traversal_is_refused_in_every_route(folders, bad):
    client, engine = make_client(folders)
    started = start(client, recording=bad)
    assert started.status_code == 400, started.text
    assert "detail" in started.json()
    page = client.get("/api/signal", params={"recording": bad, "task": "Workload"})
    assert page.status_code == 400 and "detail" in page.json()
    # in the URL path the client or the router may normalise first: never served, either way
    direct = client.get(f"/api/recordings/{bad}")
    assert direct.status_code in (400, 404) and "n_channels" not in direct.text
    assert engine.runs == 0


@pytest.mark.parametrize("name", ["link_out.edf", "dir_out/secret.edf"])
def test_symlinks_out_of_the_folder_are_not_served(folders, name):
    client, _ = make_client(folders)
    assert start(client, recording=name).status_code == 404
    assert client.get("/api/signal", params={"recording": name, "task": "Workload"}
                      ).status_code == 404
    assert client.get(f"/api/recordings/{name}").status_code == 404


# ---------------------------------------------------------------------------------- uploads

OCTETS = {"Content-Type": "application/octet-stream"}


def upload(client, name: str, payload: bytes):
    return client.post("/api/uploads", params={"filename": name}, content=payload,
                       headers=OCTETS)


def test_upload_of_an_edf_is_listed_and_analysable(folders, tmp_path):
    client, _ = make_client(folders)
    source = write_edf(tmp_path / "mine.edf", WORKLOAD_EDF_NAMES, 16, 200.0, seed=5)
    made = upload(client, "../../My recording (1).EDF", source.read_bytes())
    assert made.status_code == 201, made.text
    rec = made.json()
    assert rec["id"] == "uploads/My_recording_1.edf" and rec["source"] == "upload"
    assert rec["duration_s"] == pytest.approx(16)
    assert rec["id"] in {r["id"] for r in client.get("/api/recordings").json()}
    form = client.post("/api/uploads", params={"filename": "x.edf"},
                       files={"file": ("x.edf", source.read_bytes())})
    assert form.status_code == 400 and "octet-stream" in form.json()["detail"]
    again = upload(client, "My recording (1).EDF", source.read_bytes()).json()
    assert again["id"] == "uploads/My_recording_1-2.edf"    # never overwrites
    job = wait_for(client, start(client, recording=rec["id"]).json()["id"])
    assert job["state"] == "done"


class Planted:
    """Unpickling this would create a file: the proof that an upload was never unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("name, payload, status", [
    ("evil.edf", "pickle", 422),
    ("evil.fif", "pickle", 422),
    ("noise.bdf", "random", 422),
    ("noise.cnt", "random", 422),
    ("data.pkl", "pickle", 400),
    ("data.vhdr", "random", 400),
    ("empty.edf", "empty", 400),
])
def test_uploads_that_are_not_eeg_are_refused_and_removed(folders, tmp_path, name, payload,
                                                          status):
    client, _ = make_client(folders)
    marker = tmp_path / "unpickled"
    body = {"pickle": pickle.dumps(Planted(marker)), "empty": b"",
            "random": np.random.default_rng(0).bytes(50_000)}[payload]
    refused = upload(client, name, body)
    assert refused.status_code == status, refused.text
    assert name in refused.json()["detail"]
    assert not marker.exists()
    uploads = folders[2] / "uploads"
    assert not [p for p in uploads.iterdir()] if uploads.exists() else True
    assert not any(r["source"] == "upload" for r in client.get("/api/recordings").json())


def test_upload_beyond_the_limit_is_413_declared_or_streamed(folders, tmp_path):
    client, _ = make_client(folders, max_upload_mb=0.05)
    source = write_edf(tmp_path / "big.edf", WORKLOAD_EDF_NAMES, 30, 250.0, seed=6)
    assert source.stat().st_size > 0.05 * 2**20
    refused = upload(client, "big.edf", source.read_bytes())
    assert refused.status_code == 413 and "MiB" in refused.json()["detail"]

    def chunks():   # no Content-Length: the cap is counted while streaming
        data = source.read_bytes()
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]
    streamed = client.post("/api/uploads", params={"filename": "big.edf"}, content=chunks(),
                           headers=OCTETS)
    assert streamed.status_code == 413
    assert not list((folders[2] / "uploads").iterdir())


# ---------------------------------------------------------------------------------- analyses

def test_analysis_runs_reports_progress_and_serves_results_and_files(folders):
    client, engine = make_client(folders)
    assert client.get("/api/tasks").json()[0]["question"] == TASKS["Workload"].prompt
    options = {"recording": "rec.edf", "task": "Workload", "qc": "skip", "abstain": 0.6}
    assert client.get("/api/analyses/kept", params=options).status_code == 404
    made = start(client, qc="skip", abstain=0.6)
    assert made.status_code == 202
    job = wait_for(client, made.json()["id"])
    assert job["state"] == "done" and job["total"] == 10 and job["error"] is None
    result = client.get(f"/api/jobs/{job['id']}/results").json()
    assert len(result["windows"]) == 10 and result["job"]["id"] == job["id"]
    csv = client.get(f"/api/jobs/{job['id']}/files/windows.csv")
    assert csv.status_code == 200 and csv.text.startswith("file,window,start_s")
    for name in ("result.json", "../windows.csv", "nothing.csv"):
        assert client.get(f"/api/jobs/{job['id']}/files/{name}").status_code == 404
    # the same request again, also from a restarted server: the kept result, no new run
    assert start(client, qc="skip", abstain=0.6).json()["cached"] is True
    restarted, _ = make_client(folders, engine)
    again = start(restarted, qc="skip", abstain=0.6).json()
    assert again["state"] == "done" and again["cached"] and engine.runs == 1
    assert restarted.get(f"/api/jobs/{again['id']}/results").status_code == 200
    kept = restarted.get("/api/analyses/kept", params=options).json()
    assert kept["state"] == "done" and kept["cached"] and engine.runs == 1
    assert restarted.get("/api/analyses/kept", params={**options, "qc": "odd"}
                         ).status_code == 400
    # other options are another analysis
    assert wait_for(client, start(client, qc="flag").json()["id"])["state"] == "done"
    assert engine.runs == 2


@pytest.mark.parametrize("body, words", [
    ({"recording": "rec.edf", "task": "Nope"}, "Nope"),
    ({"recording": "rec.edf", "task": "Workload", "qc": "maybe"}, "qc"),
    ({"recording": "rec.edf", "task": "Workload", "abstain": 1.5}, "abstain"),
    ({"recording": "rec.edf", "task": "Workload", "abstain": "often"}, "abstain"),
    ({"recording": "rec.edf"}, "task"),
])
def test_bad_analysis_requests_are_400(folders, body, words):
    client, _ = make_client(folders)
    refused = client.post("/api/analyses", json=body)
    assert refused.status_code == 400 and words in refused.json()["detail"]


def test_bad_json_is_400_and_unknown_things_404(folders):
    client, _ = make_client(folders)
    bad = client.post("/api/analyses", content=b"{not json",
                      headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["detail"]
    assert start(client, recording="nope.edf").status_code == 404
    for path in ("/api/jobs/feedbeef", "/api/jobs/feedbeef/results",
                 "/api/jobs/feedbeef/files/windows.csv", "/api/nothing"):
        missing = client.get(path)
        assert missing.status_code == 404 and missing.json()["detail"]


def test_unreadable_recording_is_422(folders):
    client, engine = make_client(folders)
    refused = start(client, recording="broken.edf")
    assert refused.status_code == 422 and "broken.edf" in refused.json()["detail"]
    page = client.get("/api/signal", params={"recording": "broken.edf", "task": "Workload"})
    assert page.status_code == 422
    reader = client.get("/api/signal", params={"recording": "flat.edf", "task": "Workload"})
    assert reader.status_code == 422 and "no EEG channel" in reader.json()["detail"]
    assert engine.runs == 0


def test_failed_job_records_its_error_and_the_server_keeps_serving(folders):
    client, engine = make_client(folders)
    engine.fail = MemoryError("the worker ran out of memory")
    job = wait_for(client, start(client).json()["id"])
    assert job["state"] == "failed" and "out of memory" in job["error"]
    refused = client.get(f"/api/jobs/{job['id']}/results")
    assert refused.status_code == 409 and "out of memory" in refused.json()["detail"]
    engine.fail = AnalysisError("rec.edf: refused by --strict")
    assert wait_for(client, start(client, qc="skip").json()["id"])["state"] == "failed"
    engine.fail = None
    assert client.get("/api/recordings").status_code == 200
    assert wait_for(client, start(client).json()["id"])["state"] == "done"   # not cached


def test_killed_job_is_reported_cancelled_and_the_next_one_runs(folders):
    client, engine = make_client(folders)
    engine.gate.clear()
    job = start(client).json()
    wait_for(client, job["id"], states=("running",))
    queued = start(client, recording="sub-01/night.edf").json()
    assert client.delete(f"/api/jobs/{queued['id']}").json()["state"] == "cancelled"
    killed = client.delete(f"/api/jobs/{job['id']}")
    assert killed.status_code == 200
    final = wait_for(client, job["id"])
    assert final["state"] == "cancelled" and final["error"]
    engine.gate.set()
    assert wait_for(client, start(client, qc="skip").json()["id"])["state"] == "done"
    assert client.delete("/api/jobs/feedbeef").status_code == 404


def test_full_queue_is_503_with_retry_after_and_nothing_is_lost(folders):
    client, engine = make_client(folders, max_queued=1)
    engine.gate.clear()
    running = start(client).json()
    wait_for(client, running["id"], states=("running",))
    waiting = start(client, qc="skip")
    assert waiting.status_code == 202
    assert start(client).json()["id"] == running["id"]          # the same request joins
    refused = start(client, abstain=0.9)
    assert refused.status_code == 503 and "full" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) >= 1
    engine.gate.set()
    assert wait_for(client, running["id"])["state"] == "done"
    assert wait_for(client, waiting.json()["id"])["state"] == "done"
    assert wait_for(client, start(client, abstain=0.9).json()["id"])["state"] == "done"


# ---------------------------------------------------------------------------------- signal

def test_signal_page_and_its_checks(folders):
    client, _ = make_client(folders)
    params = {"recording": "rec.edf", "task": "Workload", "start_s": 30, "duration_s": 20,
              "width": 300}
    page = client.get("/api/signal", params=params).json()
    assert page["start_s"] == 30 and page["stop_s"] == pytest.approx(SECONDS)   # clipped
    assert len(page["mins"][0]) == 300 and page["duration_total_s"] == pytest.approx(SECONDS)
    assert page["annotations"] == []
    for bad in ({"width": 0}, {"width": 10**6}, {"duration_s": 0}, {"duration_s": "nan"},
                {"start_s": -1}, {"start_s": "inf"}, {"start_s": SECONDS + 1}, {"task": "Nope"},
                {"width": "wide"}):
        refused = client.get("/api/signal", params={**params, **bad})
        assert refused.status_code == 400, (bad, refused.text)
    assert client.get("/api/signal", params={**params, "recording": "x.edf"}).status_code == 404


def test_page_and_its_files_are_served_by_the_app_alone(folders):
    client, _ = make_client(folders)
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="traces"' in page.text
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    static = Path(__file__).resolve().parents[1] / "viewer" / "static"
    for path in static.iterdir():
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path
    assert client.get("/static/../files.py").status_code == 404
    assert client.get("/openapi.json").json()["info"]["title"] == "NeuroLM viewer"
    assert client.get("/api/status").json()["model_path"] == "scripted"


# ---------------------------------------------------------------------------------- serve.py

def test_serve_without_a_model_says_what_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(serve, "DEMO_MODEL", tmp_path / "none.pt")
    assert serve.main(["--data_dir", str(tmp_path)]) == 2
    assert "python demo.py" in capsys.readouterr().err


@pytest.mark.parametrize("flags, words", [
    (["--port", "70000"], "--port"),
    (["--max_upload_mb", "nan"], "--max_upload_mb"),
    (["--max_queued", "0"], "--max_queued"),
    (["--data_dir", "/no/such/folder"], "--data_dir"),
    (["--model_path", "/no/such.pt"], "--model_path"),
])
def test_serve_flags_are_checked(tmp_path, capsys, flags, words):
    model = tmp_path / "m.pt"
    model.write_bytes(b"")
    argv = ["--model_path", str(model), "--data_dir", str(tmp_path)]
    assert serve.main(argv + flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err


def test_only_loopback_counts_as_private():
    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("::1")
    assert serve.is_loopback("localhost")
    assert not serve.is_loopback("0.0.0.0") and not serve.is_loopback("192.168.1.5")


def test_loopback_server_answers_only_loopback_host_names(folders):
    client, _ = make_client(folders, allowed_hosts=serve.LOOPBACK_NAMES)
    assert client.get("/api/recordings", headers={"Host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/api/recordings", headers={"Host": "localhost:8000"}).status_code == 200
    rebound = client.get("/api/recordings", headers={"Host": "attacker.example:8000"})
    assert rebound.status_code == 400 and "attacker.example" in rebound.json()["detail"]
    assert client.get("/", headers={"Host": "[::1]:8000"}).status_code == 200
