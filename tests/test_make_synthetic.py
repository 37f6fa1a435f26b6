"""The synthetic default data: layouts and file names, EDF headers, annotation files,
determinism, class spectra that differ, and the prepare scripts run on it end to end."""

import hashlib
import importlib
import json
import re

import mne
import numpy as np
import pytest
from scipy.signal import periodogram, welch

from dataset_maker import PREPARE_SCRIPTS as PREPARE
from dataset_maker import make_synthetic as ms
from dataset_maker import prepare_SEED

SCALE = 0.2  # the floors of make_synthetic keep every class in every split at this size
TUH_EEG = [f"EEG {c}-REF" for c in ms.TUH_ELECTRODES]


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    written = ms.make_synthetic(root, seed=0, scale=SCALE)
    return root, written


def read_edf(path, picks=None):
    edf = mne.io.read_raw_edf(path, preload=True, verbose="error")
    if picks is not None:
        edf.pick(picks)
    return edf


def band_power(x, fs, lo, hi):
    freqs, psd = welch(x, fs, nperseg=int(2 * fs))
    return psd[..., (freqs >= lo) & (freqs < hi)].mean(axis=-1)


def test_every_dataset_written_with_hours(raw):
    root, written = raw
    assert set(written) == set(ms.DATASETS)
    for name, files in written.items():
        assert files, name
        assert all(w.path.is_file() and w.path.suffix == ".edf" for w in files)
        assert all(str(w.path).startswith(str(root / name)) for w in files)
    # atomic writes leave no temporary files behind
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def test_tuh_layouts(raw):
    root, _ = raw
    subject_file = re.compile(r"^[a-z]{8}_s\d{3}_t\d{3}\.edf$")
    tuab = sorted((root / "TUAB").rglob("*.edf"))
    assert {p.relative_to(root / "TUAB").parts[:3] for p in tuab} == {
        (split, label, "01_tcp_ar") for split in ("train", "eval")
        for label in ("normal", "abnormal")}
    assert all(subject_file.match(p.name) for p in tuab)
    # every subject has one normal and one abnormal session
    by_subject = {}
    for p in tuab:
        by_subject.setdefault(p.name.split("_")[0], set()).add(p.parts[-3])
    assert all(v == {"normal", "abnormal"} for v in by_subject.values())

    for edf in (root / "TUEV").rglob("*.edf"):
        split, subject = edf.relative_to(root / "TUEV").parts[:2]
        assert split in ("train", "eval") and edf.name.startswith(subject + "_")
        assert edf.with_suffix(".rec").is_file()
    for edf in (root / "TUSL").rglob("*.edf"):
        assert len(edf.relative_to(root / "TUSL").parts) == 4 and subject_file.match(edf.name)
        assert edf.with_suffix(".tse_agg").is_file()

    pre = sorted((root / "TUH_pretrain").rglob("*.edf"))
    montages = [p.parent.name for p in pre]
    assert montages.count("02_tcp_le") == 1 and montages.count("01_tcp_ar") == len(pre) - 1
    assert all(subject_file.match(p.name) for p in pre)
    # the pretraining corpus contains downstream subjects, as the real TUEG does
    downstream = {p.name.split("_")[0] for d in ("TUAB", "TUEV", "TUSL")
                  for p in (root / d).rglob("*.edf")}
    assert len({p.name.split("_")[0] for p in pre} & downstream) == 3


def test_other_layouts(raw):
    root, _ = raw
    hmc = sorted(p.name for p in (root / "HMC").iterdir())
    n = len(hmc) // 2
    assert hmc == sorted([f"SN{i:03d}.edf" for i in range(1, n + 1)]
                         + [f"SN{i:03d}_sleepscoring.txt" for i in range(1, n + 1)])
    work = sorted(p.name for p in (root / "Workload").iterdir())
    n = len(work) // 2
    assert n >= 5 and work == sorted(f"Subject{i:02d}_{k}.edf" for i in range(n) for k in (1, 2))
    seed = sorted(p.name for p in (root / "SEED").iterdir())
    assert "trials.json" in seed
    assert all(re.match(r"^\d+_\d{8}\.edf$", s) for s in seed if s != "trials.json")


