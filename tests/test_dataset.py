"""dataset.py: channel vocabulary, safe unpickling, legacy files, tokens and PickleLoader
targets."""

import os
import pickle

import numpy as np
import pytest
import torch

import dataset
from dataset import (
    CHANNEL_VOCAB,
    PickleLoader,
    UnsafePickleError,
    channel_index,
    eeg_tokens,
    load_sample,
)


def test_vocabulary_order_and_lookup():
    assert len(CHANNEL_VOCAB) == 139 and len(set(CHANNEL_VOCAB)) == 139
    assert CHANNEL_VOCAB[:3] == ["FP1", "FPZ", "FP2"] and CHANNEL_VOCAB[-3:] == ["pad", "I1", "I2"]
    assert channel_index("T3") == 88 and channel_index("FTT9h") == channel_index("FTT9H") == 114
    assert channel_index("P4-O2") == 135 and channel_index("pad") == 136
    with pytest.raises(ValueError, match="'XYZ9'"):
        channel_index("XYZ9")
    assert (all(c in CHANNEL_VOCAB for c in dataset.LEGACY_TUH_CHANNELS)
            and len(dataset.LEGACY_TUH_CHANNELS) == 23)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_carrying_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"X": _RunsCode(marker)}))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl.*system"):
        dataset.safe_load_pickle(path)
    with pytest.raises(UnsafePickleError):
        load_sample(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_loader_reads_numpy_samples_of_every_protocol(tmp_path, protocol):
    path = tmp_path / "s.pkl"
    X = np.arange(600, dtype=np.float64).reshape(2, 300)
    path.write_bytes(pickle.dumps({"X": X, "ch_names": ["C3", "C4"], "y": np.int64(1),
                                   "t": (1.5, "a")}, protocol=protocol))
    loaded = dataset.safe_load_pickle(path)
    np.testing.assert_array_equal(loaded["X"], X)
    sample = load_sample(path)
    assert (sample["X"].dtype == np.float32 and sample["y"] == 1
            and sample["ch_names"] == ["C3", "C4"])


def test_legacy_public_files(tmp_path):
    tuev = tmp_path / "tuev.pkl"
    tuev.write_bytes(pickle.dumps({"signal": np.ones((23, 1000)),
                                   "offending_channel": np.array([3]),
                                   "label": np.array([4.0])}))
    sample = load_sample(tuev)
    assert sample["y"] == 3 and sample["ch_names"] == dataset.LEGACY_TUH_CHANNELS
    assert sample["X"].dtype == np.float32 and sample["X"].shape == (23, 1000)
    tuab = tmp_path / "tuab.pkl"
    tuab.write_bytes(pickle.dumps({"X": np.zeros((23, 2000)), "y": 1}))
    assert load_sample(tuab)["ch_names"] == dataset.LEGACY_TUH_CHANNELS
    pretrain = tmp_path / "p.pkl"
    pretrain.write_bytes(pickle.dumps({"X": np.zeros((2, 400), np.float32),
                                       "ch_names": ["C3", "C4"]}))
    assert load_sample(pretrain)["y"] is None


def test_eeg_tokens_time_major_with_padding():
    C, T = 3, 650  # 3.25 s: the partial last second is dropped
    X = np.arange(C * T, dtype=np.float32).reshape(C, T)
    tokens = eeg_tokens(X, ["C3", "CZ", "C4"], max_tokens=12)
    assert tokens["x_eeg"].shape == (12, 200) and tokens["x_eeg"].dtype == torch.float32
    assert tokens["input_mask"].tolist() == [True] * 9 + [False] * 3
    assert tokens["input_time"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0]
    c3, cz, c4, pad = (channel_index(c) for c in ("C3", "CZ", "C4", "pad"))
    assert tokens["input_chans"].tolist() == [c3, cz, c4] * 3 + [pad] * 3
    # token a*C + c is channel c, second a, divided by 100
    torch.testing.assert_close(tokens["x_eeg"][4], torch.from_numpy(X[1, 200:400] / 100))
    assert tokens["x_eeg"][9:].abs().sum() == 0
    # too many tokens: whole trailing seconds dropped
    short = eeg_tokens(X, ["C3", "CZ", "C4"], max_tokens=7)
    assert short["input_mask"].tolist() == [True] * 6 + [False]
    with pytest.raises(ValueError, match="'Q1'"):
        eeg_tokens(X, ["C3", "Q1", "C4"], 12)


def _write(path, X, ch_names, y=None):
    sample = {"X": X.astype(np.float32), "ch_names": ch_names}
    if y is not None:
        sample["y"] = y
    path.write_bytes(pickle.dumps(sample))
    return path


def test_pickle_loader_with_and_without_targets(tmp_path):
    rng = np.random.default_rng(0)
    files = [_write(tmp_path / f"{i}.pkl", 30 * rng.standard_normal((4, 800)),
                    ["FP1", "FP2", "C3", "C4"], i)
             for i in range(3)]
    item = PickleLoader(files, block_size=20)[1]
    mask = item["input_mask"]
    assert (item["y_freq"].shape == (20, 100) and item["y_raw"].shape == (20, 200)
            and mask.sum() == 16)
    real = item["y_raw"][mask]
    assert abs(real.mean().item()) < 1e-5 and abs(real.std().item() - 1) < 1e-4
    for key in ("y_freq", "y_raw"):
        assert item[key][~mask].abs().sum() == 0
    real = item["y_raw"][mask]
    assert abs(real.mean().item()) < 1e-5 and abs(real.std().item() - 1) < 1e-5
    # the public definition: the full 200-bin spectrum standardised (torch.std, n - 1) over all
    # real tokens and bins, then its first 100 bins
    amp = torch.fft.fft(item["x_eeg"][mask].double()).abs()
    expected = ((amp - amp.mean()) / amp.std())[:, :100].float()
    torch.testing.assert_close(item["y_freq"][mask], expected, rtol=0, atol=1e-5)
    patches = item["x_eeg"][mask]
    torch.testing.assert_close(real, (patches - patches.mean()) / patches.std(), rtol=1e-5,
                               atol=1e-5)
    plain = PickleLoader(files, block_size=20, targets=False)[0]
    assert (set(plain) == {"x_eeg", "input_chans", "input_time", "input_mask"}
            and len(PickleLoader(files)) == 3)
    batch = torch.utils.data.default_collate([plain, plain])
    assert batch["x_eeg"].shape == (2, 20, 200)


def test_batched_targets_equal_the_per_item_ones():
    torch.manual_seed(0)
    x, mask = 3 * torch.randn(4, 30, 200) + 1, torch.zeros(4, 30, dtype=torch.bool)
    for b, n in enumerate((30, 17, 1, 0)):   # full, padded, one token, no real token
        mask[b, :n] = True
    x[~mask] = 0
    x[2, 0] = 5.0   # a flat sample: centred, not divided by zero
    y_freq, y_raw = dataset.reconstruction_targets_batch(x, mask)
    assert y_freq.shape == (4, 30, 100) and y_raw.shape == (4, 30, 200)
    for b in range(4):
        item = dataset.reconstruction_targets({"x_eeg": x[b], "input_mask": mask[b]})
        torch.testing.assert_close(y_freq[b], item["y_freq"], rtol=0, atol=1e-6)
        torch.testing.assert_close(y_raw[b], item["y_raw"], rtol=0, atol=1e-6)
    assert y_freq[3].abs().sum() == 0 and y_raw[3].abs().sum() == 0
    assert y_freq[1, 17:].abs().sum() == 0 and y_raw[1, 17:].abs().sum() == 0
    assert torch.isfinite(y_freq).all() and y_raw[2].abs().sum() == 0
    # the rfft with mirror weights = the full spectrum's statistics
    amp = torch.fft.fft(x[0].double()).abs()
    expected = ((amp - amp.mean()) / amp.std())[:, :100].float()
    torch.testing.assert_close(y_freq[0], expected, rtol=0, atol=1e-5)


def test_sample_files_of_folders_splits_and_lists(tmp_path):
    for folder, names in (("a/train", ["s1", "s0"]), ("b/train", ["s0"]), ("empty/train", [])):
        (tmp_path / folder).mkdir(parents=True)
        for name in names:
            (tmp_path / folder / f"{name}.pkl").write_bytes(b"")
    (tmp_path / "a/train/.s2.pkl.tmp1").write_bytes(b"")  # a torn temp file is not a sample
    a, b = tmp_path / "a/train", tmp_path / "b/train"
    assert dataset.sample_files(a) == [a / "s0.pkl", a / "s1.pkl"]
    assert dataset.sample_files(str(a)) == [a / "s0.pkl", a / "s1.pkl"]
    # folders in the order given, each one's files sorted by name
    assert dataset.sample_files([tmp_path / "b", tmp_path / "a"], "train") == [
        b / "s0.pkl", a / "s0.pkl", a / "s1.pkl"]
    assert dataset.sample_files([a / "s1.pkl", b / "s0.pkl"]) == [a / "s1.pkl", b / "s0.pkl"]
    with pytest.raises(FileNotFoundError, match=r"empty/train holds no sample files.*--out_dir"):
        dataset.sample_files([tmp_path / "a", tmp_path / "empty"], "train")
    with pytest.raises(FileNotFoundError, match=r"nowhere is not a folder of sample files"):
        dataset.sample_files(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"gone\.pkl: no such sample file"):
        dataset.sample_files([a / "gone.pkl"])
