"""The bad-input matrix of the prepare scripts: one broken recording of each kind beside good
ones. Each is reported in errors.tsv with its reason, no good sample is lost or moved (the
same files with the same bytes, and the same splits.json, as without the bad file), and every
split keeps samples. Plus the whole-run mistakes: nothing to process, a split left empty, a
second run on one --out_dir."""
from __future__ import annotations

import csv
import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import raw_fixtures as fx

from dataset_maker import common, prepare_TUEV, prepare_workload

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")
SECONDS = 20
# a subject of its own, in the official train folder: a bad file that took a split slot would
# reshuffle the good subjects (the bug this matrix guards against)
BAD_FOLDER = Path("train") / "zzzzzzzz"
ODD_NAME = os.fsdecode(b"odd\tname\nwith \xff byte") + ".edf"


def good_rec(edf: Path):
    edf.with_suffix(".rec").write_text("3,8.0,9.0,2\n0,0.5,1.5,6\n")


def digital_field_offset(n_signals: int, field: str) -> int:
    """Byte offset of signal 0's digital minimum / maximum in an EDF header."""
    before = 16 + 80 + 8 + 8 + 8 + (8 if field == "max" else 0)
    return 256 + n_signals * before


def write_bad(kind: str, raw: Path) -> Path:
    """One bad TUEV recording of `kind` (with a valid .rec unless the label file is the fault)."""
    folder = raw / BAD_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    edf = folder / f"zzzzzzzz_{kind}.edf"
    names = fx.TUH_NAMES + ["EEG EKG1-REF"]
    if kind == "unreadable":
        edf.write_bytes(b"0       this is not an EDF file")
    elif kind == "truncated":
        fx.write_tuh_edf(edf, SECONDS)
        edf.write_bytes(edf.read_bytes()[: edf.stat().st_size // 2])
    elif kind == "missing_channels":
        fx.write_edf(edf, fx.TUH_NAMES[:-1], SECONDS)
    elif kind == "wrong_rate":
        fx.write_edf(edf, fx.TUH_NAMES, SECONDS, rates=[250.0] * 22 + [125.0])
    elif kind == "undefined_scaling":
        fx.write_tuh_edf(edf, SECONDS)
        data = bytearray(edf.read_bytes())
        low = digital_field_offset(len(names), "min")
        high = digital_field_offset(len(names), "max")
        data[high:high + 8] = data[low:low + 8]          # FP1: digital max = digital min
        edf.write_bytes(bytes(data))
    elif kind == "flat":
        data = fx.eeg_like(len(fx.TUH_NAMES), SECONDS, 250.0, seed=3)
        data[4] = 0.0
        fx.write_edf(edf, fx.TUH_NAMES, SECONDS, data=data)
    elif kind == "too_short":
        fx.write_tuh_edf(edf, 3)
        edf.with_suffix(".rec").write_text("3,1.0,2.0,2\n")
        return edf
    elif kind == "bad_label_file":
        fx.write_tuh_edf(edf, SECONDS)
        edf.with_suffix(".rec").write_text("3,8.0,9.0,seven\n")
        return edf
    elif kind == "unknown_label":
        fx.write_tuh_edf(edf, SECONDS)
        edf.with_suffix(".rec").write_text("3,8.0,9.0,9\n")
        return edf
    elif kind == "odd_file_name":
        edf = folder / ODD_NAME
        edf.write_bytes(b"not an EDF either")
    good_rec(edf)
    return edf


REASONS = {
    "unreadable": "unreadable",
    "truncated": "truncated:",
    "missing_channels": "missing channels: T2",
    "wrong_rate": "sampling-rate mismatch",
    "undefined_scaling": "undefined scaling (digital minimum = maximum) in channels: EEG FP1-REF",
    "flat": "flat channels: C3",
    "too_short": "too short",
    "bad_label_file": "malformed label file zzzzzzzz_bad_label_file.rec line 1",
    "unknown_label": "unknown label 9 in zzzzzzzz_unknown_label.rec",
    "odd_file_name": "unreadable",
}


def read_errors(out: Path) -> dict[str, str]:
    with open(out / "errors.tsv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == ["file", "reason"]
    return {Path(name).name: reason for name, reason in rows[1:]}


def sample_tree(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.glob("*/*.pkl"))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    fx.make_tuev(root / "raw", seconds=SECONDS)
    prepare_TUEV.main(["--raw_dir", str(root / "raw"), "--out_dir", str(root / "out"),
                       "--workers", "1"])
    assert read_errors(root / "out") == {}
    return root


@pytest.mark.parametrize("kind", list(REASONS))
def test_bad_recording_is_reported_and_no_good_sample_is_lost(kind, baseline, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(baseline / "raw", raw)
    bad = write_bad(kind, raw)
    out = tmp_path / "out"
    summary = prepare_TUEV.main(["--raw_dir", str(raw), "--out_dir", str(out), "--workers", "1"])

    errors = read_errors(out)
    assert list(errors) == [common.printable_name(bad.name)]
    assert errors[common.printable_name(bad.name)].startswith(REASONS[kind]), errors
    names = sample_tree(baseline / "out")
    assert sample_tree(out) == names
    _, mismatch, failed = filecmp.cmpfiles(baseline / "out", out, names, shallow=False)
    assert mismatch == [] and failed == []
    assert (out / "splits.json").read_bytes() == (baseline / "out" / "splits.json").read_bytes()
    assert all(sum(summary["samples"][s].values()) > 0 for s in SPLITS)


def test_odd_file_name_of_a_good_recording_is_processed(baseline, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(baseline / "raw", raw)
    odd = raw / "train" / "aaaaaaaa" / ODD_NAME
    fx.write_tuh_edf(odd, SECONDS, seed=5)
    good_rec(odd)
    out = tmp_path / "out"
    prepare_TUEV.main(["--raw_dir", str(raw), "--out_dir", str(out), "--workers", "1"])
    assert read_errors(out) == {}
    assert len(list(out.glob(f"*/{odd.stem}_*.pkl"))) == 2


def run_cli(script: str, *argv: str):
    return subprocess.run([sys.executable, f"dataset_maker/{script}.py", *argv], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_nothing_to_process_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_cli("prepare_TUAB", "--raw_dir", str(tmp_path / "empty"),
                     "--out_dir", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: no recordings found")
    assert "Traceback" not in result.stderr
    result = run_cli("prepare_TUAB", "--raw_dir", str(tmp_path / "nowhere"),
                     "--out_dir", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--raw_dir" in result.stderr and "is not a folder" in result.stderr


def test_failed_recordings_leave_no_split_empty_silently(tmp_path):
    """HMC-like: recordings that fail do not take split slots; too few good ones is an error
    naming the empty split (exit 2), not a summary line."""
    raw = tmp_path / "raw"
    fx.make_workload(raw, n_subjects=3, seconds=64)
    (raw / "Subject03_1.edf").write_bytes(b"broken")
    (raw / "Subject04_1.edf").write_bytes(b"broken")
    summary = prepare_workload.main(["--raw_dir", str(raw), "--out_dir", str(tmp_path / "a"),
                                     "--workers", "1"])
    assert all(sum(summary["samples"][s].values()) > 0 for s in SPLITS)
    split_json = (tmp_path / "a" / "splits.json").read_text()
    assert "Subject03" not in split_json and "Subject04" not in split_json

    for name in ("Subject01_1.edf", "Subject01_2.edf", "Subject02_1.edf", "Subject02_2.edf"):
        (raw / name).write_bytes(b"broken")
    result = run_cli("prepare_workload", "--raw_dir", str(raw), "--out_dir", str(tmp_path / "b"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "split val, test is empty" in result.stderr
    assert (tmp_path / "b" / "errors.tsv").is_file()


def test_out_dir_that_is_a_file_or_in_use_is_refused(tmp_path):
    raw = tmp_path / "raw"
    fx.make_workload(raw, n_subjects=3, seconds=64)
    (tmp_path / "file").write_text("x")
    with pytest.raises(common.UserError, match="is a file"):
        prepare_workload.main(["--raw_dir", str(raw), "--out_dir", str(tmp_path / "file")])
    out = tmp_path / "out"
    out.mkdir()
    import fcntl

    with open(out / common.LOCK_NAME, "w") as held:
        held.write("12345\n")
        held.flush()
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(common.UserError, match=r"in use by another prepare run \(pid 12345\)"):
            prepare_workload.main(["--raw_dir", str(raw), "--out_dir", str(out)])
    assert not list(out.glob("*/*.pkl"))


def test_same_recording_name_in_two_folders_is_kept_twice(tmp_path):
    raw = tmp_path / "raw"
    fx.make_tuev(raw, seconds=SECONDS)
    twin = raw / "train" / "dddddddd" / "aaaaaaaa_00000001.edf"
    shutil.copy(raw / "train" / "aaaaaaaa" / "aaaaaaaa_00000001.edf", twin)
    shutil.copy(raw / "train" / "aaaaaaaa" / "aaaaaaaa_00000001.rec", twin.with_suffix(".rec"))
    out = tmp_path / "out"
    prepare_TUEV.main(["--raw_dir", str(raw), "--out_dir", str(out), "--workers", "1"])
    assert read_errors(out) == {}
    assert len(list(out.glob("*/aaaaaaaa_00000001_*.pkl"))) == 6   # 3 events, both copies
