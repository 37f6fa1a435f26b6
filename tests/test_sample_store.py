"""The sharded sample store: prepare --format shards == the pickles bit for bit, provenance,
resuming a killed prepare, packing the public code's pickles and training on them, 2 ranks x 2
workers seeing every window once, mid-epoch resume, weighted mixing of stores."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import raw_fixtures as fx
import torch
from test_train_resume import assert_same, full_then_killed
from train_fixtures import tiny_inputs, vq_args

import dataset
import sample_store
import train_vq
from dataset_maker import engine, pack, prepare_TUAB, shards
from training.data import make_loader
from training.runtime import Runtime


def prepare(raw, out, *extra):
    return prepare_TUAB.main(["--raw_dir", str(raw), "--out_dir", str(out), "--workers", "1",
                              *extra])


def store_windows(folder, split):
    windows = sample_store.ShardWindows(folder, split)
    return {r["name"]: r for r in (windows.record(i) for i in range(len(windows)))}


BAD = "gggggggg_s001_t000.edf"


@pytest.fixture(scope="module")
def tuab(tmp_path_factory):
    """TUAB recordings prepared twice: pickles, and shards of ~0.5 MB (several per split)."""
    root = tmp_path_factory.mktemp("tuab")
    fx.make_tuab(root / "raw")
    # unreadable: it must take no split slot in either format (splits chosen after processing)
    (root / "raw" / "train" / "normal" / "01_tcp_ar" / BAD).write_bytes(b"0       not an EDF")
    prepare(root / "raw", root / "pkl")
    prepare(root / "raw", root / "shards", "--format", "shards", "--shard_mb", "0.5")
    return root


def test_prepare_shards_hold_every_window_bit_exactly(tuab):
    manifest = sample_store.read_manifest(tuab / "shards")
    for split in ("train", "val", "test"):
        pickles = sorted((tuab / "pkl" / split).glob("*.pkl"))
        rows = store_windows(tuab / "shards", split)
        assert sorted(rows) == [p.name for p in pickles] and pickles
        for path in pickles:
            saved, row = dataset.safe_load_pickle(path), rows[path.name]
            assert row["X"].dtype == np.float32 and row["X"].tobytes() == saved["X"].tobytes()
            assert row["ch_names"] == saved["ch_names"] and row["y"] == saved["y"]
            # the provenance the pickles do not carry
            assert row["recording"] == path.stem.rsplit("_", 1)[0]
            assert Path(row["source_file"]).stem == row["recording"]
            assert row["subject"] == row["recording"].split("_")[0]
            assert (row["source_sfreq"], row["sfreq"]) == (250.0, 200.0)
            assert (row["band_low_hz"], row["band_high_hz"], row["notch_hz"]) == (0.1, 75.0, 50.0)
        # the trainers' items are the same from either layout
        store = sample_store.open_split([tuab / "shards"], split, 256, targets=True)
        loader = sample_store.open_split([tuab / "pkl"], split, 256, targets=True)
        assert isinstance(store, sample_store.ShardLoader) and len(store) == len(loader)
    assert len(manifest["splits"]["train"]) > 1
    # the same errors.tsv / splits.json as the pickle run
    for name in ("errors.tsv", "splits.json"):
        assert (tuab / "shards" / name).read_text() == (tuab / "pkl" / name).read_text()
    assert BAD in (tuab / "shards" / "errors.tsv").read_text()
    assert "gggggggg" not in (tuab / "shards" / "splits.json").read_text()
    assert set(manifest["splits"]) == {"train", "val", "test"}   # staging placed and gone
    assert not (tuab / "shards" / ".staging").exists() or not any(
        (tuab / "shards" / ".staging").iterdir())


def test_killed_placement_resumes_and_a_rerun_rewrites_nothing(tuab, tmp_path, monkeypatch):
    write, place = shards.ShardSetWriter._write_manifest, shards.ShardSetWriter.place
    placed = []

    def dying_write(self):
        if ".staging" not in self.manifest["splits"]:   # the placement's commit
            raise KeyboardInterrupt("simulated kill")
        return write(self)

    monkeypatch.setattr(shards.ShardSetWriter, "_write_manifest", dying_write)
    with pytest.raises(KeyboardInterrupt):
        prepare(tuab / "raw", tmp_path / "out", "--format", "shards", "--shard_mb", "0.5")
    monkeypatch.setattr(shards.ShardSetWriter, "_write_manifest", write)
    monkeypatch.setattr(shards.ShardSetWriter, "place",
                        lambda self, *a: placed.append(place(self, *a)) or placed[-1])
    process, processed = engine.process_one, []
    monkeypatch.setattr(engine, "process_one",
                        lambda f, rec: processed.append(rec.path.name) or process(f, rec))
    for _ in range(2):
        prepare(tuab / "raw", tmp_path / "out", "--format", "shards", "--shard_mb", "0.5")
    assert processed == [BAD, BAD]   # only the failed recording is tried again
    assert placed[0] and placed[1] == []   # the rerun finds every split as wanted
    files = sorted(p.relative_to(tmp_path / "out").as_posix()
                   for p in (tmp_path / "out").rglob("shard-*.arrow"))
    listed = sorted(e["file"] for es in sample_store.read_manifest(tmp_path / "out")[
        "splits"].values() for e in es)
    assert files == listed
    for split in ("train", "val", "test"):
        got, want = store_windows(tmp_path / "out", split), store_windows(tuab / "shards", split)
        assert list(got) == list(want)
        for name in want:
            assert got[name]["X"].tobytes() == want[name]["X"].tobytes()


def test_killed_prepare_resumes_to_the_same_store(tuab, tmp_path, monkeypatch):
    commit, calls = shards.ShardSetWriter.commit, []

    def dying_commit(self, committed=None):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated kill")
        return commit(self, committed)

    monkeypatch.setattr(shards.ShardSetWriter, "commit", dying_commit)
    with pytest.raises(KeyboardInterrupt):
        prepare(tuab / "raw", tmp_path / "out", "--format", "shards", "--shard_mb", "0.5")
    monkeypatch.undo()
    prepare(tuab / "raw", tmp_path / "out", "--format", "shards", "--shard_mb", "0.5")
    for split in ("train", "val", "test"):
        got, want = store_windows(tmp_path / "out", split), store_windows(tuab / "shards", split)
        assert list(got) == list(want)   # no window twice, none lost, same order
        for name in want:
            assert got[name]["X"].tobytes() == want[name]["X"].tobytes()


def write_public_pickles(folder: Path, n: int, seconds: int = 4, seed: int = 0):
    """Pretraining windows as the public code writes them: float64, upper-case names, no y."""
    rng = np.random.default_rng(seed)
    names = ["FP1", "FP2", "C3", "C4"]
    folder.mkdir(parents=True)
    for i in range(n):
        sample = {"X": rng.standard_normal((len(names), 200 * seconds)) * 30.0, "ch_names": names}
        (folder / f"aaaaaaaa_s001_t000_{i}.pkl").write_bytes(pickle.dumps(sample))


def test_public_pickle_folder_packs_and_trains(train_root, tmp_path, single_thread):
    for split, n in (("train", 8), ("val", 4)):
        write_public_pickles(tmp_path / "public" / split, n, seed=n)
    (tmp_path / "public" / "train" / "broken.pkl").write_bytes(b"\x80\x05truncated")
    summary = pack.main([str(tmp_path / "public"), "--out_dir", str(tmp_path / "store")])
    assert summary["windows"] == {"train": 8, "val": 4} and summary["errors"] == 1
    assert "broken.pkl" in (tmp_path / "store" / "errors.tsv").read_text()
    for split in ("train", "val"):
        files = sorted((tmp_path / "public" / split).glob("aaaa*.pkl"))
        rows = store_windows(tmp_path / "store", split)
        for path in files:   # float64 -> float32 exactly as the loader reads the pickle
            assert rows[path.name]["X"].tobytes() == dataset.load_sample(path)["X"].tobytes()
    _, text = tiny_inputs(train_root)
    last = train_vq.main(vq_args(tmp_path / "store", text, tmp_path / "vq", "--max_steps", "2"))
    assert torch.load(last, weights_only=True)["iter_num"] == 2


class Names(torch.utils.data.Dataset):
    """A store's window names: which windows a loader returned."""

    def __init__(self, folder):
        self.windows = sample_store.ShardWindows(folder, "train")

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        return self.windows.record(i)["name"]


