"""dataset.py: channel vocabulary, safe unpickling, legacy files, tokens and PickleLoader targets."""

import os
import pickle

import numpy as np
import pytest
import torch

import dataset
from dataset import CHANNEL_VOCAB, PickleLoader, UnsafePickleError, channel_index, eeg_tokens, load_sample


def test_vocabulary_order_and_lookup():
    assert len(CHANNEL_VOCAB) == 139 and len(set(CHANNEL_VOCAB)) == 139
    assert CHANNEL_VOCAB[:3] == ["FP1", "FPZ", "FP2"] and CHANNEL_VOCAB[-3:] == ["pad", "I1", "I2"]
    assert channel_index("T3") == 88 and channel_index("FTT9h") == channel_index("FTT9H") == 114
    assert channel_index("P4-O2") == 135 and channel_index("pad") == 136
    with pytest.raises(ValueError, match="'XYZ9'"):
        channel_index("XYZ9")
    assert all(c in CHANNEL_VOCAB for c in dataset.LEGACY_TUH_CHANNELS) and len(dataset.LEGACY_TUH_CHANNELS) == 23


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
    X = np.arange(6, dtype=np.float64).reshape(2, 3)
    path.write_bytes(pickle.dumps({"X": X, "ch_names": ["C3", "C4"], "y": np.int64(1), "t": (1.5, "a")}, protocol=protocol))
    loaded = dataset.safe_load_pickle(path)
    np.testing.assert_array_equal(loaded["X"], X)
    sample = load_sample(path)
    assert sample["X"].dtype == np.float32 and sample["y"] == 1 and sample["ch_names"] == ["C3", "C4"]


def test_legacy_public_files(tmp_path):
    tuev = tmp_path / "tuev.pkl"
    tuev.write_bytes(pickle.dumps({"signal": np.ones((23, 1000)), "offending_channel": np.array([3]),
                                   "label": np.array([4.0])}))
    sample = load_sample(tuev)
    assert sample["y"] == 3 and sample["ch_names"] == dataset.LEGACY_TUH_CHANNELS
    assert sample["X"].dtype == np.float32 and sample["X"].shape == (23, 1000)
    tuab = tmp_path / "tuab.pkl"
    tuab.write_bytes(pickle.dumps({"X": np.zeros((23, 2000)), "y": 1}))
    assert load_sample(tuab)["ch_names"] == dataset.LEGACY_TUH_CHANNELS
    pretrain = tmp_path / "p.pkl"
    pretrain.write_bytes(pickle.dumps({"X": np.zeros((2, 400), np.float32), "ch_names": ["C3", "C4"]}))
    assert load_sample(pretrain)["y"] is None


def test_eeg_tokens_time_major_with_padding():
    C, T = 3, 650  # 3.25 s: the partial last second is dropped
    X = np.arange(C * T, dtype=np.float32).reshape(C, T)
    tokens = eeg_tokens(X, ["C3", "CZ", "C4"], max_tokens=12)
    assert tokens["x"].shape == (12, 200) and tokens["x"].dtype == torch.float32
    assert tokens["input_mask"].tolist() == [True] * 9 + [False] * 3
    assert tokens["input_time"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 0, 0]
    c3, cz, c4, pad = (channel_index(c) for c in ("C3", "CZ", "C4", "pad"))
    assert tokens["input_chans"].tolist() == [c3, cz, c4] * 3 + [pad] * 3
    # token a*C + c is channel c, second a, divided by 100
    torch.testing.assert_close(tokens["x"][4], torch.from_numpy(X[1, 200:400] / 100))
    assert tokens["x"][9:].abs().sum() == 0
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
    files = [_write(tmp_path / f"{i}.pkl", 30 * rng.standard_normal((4, 800)), ["FP1", "FP2", "C3", "C4"], i)
             for i in range(3)]
    item = PickleLoader(files, block_size=20)[1]
    mask = item["input_mask"]
    assert item["y_freq"].shape == (20, 100) and item["y_raw"].shape == (20, 200) and mask.sum() == 16
    real = item["y_raw"][mask]
    assert abs(real.mean().item()) < 1e-5 and abs(real.std().item() - 1) < 1e-4
    for key in ("y_freq", "y_raw"):
        assert item[key][~mask].abs().sum() == 0
    # the public definition: the full FFT amplitude standardised over all 200 bins, then the
    # first 100 bins kept (torch.std, n - 1)
    amp = torch.fft.fft(item["x"][mask]).abs()                                     # (16, 200)
    expected = ((amp - amp.mean()) / amp.std())[:, :100]
    torch.testing.assert_close(item["y_freq"][mask], expected, rtol=1e-5, atol=1e-5)
    patches = item["x"][mask]
    torch.testing.assert_close(real, (patches - patches.mean()) / patches.std(), rtol=1e-5,
                               atol=1e-5)
    plain = PickleLoader(files, block_size=20, targets=False)[0]
    assert set(plain) == {"x", "input_chans", "input_time", "input_mask"} and len(PickleLoader(files)) == 3
    batch = torch.utils.data.default_collate([plain, plain])
    assert batch["x"].shape == (2, 20, 200)
