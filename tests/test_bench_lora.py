"""bench/bench_lora.py --quick runs end to end: both modes measured, LoRA trains a small share."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("peft")
REPO = Path(__file__).resolve().parents[1]


def test_quick_bench_measures_full_and_lora(tmp_path):
    out = tmp_path / "rows.json"
    run = subprocess.run([sys.executable, "bench/bench_lora.py", "--quick", "--json", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = {r["mode"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"full", "lora"} and all(r["shape"] == "tiny" for r in rows.values())
    full, lora = rows["full"], rows["lora"]
    assert lora["params_M"] > full["params_M"]          # the adapters are new parameters
    assert 0 < lora["trained_M"] < full["trained_M"] and lora["trained_pct"] < 20
    for r in rows.values():
        assert all(math.isfinite(r[k]) and r[k] > 0 for k in
                   ("s_per_step", "cpu_s_per_step", "model_MiB", "peak_MiB"))
        assert r["peak_MiB"] >= 0.9 * r["model_MiB"]   # the step adds to the model
    assert "peak_MiB" in run.stdout and "lora" in run.stdout


def test_bad_flags_are_refused_in_one_line():
    run = subprocess.run([sys.executable, "bench/bench_lora.py", "--steps", "0"], cwd=REPO,
                         capture_output=True, text=True)
    assert run.returncode == 2 and "--steps" in run.stderr and "Traceback" not in run.stderr