def test_edf_channels_rates_durations(raw):
    root, _ = raw
    tuab = read_edf(next((root / "TUAB").rglob("*.edf")))
    assert tuab.info["sfreq"] == 250 and set(TUH_EEG) <= set(tuab.ch_names)
    assert "EEG EKG1-REF" in tuab.ch_names
    assert tuab.n_times / 250 == ms.tuab_plan(SCALE)[2]
    le = read_edf(next((root / "TUH_pretrain").rglob("02_tcp_le/*.edf")))
    assert all(c.endswith("-LE") for c in le.ch_names)

    hmc = read_edf(root / "HMC" / "SN001.edf")
    assert hmc.info["sfreq"] == 256
    assert hmc.ch_names == ms.HMC_EEG + ["EMG chin", "EOG E1-M2", "EOG E2-M2", "ECG"]

    seed = read_edf(next((root / "SEED").glob("*.edf")))
    assert seed.info["sfreq"] == ms.SEED_HZ and seed.ch_names == ms.SEED_CHANNELS + ["VEO", "HEO"]
    assert len(ms.SEED_CHANNELS) == 64  # 62 EEG + M1, M2

    work = read_edf(root / "Workload" / "Subject00_2.edf")
    assert work.info["sfreq"] == 500 and work.n_times == 62 * 500
    assert work.ch_names == [f"EEG {c}" for c in ms.EEGMAT_ELECTRODES] + ["EEG A2-A1", "ECG ECG"]
    rest = read_edf(root / "Workload" / "Subject00_1.edf")
    assert 60 <= rest.n_times / 500 <= 90

    # microvolt-scale EEG: MNE returns volts, EEG RMS of some tens of microvolts
    for edf, picks in ((tuab, TUH_EEG), (work, work.ch_names[:19]), (seed, ms.SEED_CHANNELS[:62])):
        rms = edf.copy().pick(picks).get_data().std(axis=1) * 1e6
        assert np.all((rms > 3) & (rms < 150)), rms
    ecg = work.copy().pick(["ECG ECG"]).get_data()
    assert 2e-4 < np.abs(ecg).max() < 5e-3  # about a millivolt


def test_mains_at_the_dataset_frequency(raw):
    root, _ = raw
    tusl = read_edf(next((root / "TUSL").rglob("*.edf")), TUH_EEG).get_data()
    tuab = read_edf(next((root / "TUAB").rglob("*.edf")), TUH_EEG).get_data()
    def line_to_floor(x, hz):  # peak of a fine periodogram against its +-3 Hz neighbourhood
        freqs, psd = periodogram(x, 250)
        psd = psd.mean(axis=0)
        return psd[np.abs(freqs - hz) < 0.1].max() / np.median(psd[np.abs(freqs - hz) < 3])

    for x, hz, other in ((tusl, 60, 50), (tuab, 50, 60)):
        assert line_to_floor(x, hz) > 50 and line_to_floor(x, other) < 20


def test_annotation_files_parse(raw):
    root, _ = raw
    for rec in (root / "TUEV").rglob("*.rec"):
        seconds = read_edf(rec.with_suffix(".edf")).n_times / 250
        rows = [line.split(",") for line in rec.read_text().splitlines()]
        assert all(len(r) == 4 for r in rows)
        channels, starts, ends, labels = (np.array([r[i] for r in rows], float) for i in range(4))
        assert set(labels) == {1, 2, 3, 4, 5, 6}  # every class in every subject
        assert np.all((channels >= 0) & (channels < 22) & (ends - starts == 1))
        assert starts.min() >= 2 and ends.max() + 2 <= seconds  # 5 s windows fit

    for tse in (root / "TUSL").rglob("*.tse_agg"):
        lines = tse.read_text().splitlines()
        assert lines[:2] == ["version = tse_v1.0.0", ""]
        rows = [line.split() for line in lines[2:]]
        starts, stops = np.array([[float(r[0]), float(r[1])] for r in rows]).T
        assert ({r[2] for r in rows} == {"bckg", "seiz", "slow"}
                and all(float(r[3]) == 1 for r in rows))
        assert starts[0] == 0 and np.all(starts[1:] == stops[:-1]) and np.all(stops % 10 == 0)
        assert stops[-1] == read_edf(tse.with_suffix(".edf")).n_times / 250

    for scoring in (root / "HMC").glob("*_sleepscoring.txt"):
        lines = scoring.read_text().splitlines()
        assert lines[0] == "Date, Time, Recording onset, Duration, Annotation, Linked channel"
        rows = [[c.strip() for c in line.split(",")] for line in lines[1:]]
        assert rows[0][4] == "Lights off" and rows[-1][4] == "Lights on"
        epochs = [r for r in rows if r[3] == "30"]
        assert [int(r[2]) for r in epochs] == list(range(0, 30 * len(epochs), 30))
        assert {r[4] for r in epochs} == {f"Sleep stage {s}" for s in ("W", "N1", "N2", "N3", "R")}
        edf = read_edf(scoring.with_name(scoring.name.replace("_sleepscoring.txt", ".edf")))
        assert edf.n_times / 256 == 30 * len(epochs)

    trials = json.loads((root / "SEED" / "trials.json").read_text())
    assert trials["labels"] == list(prepare_SEED.TRIAL_LABELS)
    starts, ends = np.array(trials["start_s"]), np.array(trials["end_s"])
    assert (len(starts) == len(ends) == 15 and np.all(ends - starts >= 8)
            and np.all(starts[1:] > ends[:-1]))
    for edf in (root / "SEED").glob("*.edf"):
        assert read_edf(edf).n_times / ms.SEED_HZ > ends[-1]