def rank_runtime(rank, world_size):
    return Runtime(device=torch.device("cpu"), rank=rank, local_rank=rank, world_size=world_size,
                   local_world_size=world_size, ddp=False, amp_dtype=None, seed=0)


def test_two_ranks_two_workers_see_every_window_once_and_resume_mid_epoch(tuab):
    data = Names(tuab / "shards")
    seen, resumed = [], []
    for rank in range(2):
        loader = make_loader(data, 1, rank_runtime(rank, 2), num_workers=2, seed=5,
                             drop_last=False, collate_fn=list)
        loader.set_epoch(1)
        batches = list(loader)
        seen += [name for b in batches for name in b]
        loader.set_epoch(1, skip_batches=2)   # a resume after two batches of epoch 1
        resumed.append((batches[2:], list(loader)))
    assert len(data) >= 6 and len(set(seen)) == len(data)
    assert len(seen) == len(data) + len(data) % 2   # an odd count repeats one to keep ranks even
    for full_tail, after_resume in resumed:
        assert full_tail == after_resume


def test_training_from_shards_resumes_exactly(tuab, train_root, tmp_path, monkeypatch,
                                              single_thread):
    _, text = tiny_inputs(train_root)
    def argv(out):
        return vq_args(tuab / "shards", text, out, "--block_size", "256", "--max_steps",
                       "4", "--save_every", "2")

    full = full_then_killed(train_vq, argv, tmp_path, monkeypatch, step=3)
    resumed = train_vq.main([*argv(tmp_path / "part"), "--resume", "auto"])
    a, b = torch.load(full, weights_only=True), torch.load(resumed, weights_only=True)
    assert_same(a["model"], b["model"], "model")
    assert_same(a["optimizer"], b["optimizer"], "optimizer")


