"""Every prepare script on tiny synthetic raw data in its dataset's layout: counts, shapes,
labels, channel names, 200 Hz, microvolts, float32, disjoint splits."""

import json
from pathlib import Path

import numpy as np
import raw_fixtures as fx

import dataset
from dataset_maker import (
    prepare_HMC,
    prepare_SEED,
    prepare_TUAB,
    prepare_TUEV,
    prepare_TUH_pretrain,
    prepare_TUSL,
    prepare_workload,
    tuh,
)


def run_script(module, raw, out, *extra):
    return module.main(["--raw_dir", str(raw), "--out_dir", str(out), "--workers", "1", *extra])


def read_split_samples(out: Path):
    return {split.name: sorted(split.glob("*.pkl")) for split in sorted(out.iterdir())
            if split.is_dir() and not split.name.startswith(".")}


def check_samples(out, counts, ch_names, seconds, labels):
    """Counts per split, exact float32 pickles, shapes, channels, labels, microvolts, 200 Hz."""
    files = read_split_samples(out)
    assert {s: len(f) for s, f in files.items()} == counts
    seen_labels = set()
    for split_files in files.values():
        for path in split_files:
            raw = dataset.safe_load_pickle(path)
            assert raw["X"].dtype == np.float32 and raw["X"].shape == (len(ch_names), 200 * seconds)
            assert raw["ch_names"] == list(ch_names)
            seen_labels.add(raw.get("y"))
            rms = float(np.sqrt((raw["X"].astype(float) ** 2).mean()))
            assert 3 < rms < 100, f"{path}: rms {rms} is not a microvolt EEG amplitude"
    assert seen_labels <= set(labels)
    # The fixtures' 10 Hz rhythm lands on 10 Hz only if the samples are at 200 Hz.
    X = dataset.load_sample(files["train"][0])["X"]
    spectrum = np.abs(np.fft.rfft(X, axis=1)).mean(axis=0)
    assert abs(np.fft.rfftfreq(X.shape[1], 1 / 200)[spectrum.argmax()] - 10) < 0.5
    assert (Path(out) / "errors.tsv").read_text() == "file\treason\n"
    return files


def check_disjoint(out, key="subjects"):
    splits = json.loads((Path(out) / "splits.json").read_text())["splits"]
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not set(splits[a][key]) & set(splits[b][key]), (a, b)
    return splits


def test_workload(tmp_path):
    fx.make_workload(tmp_path / "raw")
    summary = run_script(prepare_workload, tmp_path / "raw", tmp_path / "out")
    check_samples(tmp_path / "out", {"train": 58, "val": 58, "test": 58}, prepare_workload.CHANNELS,
                  4, {0, 1})
    splits = check_disjoint(tmp_path / "out")
    assert (splits["train"]["subjects"] == ["Subject00"]
            and splits["test"]["subjects"] == ["Subject02"])
    assert dataset.load_sample(tmp_path / "out/val/Subject01_2_0000.pkl")["y"] == 1
    assert summary["recordings_ok"] == 6 and summary["samples"]["val"] == {"0": 29, "1": 29}


def test_tuab(tmp_path):
    fx.make_tuab(tmp_path / "raw")
    run_script(prepare_TUAB, tmp_path / "raw", tmp_path / "out")
    files = check_samples(tmp_path / "out", {"train": 6, "val": 2, "test": 4}, tuh.TUH_CHANNELS, 10,
                          {0, 1})
    splits = check_disjoint(tmp_path / "out")
    assert splits["test"]["subjects"] == ["eeeeeeee", "ffffffff"]
    for path in files["test"]:
        assert dataset.load_sample(path)["y"] == (1 if path.name.startswith("f") else 0)


def test_tuev_events_and_edges(tmp_path):
    fx.make_tuev(tmp_path / "raw")
    run_script(prepare_TUEV, tmp_path / "raw", tmp_path / "out")
    files = check_samples(tmp_path / "out", {"train": 9, "val": 3, "test": 6}, tuh.TUH_CHANNELS, 5,
                          set(range(6)))
    check_disjoint(tmp_path / "out")
    first = {p.name: dataset.load_sample(p)["y"] for s in files.values() for p in s
             if p.name.endswith("_0000.pkl")}
    assert first["eeeeeeee_00000001_0000.pkl"] == 0 and first["ffffffff_00000001_0000.pkl"] == 1
    assert all(dataset.load_sample(p)["y"] == 5 for s in files.values() for p in s
               if p.name.endswith("_0001.pkl"))
    # the edge events get whole 5 s windows from inside the recording; the middle one starts at 6 s
    from dataset_maker import common
    eeg = common.load_eeg(tmp_path / "raw/eval/eeeeeeee/eeeeeeee_00000001.edf", prepare_TUEV.SIGNAL)
    middle = dataset.load_sample(tmp_path / "out/test/eeeeeeee_00000001_0000.pkl")["X"]
    np.testing.assert_array_equal(middle, eeg.data[:, 6 * 200:11 * 200].astype(np.float32))
    last = dataset.load_sample(tmp_path / "out/test/eeeeeeee_00000001_0002.pkl")["X"]
    np.testing.assert_array_equal(last, eeg.data[:, -1000:].astype(np.float32))