def _digests(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(tmp_path):
    chosen = ["TUEV", "TUSL"]
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        ms.make_synthetic(tmp_path / name, seed=seed, scale=0.1, datasets=chosen)
    a, b, c = (_digests(tmp_path / n) for n in "abc")
    assert a == b and len(a) == 2 * 2 * 5  # edf + annotation file per subject
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a)


def test_cli_prints_summary(tmp_path, capsys):
    ms.main(["--out_dir", str(tmp_path), "--seed", "1", "--scale", "0.1", "--datasets", "TUEV"])
    out = capsys.readouterr().out
    assert "TUEV" in out and "EDF files" in out and "total" in out
    with pytest.raises(ValueError, match="unknown dataset"):
        ms.make_synthetic(tmp_path, datasets=["TUAB", "nope"])


def test_workload_frontal_theta_over_alpha_separates_classes(raw):
    root, _ = raw
    for rest in sorted((root / "Workload").glob("*_1.edf")):
        ratios = []
        for path in (rest, rest.with_name(rest.name.replace("_1.edf", "_2.edf"))):
            x = read_edf(path, ["EEG Fz", "EEG F3", "EEG F4", "EEG O1", "EEG O2",
                                "EEG Pz"]).get_data()
            x = x[:, -60 * 500:]
            theta = band_power(x[:3], 500, 4, 8).mean()
            alpha = band_power(x[3:], 500, 8, 13).mean()
            ratios.append(theta / alpha)
        assert ratios[1] > 3 * ratios[0], (rest.name, ratios)


def test_tuab_delta_over_alpha_separates_classes(raw):
    root, _ = raw
    ratio = {"normal": [], "abnormal": []}
    for path in (root / "TUAB").rglob("*.edf"):
        x = read_edf(path, TUH_EEG).get_data()
        ratio[path.parts[-3]].append(band_power(x, 250, 0.5, 4).mean()
                                     / band_power(x, 250, 8, 13).mean())
    assert min(ratio["abnormal"]) > 3 * max(ratio["normal"]), ratio


def test_sleep_stages_have_their_signatures(raw):
    root, _ = raw
    edf = read_edf(root / "HMC" / "SN001.edf", ["EEG C4-M1", "EEG O2-M1"])
    x = edf.get_data()
    stages = [line.split(", ")[4] for line in
              (root / "HMC" / "SN001_sleepscoring.txt").read_text().splitlines()[1:]
              if ", 30, " in line]
    power = {}
    for i, stage in enumerate(stages):
        epoch = x[:, i * 30 * 256:(i + 1) * 30 * 256]
        bands = [band_power(epoch, 256, lo, hi).mean() for lo, hi in ((0.5, 2.5), (4, 7), (8, 12))]
        power.setdefault(stage.split()[-1], []).append(bands)
    mean = {k: np.mean(v, axis=0) for k, v in power.items()}
    assert mean["N3"][0] > 3 * mean["W"][0]  # slow waves
    assert mean["W"][2] > 3 * mean["N3"][2]  # alpha
    assert mean["N1"][1] > 2 * mean["W"][1]  # theta


N_CLASSES = {"TUAB": 2, "TUEV": 6, "TUSL": 3, "HMC": 5, "SEED": 3, "Workload": 2}


@pytest.mark.parametrize("name", list(PREPARE))
def test_prepare_script_reads_synthetic_data(raw, tmp_path, name):
    root, written = raw
    try:
        module = importlib.import_module(f"dataset_maker.{PREPARE[name]}")
    except ModuleNotFoundError:
        pytest.skip(f"dataset_maker/{PREPARE[name]}.py is not written yet")
    summary = module.main(["--raw_dir", str(root / name), "--out_dir", str(tmp_path), "--workers",
                           "1"])
    errors = (tmp_path / "errors.tsv").read_text().splitlines()[1:]
    if name == "TUH_pretrain":
        # only the linked-ear recording is refused; both splits get windows
        assert len(errors) == 1 and "02_tcp_le" in errors[0]
        assert summary["recordings_ok"] == len(written[name]) - 1
        assert all(sum(summary["samples"][s].values()) > 0 for s in ("train", "val"))
        return
    assert errors == [] and summary["recordings_ok"] == len(written[name])
    for split in ("train", "val", "test"):
        assert set(summary["samples"][split]) == {str(y) for y in range(N_CLASSES[name])}, (
            split, summary)