def test_weighted_stores_give_their_share_and_cycle_through_every_window(tuab):
    big = Names(tuab / "shards")
    small = [f"s{i}" for i in range(6)]
    mixed = sample_store.MixedStores([big, small], [0.5, 2.0], seed=3)
    assert len(mixed) == round(0.5 * len(big)) + 12
    loader = make_loader(mixed, 4, rank_runtime(0, 1), num_workers=0, seed=1, collate_fn=list)
    epochs = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        epochs.append([name for b in loader for name in b])
    for names in epochs:   # the small store twice per epoch, the big one half
        assert sorted(x for x in names if x in small) == sorted(small * 2)
    big_seen = [x for names in epochs for x in names if x not in small]
    if len(big) % 2 == 0:  # two half-epochs make one whole pass
        assert sorted(big_seen) == sorted(big[i] for i in range(len(big)))
    with pytest.raises(ValueError, match="weights"):
        sample_store.MixedStores([big, small], [1.0])


def test_store_start_up_reads_the_manifest_only(tuab, monkeypatch):
    def no_listing(*a, **k):
        raise AssertionError("listed a folder")

    monkeypatch.setattr(Path, "glob", no_listing)
    monkeypatch.setattr(Path, "iterdir", no_listing)
    store = sample_store.open_split([tuab / "shards"], "train", 256, targets=False)
    assert len(store) > 0 and store[len(store) - 1]["input_mask"].any()
