"""A prepare run again on the same --out_dir leaves exactly what a run into an empty folder
leaves: changed labels, window, label files or listed recordings never keep a stale sample, in
the pickle layout and in the sharded store."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import raw_fixtures as fx

import sample_store
from dataset_maker import common, prepare_custom, prepare_TUSL

NAMES = ["Fp1.", "Fp2.", "C3..", "C4.."]
FORMATS = ("pickle", "shards")


def make_custom(raw: Path) -> list[str]:
    """Six 12 s recordings of three subjects; returns their file names."""
    files = []
    for s in range(3):
        for k in range(2):
            name = f"S{s}_{k}.edf"
            fx.write_edf(raw / name, NAMES, 12, sfreq=160.0, seed=10 * s + k)
            files.append(name)
    return files


def write_labels(path: Path, labels: dict[str, str]) -> Path:
    path.write_text("file,label\n" + "".join(f"{f},{y}\n" for f, y in labels.items()))
    return path



def alternating_labels(tmp_path: Path) -> tuple[Path, list[str], Path]:
    """The custom recordings under tmp_path/raw, labelled closed/open in turn in labels.csv."""
    raw = tmp_path / "raw"
    files = make_custom(raw)
    labels = {f: ("open" if i % 2 else "closed") for i, f in enumerate(files)}
    return raw, files, write_labels(tmp_path / "labels.csv", labels)


def prepare(raw, out, labels, fmt, *extra):
    argv = ["--raw_dir", raw, "--out_dir", out, "--labels", labels, "--label_names", "open",
            "closed", "--workers", "1", "--format", fmt, "--shard_mb", "0.05", *extra]
    return common.script_main(prepare_custom.main, [str(a) for a in argv])


def contents(out: Path, fmt: str) -> dict:
    """Every window the folder holds: {split: [(name, y, subject, X bytes)]}."""
    if fmt == "shards":
        manifest = sample_store.read_manifest(out)
        result = {}
        for split in manifest["splits"]:
            windows = sample_store.ShardWindows(out, split)
            rows = [windows.record(i) for i in range(len(windows))]
            result[split] = [(r["name"], r["y"], r["subject"], r.get("window"),
                              np.ascontiguousarray(r["X"]).tobytes()) for r in rows]
        return result
    result = {}
    for split in ("train", "val", "test", common.STAGING_DIR):
        files = sorted((out / split).glob("*.pkl")) if (out / split).is_dir() else []
        result[split] = [(f.name, f.read_bytes()) for f in files]
    return {k: v for k, v in result.items() if v}


@pytest.mark.parametrize("fmt", FORMATS)
def test_changed_labels_are_never_stale(tmp_path, fmt, capsys):
    raw = tmp_path / "raw"
    files = make_custom(raw)
    first = {f: ("open" if i % 2 else "closed") for i, f in enumerate(files)}
    prepare(raw, tmp_path / "out", write_labels(tmp_path / "a.csv", first), fmt)
    # corrected labels: two flipped, one recording no longer listed
    second = dict(first)
    second[files[0]], second[files[3]] = "open", "closed"
    del second[files[4]]
    labels = write_labels(tmp_path / "b.csv", second)
    prepare(raw, tmp_path / "out", labels, fmt)
    prepare(raw, tmp_path / "fresh", labels, fmt)
    got, want = contents(tmp_path / "out", fmt), contents(tmp_path / "fresh", fmt)
    assert got == want
    assert not any(files[4].removesuffix(".edf") in str(entry) for entries in got.values()
                   for entry in entries)


@pytest.mark.parametrize("fmt", FORMATS)
def test_changed_window_is_never_stale(tmp_path, fmt, capsys):
    raw, files, labels = alternating_labels(tmp_path)
    prepare(raw, tmp_path / "out", labels, fmt, "--window", 4)
    prepare(raw, tmp_path / "out", labels, fmt, "--window", 3)
    prepare(raw, tmp_path / "fresh", labels, fmt, "--window", 3)
    assert contents(tmp_path / "out", fmt) == contents(tmp_path / "fresh", fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_unchanged_rerun_processes_nothing(tmp_path, fmt, capsys, monkeypatch):
    from dataset_maker import engine

    raw, files, labels = alternating_labels(tmp_path)
    prepare(raw, tmp_path / "out", labels, fmt)
    before = contents(tmp_path / "out", fmt)
    processed = []
    process_one = engine.process_one
    monkeypatch.setattr(engine, "process_one",
                        lambda f, rec: processed.append(rec.rec_id) or process_one(f, rec))
    fx.write_edf(raw / files[2], NAMES, 12, sfreq=160.0, seed=99)   # one recording re-exported
    prepare(raw, tmp_path / "out", labels, fmt)
    assert processed == [files[2].removesuffix(".edf")]
    after = contents(tmp_path / "out", fmt)
    assert after != before
    prepare(raw, tmp_path / "fresh", labels, fmt)
    assert after == contents(tmp_path / "fresh", fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrected_label_file_of_a_built_in_dataset_is_reprocessed(tmp_path, fmt, capsys):
    raw = tmp_path / "raw"
    fx.make_tusl(raw)

    def run(out):
        prepare_TUSL.main(["--raw_dir", str(raw), "--out_dir", str(out), "--workers", "1",
                           "--format", fmt, "--shard_mb", "0.05"])

    run(tmp_path / "out")
    label_file = next(raw.rglob("*.tse_agg"))
    label_file.write_text(label_file.read_text().replace("seiz", "slow"))
    run(tmp_path / "out")
    run(tmp_path / "fresh")
    assert contents(tmp_path / "out", fmt) == contents(tmp_path / "fresh", fmt)


def test_another_dataset_in_the_out_dir_is_refused(tmp_path, capsys):
    raw = tmp_path / "raw"
    fx.make_tusl(raw)
    prepare_TUSL.main(["--raw_dir", str(raw), "--out_dir", str(tmp_path / "out"),
                       "--workers", "1"])
    files = make_custom(tmp_path / "custom")
    labels = write_labels(tmp_path / "labels.csv", {f: "open" for f in files})
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        prepare(tmp_path / "custom", tmp_path / "out", labels, "pickle")
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds samples of TUSL" in err and "--out_dir" in err
    assert len(list((tmp_path / "out" / "train").glob("*.pkl"))) > 0   # nothing removed


@pytest.mark.parametrize("first, second", [("pickle", "shards"), ("shards", "pickle")])
def test_another_format_in_the_out_dir_is_refused(tmp_path, capsys, first, second):
    raw, files, labels = alternating_labels(tmp_path)
    prepare(raw, tmp_path / "out", labels, first)
    before = contents(tmp_path / "out", first)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        prepare(raw, tmp_path / "out", labels, second)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in err and f"--format {first}" in err, err
    assert contents(tmp_path / "out", first) == before