def test_tusl(tmp_path):
    fx.make_tusl(tmp_path / "raw")
    run_script(prepare_TUSL, tmp_path / "raw", tmp_path / "out")
    files = check_samples(tmp_path / "out", {"train": 9, "val": 3, "test": 3}, tuh.TUH_CHANNELS, 10,
                          {0, 1, 2})
    check_disjoint(tmp_path / "out")
    labels = [dataset.load_sample(p)["y"] for p in files["test"]]
    # two background windows then one seizure window; 5 s of slowing give none
    assert labels == [0, 0, 1]


def test_hmc(tmp_path):
    fx.make_hmc(tmp_path / "raw")
    run_script(prepare_HMC, tmp_path / "raw", tmp_path / "out")
    files = check_samples(tmp_path / "out", {"train": 20, "val": 5, "test": 5},
                          ("F4", "C4", "O2", "C3"), 30, set(range(5)))
    splits = check_disjoint(tmp_path / "out")
    assert (splits["train"]["subjects"] == ["SN001", "SN002", "SN003", "SN004"]
            and splits["test"]["subjects"] == ["SN006"])
    # SN006 is scored N1 N2 N3 R W (rotation by 6 % 5 = 1)
    assert [dataset.load_sample(p)["y"] for p in files["test"]] == [1, 2, 3, 4, 0]


def test_seed_split_by_trial(tmp_path):
    fx.make_seed(tmp_path / "raw")
    run_script(prepare_SEED, tmp_path / "raw", tmp_path / "out")
    check_samples(tmp_path / "out", {"train": 36, "val": 12, "test": 12}, prepare_SEED.CHANNELS, 4,
                  {0, 1, 2})
    splits = check_disjoint(tmp_path / "out", key="units")
    assert len(splits["train"]["units"]) == 18 and len(splits["test"]["units"]) == 6
    # trial 1 (label 1 = positive) -> y 0; trial 15 (label -1 = negative) -> y 2
    assert dataset.load_sample(tmp_path / "out/train/1_20140101_0000.pkl")["y"] == 0
    assert dataset.load_sample(tmp_path / "out/test/1_20140101_0029.pkl")["y"] == 2


def test_tuh_pretrain_windows_and_subject_exclusion(tmp_path):
    fx.make_tuh_pretrain(tmp_path / "raw")
    names = [f"EEG {c}-LE" for c in "FP1 FP2 C3 C4".split()]
    fx.write_edf(tmp_path / "raw/edf/001/eeeeeeee/s001/02_tcp_le/eeeeeeee_s001_t000.edf", names, 70,
                 250.0)
    run_script(prepare_TUH_pretrain, tmp_path / "raw", tmp_path / "out")
    files = read_split_samples(tmp_path / "out")
    assert {s: len(f) for s, f in files.items()} == {"train": 3, "val": 1}
    sample = dataset.safe_load_pickle(files["train"][0])
    assert set(sample) == {"X", "ch_names", "recording", "subject", "window"}
    assert sample["subject"] == "aaaaaaaa" and sample["X"].dtype == np.float32
    assert sample["X"].shape == (23, 44 * 200) and sample["ch_names"] == list(tuh.TUH_CHANNELS)
    assert "linked-ear" in (tmp_path / "out/errors.tsv").read_text()
    check_disjoint(tmp_path / "out")

    downstream = tmp_path / "downstream"
    downstream.mkdir()
    (downstream / "splits.json").write_text(
        json.dumps({"splits": {"test": {"subjects": ["aaaaaaaa"]}}}))
    (downstream / "more.txt").write_text("bbbbbbbb  # from a text list\n")
    assert prepare_TUH_pretrain.read_excluded_subjects(downstream / "more.txt") == {"bbbbbbbb"}
    run_script(prepare_TUH_pretrain, tmp_path / "raw", tmp_path / "out2", "--exclude_subjects",
               str(downstream))
    kept = [p.name for f in read_split_samples(tmp_path / "out2").values() for p in f]
    assert len(kept) == 3 and not any(name.startswith("aaaaaaaa") for name in kept)


def test_pretrain_window_is_capped_at_64_seconds():
    assert prepare_TUH_pretrain.window_seconds(23) == 44
    assert (prepare_TUH_pretrain.window_seconds(4) == 64
            and prepare_TUH_pretrain.window_seconds(16) == 64)
