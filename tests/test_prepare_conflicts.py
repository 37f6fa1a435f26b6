"""Bad inputs on the data side, each one line (exit 2) or an errors.tsv row, never a traceback
or a silent result: conflicting labels in a label CSV, non-finite numbers, a subject regex or a
BIDS folder that matches nothing, pack into a store of another source, a damaged store."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import raw_fixtures as fx

import dataset
import sample_store
from dataset_maker import common, pack, prepare_custom, shards

NAMES = ["Fp1.", "Fp2.", "C3..", "C4.."]


def make_raw(raw: Path, n=4) -> list[str]:
    files = []
    for k in range(n):
        name = f"S{k}_rec.edf"
        fx.write_edf(raw / name, NAMES, 12, sfreq=160.0, seed=k)
        files.append(name)
    return files


def run_prepare(capsys, *argv):
    """prepare_custom as its command runs it: (exit status, stderr)."""
    capsys.readouterr()
    try:
        common.script_main(prepare_custom.main, [str(a) for a in argv])
        rc = 0
    except SystemExit as stop:
        rc = stop.code
    return rc, capsys.readouterr().err.strip()


def prepare_csv(tmp_path, capsys, rows, *extra, header="file,label"):
    raw = tmp_path / "raw"
    if not raw.exists():
        make_raw(raw)
    (tmp_path / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return run_prepare(capsys, "--raw_dir", raw, "--out_dir", tmp_path / "out", "--labels",
                       tmp_path / "labels.csv", "--label_names", "open", "closed",
                       "--workers", 1, "--val_fraction", 0.25, "--test_fraction", 0.25, *extra)


def one_line(rc, err, *words):
    assert rc == 2 and "\n" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err


# ----------------------------------------------------------------------------- label CSVs

def test_a_file_labelled_twice_differently_names_both_lines(tmp_path, capsys):
    rc, err = prepare_csv(tmp_path, capsys, ["S0_rec.edf,open", "S1_rec.edf,open",
                                             "S0_rec.edf,closed", "S2_rec.edf,closed",
                                             "S3_rec.edf,open"])
    one_line(rc, err, "labels.csv lines 2 and 4", "S0_rec.edf", "'open'", "'closed'")


def test_a_file_listed_twice_with_one_label_is_accepted(tmp_path, capsys):
    rc, err = prepare_csv(tmp_path, capsys, ["S0_rec.edf,open", "S0_rec.edf,open",
                                             "S1_rec.edf,closed", "S2_rec.edf,closed",
                                             "S3_rec.edf,open"])
    assert rc == 0, err


def test_whole_recording_label_and_events_for_one_file(tmp_path, capsys):
    rows = ["S0_rec.edf,,,open", "S0_rec.edf,4,4,closed", "S1_rec.edf,,,closed",
            "S2_rec.edf,,,closed", "S3_rec.edf,,,open"]
    rc, err = prepare_csv(tmp_path, capsys, rows, header="file,onset,duration,label")
    one_line(rc, err, "labels.csv lines 2 and 3", "S0_rec.edf", "whole-recording label")


@pytest.mark.parametrize("second, clash", [("3,4,closed", True), ("4,4,closed", False),
                                           ("0,0,closed", True), ("2,1,open", False)])
def test_overlapping_events_with_different_labels(tmp_path, capsys, second, clash):
    rows = ["S0_rec.edf,0,4,open", f"S0_rec.edf,{second}", "S1_rec.edf,0,8,closed",
            "S2_rec.edf,0,8,closed", "S3_rec.edf,0,8,open"]
    rc, err = prepare_csv(tmp_path, capsys, rows, header="file,onset,duration,label")
    if clash:
        one_line(rc, err, "labels.csv lines 2 and 3", "S0_rec.edf", "overlap")
    else:
        assert rc == 0, err


def test_a_csv_with_only_its_header(tmp_path, capsys):
    rc, err = prepare_csv(tmp_path, capsys, [])
    one_line(rc, err, "no labelled recording", "no label in labels.csv")


@pytest.mark.parametrize("label", ["inf", "-inf", "nan", "1e400"])
def test_non_finite_label_in_the_csv(tmp_path, capsys, label):
    rc, err = prepare_csv(tmp_path, capsys, [f"S0_rec.edf,{label}", "S1_rec.edf,open"])
    one_line(rc, err, "labels.csv line 2", "neither a class number")


@pytest.mark.parametrize("onset", ["inf", "nan", "-1"])
def test_non_finite_event_onset(tmp_path, capsys, onset):
    rc, err = prepare_csv(tmp_path, capsys, [f"S0_rec.edf,{onset},4,open"],
                          header="file,onset,duration,label")
    one_line(rc, err, "labels.csv line 2", "onset and duration")


# ----------------------------------------------------------------------------- numbers and names

@pytest.mark.parametrize("flags, named", [
    (["--mains", "inf"], "--mains"), (["--mains", "1e6"], "--mains"),
    (["--mains", "nan"], "--mains"), (["--stride", "1e-9"], "--stride"),
    (["--stride", "inf"], "--stride"), (["--window", "inf"], "--window"),
    (["--window", "nan"], "--window"), (["--band", "0.1", "inf"], "--band"),
    (["--val_fraction", "nan"], "--val_fraction"), (["--test_fraction", "1.5"], "--test_fraction"),
    (["--window", "0"], "--window"), (["--stride", "0"], "--stride"), (["--mains", "0"], "--mains"),
])
def test_numbers_are_checked_at_the_door(tmp_path, capsys, flags, named):
    rc, err = prepare_csv(tmp_path, capsys, ["S0_rec.edf,open"], *flags)
    one_line(rc, err, named)
    assert not (tmp_path / "out").exists()


def test_label_map_to_infinity(tmp_path, capsys):
    make_raw(tmp_path / "raw")
    rc, err = run_prepare(capsys, "--raw_dir", tmp_path / "raw", "--out_dir", tmp_path / "out",
                          "--annotations", "in-file", "--label_map", "x=inf",
                          "--label_names", "open", "closed")
    one_line(rc, err, "--label_map 'x'")


def test_subject_regex_matching_nothing_is_an_error(tmp_path, capsys):
    files = make_raw(tmp_path / "raw")
    rows = [f"{f},{'open' if k % 2 else 'closed'}" for k, f in enumerate(files)]
    rc, err = prepare_csv(tmp_path, capsys, rows, "--subject_regex", r"^(P\d+)_")
    one_line(rc, err, "--subject_regex", "matches none")
    # matching some names: the others are errors.tsv rows, never a silent fallback
    fx.write_edf(tmp_path / "raw" / "P1_a.edf", NAMES, 12, sfreq=160.0, seed=7)
    fx.write_edf(tmp_path / "raw" / "P2_b.edf", NAMES, 12, sfreq=160.0, seed=8)
    fx.write_edf(tmp_path / "raw" / "P3_c.edf", NAMES, 12, sfreq=160.0, seed=9)
    rows += ["P1_a.edf,open", "P2_b.edf,closed", "P3_c.edf,open"]
    rc, err = prepare_csv(tmp_path, capsys, rows, "--subject_regex", r"^(P\d+)_",
                          "--val_fraction", 0.34, "--test_fraction", 0.34)
    assert rc == 0, err
    reasons = (tmp_path / "out" / "errors.tsv").read_text()
    assert all(f"{f}\t--subject_regex" in reasons for f in files)
    splits = json.loads((tmp_path / "out" / "splits.json").read_text())["splits"]
    assert sorted(s for v in splits.values() for s in v["subjects"]) == ["P1", "P2", "P3"]


@pytest.mark.parametrize("layout", ["missing", "plain"])
def test_bids_on_a_folder_that_is_not_bids(tmp_path, capsys, layout):
    raw = tmp_path / "raw"
    if layout == "plain":
        make_raw(raw)
    rc, err = run_prepare(capsys, "--raw_dir", raw, "--out_dir", tmp_path / "out", "--bids",
                          "--label_map", "x=open", "--label_names", "open", "closed")
    one_line(rc, err, str(raw), "not a folder" if layout == "missing" else "not a BIDS dataset")


# ----------------------------------------------------------------------------- pack

def write_pickles(folder: Path, n: int, subject: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        common.write_sample(folder / f"file{seed}_{k:04d}.pkl",
                            rng.standard_normal((2, 400)).astype(np.float32) * 20, ["C3", "C4"],
                            y=k % 2, recording=f"rec{seed}", subject=subject, window=k + 10,
                            onset_s=2.5 * k)


def test_pack_copies_what_the_sample_says(tmp_path):
    write_pickles(tmp_path / "src" / "train", 3, subject="P07")
    pack.pack(tmp_path / "src", tmp_path / "store", progress=False)
    windows = sample_store.ShardWindows(tmp_path / "store", "train")
    rows = [windows.record(i) for i in range(len(windows))]
    assert [(r["recording"], r["subject"], r["window"], r["onset_s"]) for r in rows] == [
        ("rec0", "P07", 10, 0.0), ("rec0", "P07", 11, 2.5), ("rec0", "P07", 12, 5.0)]
    # the public code's files say nothing of their origin: nothing is guessed from the name
    public = tmp_path / "public" / "train"
    public.mkdir(parents=True)
    (public / "aaaaaaaa_s001_t000_0.pkl").write_bytes(pickle.dumps(
        {"X": np.zeros((2, 400), np.float32) + 1, "ch_names": ["C3", "C4"], "y": 1}))
    pack.pack(tmp_path / "public", tmp_path / "public_store", progress=False)
    row = sample_store.ShardWindows(tmp_path / "public_store", "train").record(0)
    assert (row["recording"], row["subject"], row["window"], row["onset_s"]) == (
        None, None, None, None)


def test_pack_resumes_only_its_own_source(tmp_path, capsys):
    write_pickles(tmp_path / "a" / "train", 4, subject="A", seed=1)
    write_pickles(tmp_path / "b" / "train", 4, subject="B", seed=2)
    pack.main([str(tmp_path / "a"), "--out_dir", str(tmp_path / "store")])
    before = (tmp_path / "store" / sample_store.MANIFEST).read_text()
    pack.main([str(tmp_path / "a"), "--out_dir", str(tmp_path / "store")])   # same source: ok
    assert json.loads((tmp_path / "store" / sample_store.MANIFEST).read_text())["windows"] == \
        json.loads(before)["windows"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        pack.main([str(tmp_path / "b"), "--out_dir", str(tmp_path / "store")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in err and "packed from" in err, err
    # the source changed since the store was packed from it
    write_pickles(tmp_path / "a" / "train", 5, subject="A", seed=3)
    with pytest.raises(SystemExit) as stop:
        pack.main([str(tmp_path / "a"), "--out_dir", str(tmp_path / "store")])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "changed" in err, err
    assert (tmp_path / "store" / sample_store.MANIFEST).read_text() == before


def test_pack_into_a_prepared_store_and_prepare_into_a_packed_store_are_refused(tmp_path,
                                                                                 capsys):
    write_pickles(tmp_path / "pkl" / "train", 2, subject="A")
    pack.main([str(tmp_path / "pkl"), "--out_dir", str(tmp_path / "packed")])
    files = make_raw(tmp_path / "raw")
    (tmp_path / "labels.csv").write_text(
        "file,label\n" + "".join(f"{f},{k % 2}\n" for k, f in enumerate(files)))
    rc, err = run_prepare(capsys, "--raw_dir", tmp_path / "raw", "--out_dir",
                          tmp_path / "packed", "--labels", tmp_path / "labels.csv",
                          "--label_names", "open", "closed", "--format", "shards",
                          "--workers", 1)
    one_line(rc, err, "packed from")
    rc, err = run_prepare(capsys, "--raw_dir", tmp_path / "raw", "--out_dir",
                          tmp_path / "prepared", "--labels", tmp_path / "labels.csv",
                          "--label_names", "open", "closed", "--format", "shards",
                          "--workers", 1, "--val_fraction", 0.25, "--test_fraction", 0.25)
    assert rc == 0, err
    with pytest.raises(SystemExit) as stop:
        pack.main([str(tmp_path / "pkl"), "--out_dir", str(tmp_path / "prepared")])
    assert stop.value.code == 2 and "made by a prepare script" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit) as stop:
        pack.main([str(tmp_path / "pkl"), "--out_dir", str(tmp_path / "a_file")])
    assert stop.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err


# ----------------------------------------------------------------------------- damaged stores

def small_store(root: Path) -> Path:
    writer = shards.ShardSetWriter(root, shard_mb=1)
    rng = np.random.default_rng(0)
    for k in range(3):
        writer.add("train", rng.standard_normal((2, 400)), ["C3", "C4"], k % 2, name=f"w{k}")
    writer.commit()
    return root


def test_truncated_shard_names_the_file(tmp_path):
    store = small_store(tmp_path / "store")
    shard = next(store.glob("train/shard-*.arrow"))
    shard.write_bytes(shard.read_bytes()[:300])
    windows = sample_store.ShardWindows(store, "train")
    with pytest.raises(dataset.SampleFileError, match=f"{shard}: unreadable shard"):
        windows.window(0)


@pytest.mark.parametrize("entry, problem", [
    ({"windows": -3}, "not a count"), ({"windows": 2.5}, "not a count"),
    ({"file": "../outside.arrow"}, "outside the store"),
    ({"file": "/etc/passwd"}, "outside the store"), ({"file": None}, "without a file"),
])
def test_manifest_entries_are_checked(tmp_path, entry, problem):
    store = small_store(tmp_path / "store")
    manifest = json.loads((store / sample_store.MANIFEST).read_text())
    manifest["splits"]["train"][0].update(entry)
    (store / sample_store.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(sample_store.StoreError, match=problem) as error:
        sample_store.ShardWindows(store, "train")
    assert str(store / sample_store.MANIFEST) in str(error.value)


def test_prepare_into_a_damaged_store_is_one_line(tmp_path, capsys):
    files = make_raw(tmp_path / "raw")
    (tmp_path / "labels.csv").write_text(
        "file,label\n" + "".join(f"{f},{k % 2}\n" for k, f in enumerate(files)))
    argv = ["--raw_dir", tmp_path / "raw", "--out_dir", tmp_path / "out", "--labels",
            tmp_path / "labels.csv", "--label_names", "open", "closed", "--format", "shards",
            "--workers", 1, "--val_fraction", 0.25, "--test_fraction", 0.25]
    assert run_prepare(capsys, *argv)[0] == 0
    shard = next((tmp_path / "out").glob("train/shard-*.arrow"))
    shard.write_bytes(shard.read_bytes()[:200])
    rc, err = run_prepare(capsys, *argv)
    one_line(rc, err, str(shard), "unreadable shard")
