"""The viewer under load: N concurrent clients on loopback (20 by default) each start an analysis
and fetch signal pages while the jobs run, against `serve.py` started as a command.

Every client asks for a different analysis (its own abstention threshold), so the bounded queue
must run or refuse each one: the figures are requests sent vs answered (none may be lost:
a connection error or a timeout counts as lost), jobs finished vs refused with 503 (together
they must be all of them), pages served and their latency, and the server's peak memory (VmHWM
of its process, sampled VmRSS as well). A benchmark, not a test:

    .venv/bin/python bench/bench_serve.py [--clients 20] [--pages 5] [--seconds 300]
        [--max_queued 8] [--model_path CKPT --tokenizer_path VQ] [--json out.json]

Measured 2026-12-03 on 2 shared CPU cores, tiny model, 300 s recordings: 218 requests, 0 lost;
9 jobs done, 11 refused with 503 (1 running + 8 queued); server RSS 315 MB idle, 838 MB peak
(one analysis alone: 601 MB); signal pages 5.3 s median while 9 analyses ran.

Without --model_path it writes a tiny random-weight NeuroLM (timings only: its answers mean
nothing); the recordings are synthetic TUAB-style EDFs (23 channels, 250 Hz), task TUAB.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]

from bench_inference import write_model  # noqa: E402  (bench/ is the script's folder)

from dataset_maker import synthetic_signals as sig  # noqa: E402
from dataset_maker.synthetic.tuab import write_tuab_recording  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_kb(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.sent = self.answered = 0
        self.lost: list[str] = []
        self.statuses: dict[int, int] = {}
        self.page_s: list[float] = []

    def request(self, client: httpx.Client, method: str, url: str, **kwargs):
        with self.lock:
            self.sent += 1
        start = time.perf_counter()
        try:
            response = client.request(method, url, **kwargs)
        except httpx.HTTPError as err:
            with self.lock:
                self.lost.append(f"{method} {url}: {type(err).__name__}: {err}")
            return None
        with self.lock:
            self.answered += 1
            self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
            if url.startswith("/api/signal") and response.status_code == 200:
                self.page_s.append(time.perf_counter() - start)
        return response


def one_client(i: int, base: str, recordings: list[str], pages: int, tally: Tally,
               barrier: threading.Barrier, job_timeout: float) -> str:
    """'done', 'refused' (503), or what else happened to this client's analysis."""
    recording = recordings[i % len(recordings)]
    with httpx.Client(base_url=base, timeout=120.0) as client:
        barrier.wait()
        made = tally.request(client, "POST", "/api/analyses",
                             json={"recording": recording, "task": "TUAB",
                                   "abstain": round(0.5 + i / 1000, 3)})
        for page in range(pages):   # read while the jobs run
            tally.request(client, "GET", f"/api/signal?recording={recording}&task=TUAB"
                          f"&start_s={10 * page}&duration_s=10&width=1200")
        if made is None:
            return "lost"
        if made.status_code == 503:
            assert made.headers.get("Retry-After"), "503 without Retry-After"
            return "refused"
        if made.status_code != 202:
            return f"status {made.status_code}: {made.text[:200]}"
        job_id, deadline = made.json()["id"], time.time() + job_timeout
        while time.time() < deadline:
            polled = tally.request(client, "GET", f"/api/jobs/{job_id}")
            if polled is not None and polled.json()["state"] not in ("queued", "running"):
                state = polled.json()["state"]
                if state == "done":
                    results = tally.request(client, "GET", f"/api/jobs/{job_id}/results")
                    return "done" if results is not None and results.status_code == 200 \
                        else "done without results"
                return f"{state}: {polled.json()['error']}"
            time.sleep(0.5)
        return "unfinished"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--pages", type=int, default=5, help="signal pages each client fetches")
    p.add_argument("--seconds", type=float, default=300, help="length of each recording")
    p.add_argument("--recordings", type=int, default=4)
    p.add_argument("--max_queued", type=int, default=8)
    p.add_argument("--model_path", type=Path, default=None)
    p.add_argument("--tokenizer_path", type=Path, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--job_timeout", type=float, default=1800)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lm = args.model_path or write_model("tiny", tmp / "lm.pt")
        data = tmp / "data"
        data.mkdir()
        rng = np.random.default_rng(0)
        names = [f"rec{k}.edf" for k in range(args.recordings)]
        for name in names:
            write_tuab_recording(data / name, "normal", args.seconds, rng,
                                                sig.Subject.draw(rng))
        port = free_port()
        command = [sys.executable, str(REPO / "serve.py"), "--model_path", str(lm),
                   "--data_dir", str(data), "--out_dir", str(tmp / "out"), "--port", str(port),
                   "--max_queued", str(args.max_queued), "--device", args.device]
        if args.tokenizer_path:
            command += ["--tokenizer_path", str(args.tokenizer_path)]
        server = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 300
            while time.time() < deadline:
                if server.poll() is not None:
                    raise SystemExit(f"serve.py ended:\n{server.stdout.read()[-3000:]}")
                try:
                    if httpx.get(base + "/api/status", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            idle = memory_kb(server.pid)
            tally, rss = Tally(), []
            stop = threading.Event()

            def sample():
                while not stop.wait(0.2):
                    rss.append(memory_kb(server.pid)["VmRSS"])
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            barrier = threading.Barrier(args.clients)
            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                outcomes = list(pool.map(
                    lambda i: one_client(i, base, names, args.pages, tally, barrier,
                                         args.job_timeout), range(args.clients)))
            wall = time.perf_counter() - start
            stop.set()
            peak = memory_kb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
    counts = {o: outcomes.count(o) for o in sorted(set(outcomes))}
    result = {
        "clients": args.clients, "pages_per_client": args.pages, "recording_s": args.seconds,
        "max_queued": args.max_queued, "wall_s": round(wall, 1),
        "requests_sent": tally.sent, "requests_answered": tally.answered,
        "requests_lost": len(tally.lost), "lost_examples": tally.lost[:5],
        "statuses": tally.statuses, "jobs": counts,
        "every_job_finished_or_refused": set(counts) <= {"done", "refused"},
        "page_latency_s": {"median": round(statistics.median(tally.page_s), 3),
                           "max": round(max(tally.page_s), 3)} if tally.page_s else None,
        "server_rss_mb": {"idle": round(idle["VmRSS"] / 1024, 1),
                          "peak_sampled": round(max(rss or [0]) / 1024, 1),
                          "peak_hwm": round(peak["VmHWM"] / 1024, 1)},
        "threads": os.cpu_count(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
