"""The viewer on a real (tiny, planted) model through `inference/`: the analysis a page starts is
the whole-recording path's answer, its downloads open in MNE, and a signal page is exactly the
min/max envelope of the signal the model read (tests/inference_fixtures.py: the model answers
" Yes" to the Workload question)."""
from __future__ import annotations

import io
import time

import edfio
import mne
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from inference_fixtures import WORKLOAD_EDF_NAMES, write_checkpoints
from raw_fixtures import eeg_like

import inference
from viewer import ViewerConfig, create_app
from viewer.analysis import Engine

SECONDS, SFREQ = 60, 250.0
BAD = (30.0, 4.0)     # a BAD_ annotation of the file itself: onset, duration


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer_model")
    ckpts = write_checkpoints(root / "ckpts")
    data = root / "data"
    data.mkdir()
    signals = [edfio.EdfSignal(eeg_like(1, SECONDS, SFREQ, seed=i)[0], SFREQ, label=name,
                               physical_dimension="uV", physical_range=(-1000.0, 1000.0))
               for i, name in enumerate(WORKLOAD_EDF_NAMES)]
    edfio.Edf(signals, data_record_duration=1.0,
              annotations=[edfio.EdfAnnotation(*BAD, "BAD_movement")]).write(data / "rec.edf")
    engine = Engine(ckpts["lm"], ckpts["vq"], device="cpu")
    with TestClient(create_app(ViewerConfig(data, root / "out"), engine)) as c:
        c.engine, c.data = engine, data
        yield c


def finished(client, recording="rec.edf", **options) -> dict:
    made = client.post("/api/analyses", json={"recording": recording, "task": "Workload",
                                              **options})
    assert made.status_code == 202, made.text
    deadline = time.time() + 300
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{made.json()['id']}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError("the analysis did not finish")


def test_analysis_is_the_whole_recording_answer_with_its_downloads(client):
    job = finished(client)
    assert job["state"] == "done", job["error"]
    assert job["done"] == job["total"] > 0
    result = client.get(f"/api/jobs/{job['id']}/results").json()
    windows = result["windows"]
    assert len(windows) == job["total"]
    assert result["prob_columns"] == ["prob_rest", "prob_arithmetic"]
    assert all(w["label_name"] == "arithmetic" and w["generated_text"].strip() == "Yes"
               for w in windows if w["label"] is not None)
    assert result["task"]["question"] == client.engine.task("Workload").prompt
    for w in windows:   # the file's BAD_ annotation reaches the windows it overlaps, only
        overlaps = w["start_s"] < BAD[0] + BAD[1] and w["start_s"] + w["duration_s"] > BAD[0]
        assert ("bad_annotation" in w["qc_flags"]) == overlaps, w
    assert any(a["description"] == "BAD_movement" for a in result["annotations"])
    table = pd.read_csv(io.StringIO(client.get(
        f"/api/jobs/{job['id']}/files/windows.csv").text))
    assert list(table["start_s"]) == [w["start_s"] for w in windows]
    rows = pd.read_csv(io.StringIO(client.get(
        f"/api/jobs/{job['id']}/files/recordings.csv").text))
    assert len(rows) == 1
    annotation_files = [f for f in result["files"] if f not in ("windows.csv", "recordings.csv")]
    assert annotation_files
    for name in annotation_files:
        download = client.get(f"/api/jobs/{job['id']}/files/{name}")
        assert download.status_code == 200
        if name.endswith(".tsv"):
            continue      # BIDS events: read back by column below
        path = client.app.state.jobs.results_dir / job_key(client, job) / name
        read = mne.read_annotations(path)   # the answers; BAD_qc_ marks are extra
        onsets = sorted(o for o, d in zip(read.onset, read.description)
                        if not d.startswith("BAD_"))
        starts = sorted(w["start_s"] for w in windows if w["label"] is not None)
        assert np.allclose(onsets[:len(starts)], starts, atol=0.01)


def job_key(client, job) -> str:
    return client.app.state.jobs.result_dir(client.app.state.jobs.get(job["id"])).name


def test_signal_page_is_the_envelope_of_what_the_model_read(client):
    page = client.get("/api/signal", params={"recording": "rec.edf", "task": "Workload",
                                             "start_s": 25, "duration_s": 10, "width": 400})
    assert page.status_code == 200, page.text
    page = page.json()
    task = client.engine.task("Workload")
    data, names, sfreq = inference.read_signal(client.data / "rec.edf", task, 25, 35)
    mins, maxs = inference.envelope(np.asarray(data), 400)
    assert page["channels"] == list(names) and page["sfreq"] == sfreq
    # the page carries 0.01 µV
    assert np.allclose(page["mins"], mins, rtol=0, atol=0.006)
    assert np.allclose(page["maxs"], maxs, rtol=0, atol=0.006)
    assert not np.allclose(page["mins"], page["maxs"])
    assert page["annotations"] == [{"onset_s": BAD[0], "duration_s": BAD[1],
                                    "description": "BAD_movement"}]


def test_task_list_has_the_built_in_ones_and_those_the_checkpoint_carries(client, tmp_path):
    import dataclasses

    import torch

    from tasks import BUILTIN_TASKS, TASKS_KEY
    lm = torch.load(client.engine.model_path, weights_only=True)
    stored = dataclasses.replace(BUILTIN_TASKS["Workload"], name="MyWorkload",
                                 source="my_workload.toml")
    lm[TASKS_KEY] = [stored.to_dict()]
    torch.save(lm, tmp_path / "lm_tasks.pt")
    engine = Engine(tmp_path / "lm_tasks.pt", device="cpu")
    app = create_app(ViewerConfig(client.data, tmp_path / "out"), engine)
    listed = {t["name"]: t for t in TestClient(app).get("/api/tasks").json()}
    assert set(BUILTIN_TASKS) < set(listed)
    assert listed["MyWorkload"]["source"] == "my_workload.toml"
    assert listed["MyWorkload"]["question"] == stored.prompt
