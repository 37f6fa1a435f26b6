"""The shared preprocessing core: channel names, readers (EDF, CNT), bad inputs -> errors.tsv,
resuming a killed run, parallel == serial, scripts runnable as files; real recordings."""

import filecmp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import raw_fixtures as fx

import dataset
from dataset_maker import (
    common,
    prepare_HMC,
    prepare_TUAB,
    prepare_TUEV,
    prepare_TUSL,
    prepare_workload,
    signals,
    sinks,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared"
EEG = SHARED / "data" / "eeg"
REFERENCE = SHARED / "data" / "reference" / "eegmat_public_windows.npz"
SCRIPTS = ["prepare_TUH_pretrain", "prepare_TUAB", "prepare_TUEV", "prepare_TUSL", "prepare_HMC",
           "prepare_SEED", "prepare_workload"]


def run_script(module, raw, out, workers=1):
    return module.main(["--raw_dir", str(raw), "--out_dir", str(out), "--workers", str(workers)])


def errors_of(out):
    lines = (Path(out) / "errors.tsv").read_text().splitlines()
    assert lines[0] == "file\treason"
    return {Path(f).name: reason for f, reason in (line.split("\t") for line in lines[1:])}


@pytest.mark.parametrize("raw, expected", [
    ("EEG FP1-REF", "FP1"), ("EEG Fp1-LE", "FP1"), ("EEG C3-M2", "C3"), ("F4-M1", "F4"),
    ("EEG Fz", "FZ"), ("FCz", "FCZ"), ("EEG T3-A1", "T3"), ("ftt9h", "FTT9h"),
    ("FP1-F7", "FP1-F7"), ("EEG EKG1-REF", "EKG1"),
])
def test_channel_names_are_normalised_to_the_vocabulary(raw, expected):
    assert common.normalise_channel_name(raw) == expected


def test_split_helpers_are_fixed_and_cover_every_unit():
    subjects = [f"s{i:02d}" for i in range(36)]
    sorted_split = common.split_sorted(subjects, 5 / 36, 5 / 36)
    assert [sorted_split[s] for s in ("s00", "s25", "s26", "s30", "s31")] == [
        "train", "train", "val", "val", "test"]
    shuffled = common.split_shuffled(subjects, 0.2)
    assert shuffled == common.split_shuffled(list(reversed(subjects)), 0.2)
    assert sum(v == "val" for v in shuffled.values()) == 7 and set(shuffled) == set(subjects)


def make_bad_tuab(raw: Path):
    """Good TUAB recordings plus one of each bad input."""
    good = fx.make_tuab(raw)
    bad_dir = raw / "train" / "normal" / "01_tcp_ar"
    (bad_dir / "unread_s001_t000.edf").write_bytes(b"0       this is not an EDF file")
    fx.write_edf(bad_dir / "missing_s001_t000.edf", fx.TUH_NAMES[:-1], 25)
    fx.write_edf(bad_dir / "rates_s001_t000.edf", fx.TUH_NAMES, 25, rates=[250.0] * 22 + [125.0])
    data = fx.eeg_like(len(fx.TUH_NAMES), 25, 250.0, seed=3)
    data[4] = 0.0
    fx.write_edf(bad_dir / "flat_s001_t000.edf", fx.TUH_NAMES, 25, data=data)
    fx.write_tuh_edf(bad_dir / "short_s001_t000.edf", 6)
    fx.write_tuh_edf(bad_dir / "naninf_s001_t000.edf", 25)
    fx.write_tuh_edf(raw / "train" / "unknown" / "01_tcp_ar" / "label_s001_t000.edf", 25)
    return good


def test_every_bad_input_is_reported_and_the_good_ones_are_written(tmp_path, monkeypatch):
    good = make_bad_tuab(tmp_path / "raw")
    read_raw = common.read_raw

    def read_raw_with_nan(path, *args):  # EDF cannot store NaN: inject it after reading
        raw = read_raw(path, *args)
        if "naninf" in path.name:
            raw._data[2, 100] = np.nan
        return raw

    monkeypatch.setattr(signals, "read_raw", read_raw_with_nan)
    summary = run_script(prepare_TUAB, tmp_path / "raw", tmp_path / "out")
    errors = errors_of(tmp_path / "out")
    assert errors["unread_s001_t000.edf"].startswith("unreadable")
    assert errors["missing_s001_t000.edf"] == "missing channels: T2"
    assert errors["rates_s001_t000.edf"].startswith("sampling-rate mismatch")
    assert errors["flat_s001_t000.edf"] == "flat channels: C3"
    assert errors["short_s001_t000.edf"].startswith("too short")
    assert errors["naninf_s001_t000.edf"] == "NaN/Inf values in channels: F3"
    assert errors["label_s001_t000.edf"].startswith("malformed label")
    assert len(errors) == 7 and summary["recordings_ok"] == len(good) == 6
    written = {p.name.rsplit("_", 1)[0] for p in (tmp_path / "out").glob("*/*.pkl")}
    assert written == {p.stem for p in good}


def run_leaving_a_split_empty(module, raw, out):
    """These runs keep too few recordings for every split: errors.tsv is still written, and the
    empty split is an error (a non-zero exit from the command line)."""
    with pytest.raises(common.UserError, match="split .* is empty|no recording produced"):
        run_script(module, raw, out)


def test_label_file_problems_are_reported(tmp_path):
    raw = tmp_path / "tuev"
    fx.make_tuev(raw)
    (raw / "train/aaaaaaaa/aaaaaaaa_00000001.rec").unlink()
    (raw / "train/bbbbbbbb/bbbbbbbb_00000001.rec").write_text("3,8.0,9.0,seven\n")
    (raw / "train/cccccccc/cccccccc_00000001.rec").write_text("3,80.0,81.0,2\n")
    run_leaving_a_split_empty(prepare_TUEV, raw, tmp_path / "out_tuev")
    errors = errors_of(tmp_path / "out_tuev")
    assert errors["aaaaaaaa_00000001.edf"] == "missing label file aaaaaaaa_00000001.rec"
    assert errors["bbbbbbbb_00000001.edf"].startswith(
        "malformed label file bbbbbbbb_00000001.rec line 1")
    assert "after the recording's end" in errors["cccccccc_00000001.edf"] and len(errors) == 3

    raw = tmp_path / "tusl"
    fx.make_tusl(raw, n_subjects=3)
    (raw / "aaaaaaaa/s001_2010/01_tcp_ar/aaaaaaaa_s001_t000.tse_agg").write_text(
        "version = tse_v1.0.0\n\n0 10 spike 1.0\n")
    run_leaving_a_split_empty(prepare_TUSL, raw, tmp_path / "out_tusl")
    assert errors_of(tmp_path / "out_tusl")["aaaaaaaa_s001_t000.edf"].startswith(
        "malformed label file")

    raw = tmp_path / "hmc"
    fx.make_hmc(raw, n_subjects=3)
    (raw / "SN001_sleepscoring.txt").unlink()
    (raw / "SN002_sleepscoring.txt").write_text("Onset;Stage\n0;W\n")
    run_leaving_a_split_empty(prepare_HMC, raw, tmp_path / "out_hmc")
    errors = errors_of(tmp_path / "out_hmc")
    assert errors["SN001.edf"] == "missing label file SN001_sleepscoring.txt"
    assert errors["SN002.edf"].startswith("malformed label file SN002_sleepscoring.txt")
    assert len(list((tmp_path / "out_hmc").glob("*/SN003_*.pkl"))) == 5

    raw = tmp_path / "workload"
    fx.make_workload(raw, n_subjects=1, seconds=61, sfreq=256.0)
    (raw / "Subject00_3.edf").write_bytes((raw / "Subject00_1.edf").read_bytes())
    run_leaving_a_split_empty(prepare_workload, raw, tmp_path / "out_wl")
    errors = errors_of(tmp_path / "out_wl")
    assert errors["Subject00_1.edf"] == "sampling-rate mismatch: 256 Hz, expected 500 Hz"
    assert errors["Subject00_3.edf"].startswith("malformed label")


def tree(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_killed_run_resumes_to_identical_files(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    fx.make_tuab(raw)
    run_script(prepare_TUAB, raw, tmp_path / "whole")

    written = []
    write_sample = common.write_sample

    def dies_after_five_samples(path, *args, **kwargs):
        if len(written) == 5:  # mid-recording: the 3rd recording has written one of its two samples
            # what a kill mid-write leaves
            path.with_name(f".{path.name}.tmp999").write_bytes(b"partial")
            raise KeyboardInterrupt
        written.append(path)
        write_sample(path, *args, **kwargs)

    monkeypatch.setattr(sinks, "write_sample", dies_after_five_samples)
    with pytest.raises(KeyboardInterrupt):
        run_script(prepare_TUAB, raw, tmp_path / "killed")
    assert len(list((tmp_path / "killed" / common.DONE_DIR).glob("*.json"))) == 2
    monkeypatch.setattr(sinks, "write_sample", write_sample)

    run_script(prepare_TUAB, raw, tmp_path / "killed")
    whole, resumed = tree(tmp_path / "whole"), tree(tmp_path / "killed")
    assert whole == resumed and not any(".tmp" in name for name in resumed)
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "whole", tmp_path / "killed", whole,
                                           shallow=False)
    assert mismatch == [] and errors == []


def test_scripts_run_as_files_with_help_and_in_parallel(tmp_path):
    fx.make_tuab(tmp_path / "raw")
    run_script(prepare_TUAB, tmp_path / "raw", tmp_path / "serial")
    helps = "; ".join(
        f"sys.argv=['{s}', '--help']; "
        f"exec(\"try: runpy.run_path('dataset_maker/{s}.py', run_name='__main__')"
        f"\\nexcept SystemExit: pass\")"
        for s in SCRIPTS)
    code = (f"import runpy, sys; {helps}; "
            f"sys.argv=['x', '--raw_dir', r'{tmp_path / 'raw'}', '--out_dir', "
            f"r'{tmp_path / 'parallel'}', '--workers', '2']; "
            f"runpy.run_path('dataset_maker/prepare_TUAB.py', run_name='__main__')")
    code = code.replace("dataset_maker/", f"{REPO / 'dataset_maker'}/")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (result.stdout.count("usage: prepare_") == len(SCRIPTS)
            and "--exclude_subjects" in result.stdout)
    assert "TUAB: 6 recordings ok, 0 skipped" in result.stdout
    names = tree(tmp_path / "serial")
    assert names == tree(tmp_path / "parallel")
    assert filecmp.cmpfiles(tmp_path / "serial", tmp_path / "parallel", names,
                            shallow=False)[1] == []


# ----------------------------------------------------------------------------- real recordings

needs_eegmat = pytest.mark.skipif(not (EEG / "eegmat").is_dir(),
                                  reason=f"real EEGMAT recordings absent ({EEG / 'eegmat'})")


@needs_eegmat
@pytest.mark.skipif(not REFERENCE.exists(), reason=f"reference windows absent ({REFERENCE})")
def test_workload_reproduces_the_public_code_windows(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for name in ("Subject01_1.edf", "Subject01_2.edf"):
        (raw / name).symlink_to(EEG / "eegmat" / name)
    run_leaving_a_split_empty(prepare_workload, raw, tmp_path / "out")  # one subject: train only
    reference = np.load(REFERENCE)
    for stem, label in zip(("Subject01_1", "Subject01_2"), reference["labels"]):
        files = sorted((tmp_path / "out").glob(f"*/{stem}_*.pkl"))
        samples = [dataset.load_sample(p) for p in files]
        ours = np.stack([s["X"] for s in samples])
        ref = reference[stem]
        assert ours.shape == ref.shape == (29, 19, 800) and ours.dtype == np.float32
        assert np.sqrt(((ours - ref) ** 2).mean() / (ref ** 2).mean()) < 1e-3
        assert (samples[0]["ch_names"] == list(reference["ch_names"])
                and {s["y"] for s in samples} == {int(label)})


@needs_eegmat
def test_workload_on_all_real_eegmat_files(tmp_path):
    summary = run_script(prepare_workload, EEG / "eegmat", tmp_path / "out")
    assert summary["recordings_ok"] == 6 and summary["recordings_skipped"] == 0
    assert summary["samples"] == {s: {"0": 29, "1": 29} for s in ("train", "val", "test")}
    X = dataset.load_sample(tmp_path / "out/test/Subject02_2_0000.pkl")["X"]
    assert X.shape == (19, 800) and 1 < np.sqrt((X.astype(float) ** 2).mean()) < 200  # microvolts


@pytest.mark.skipif(not (EEG / "sleep-edfx").is_dir(),
                    reason=f"Sleep-EDF excerpt absent ({EEG / 'sleep-edfx'})")
def test_core_on_the_sleep_edf_excerpt_and_hmc_reports_its_other_channels(tmp_path):
    psg = EEG / "sleep-edfx" / "short_psg.edf"
    eeg = common.load_eeg(psg, common.SignalSpec(channels=("FPZ-CZ", "PZ-OZ"), mains_hz=50.0))
    assert (eeg.data.shape == (2, 300 * 200) and eeg.source_sfreq == 200
            and eeg.ch_names == ["FPZ-CZ", "PZ-OZ"])
    rms = np.sqrt((eeg.data ** 2).mean(axis=1))
    assert np.all((rms > 2) & (rms < 300)), rms
    epochs = common.windows(eeg.data, prepare_HMC.WINDOW_SECONDS)
    assert len(epochs) == 10 and epochs[0].dtype == np.float32
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "SN001.edf").symlink_to(psg)
    (raw / "SN001_sleepscoring.txt").write_text(fx.hmc_scoring(["W"] * 10))
    run_leaving_a_split_empty(prepare_HMC, raw, tmp_path / "out")
    assert errors_of(tmp_path / "out")["SN001.edf"] == "missing channels: F4, C4, O2, C3"


@pytest.mark.skipif(not (EEG / "neuroscan_cnt").is_dir(),
                    reason=f"Neuroscan CNT files absent ({EEG / 'neuroscan_cnt'})")
def test_cnt_reader_finds_16_and_32_bit_formats():
    raw16 = common.read_raw(EEG / "neuroscan_cnt" / "scan41_short.cnt")
    assert raw16.n_times == 3070 and 5e-6 < np.median(raw16.get_data().std(axis=1)) < 1e-4  # ~30 uV
    eeg = common.load_eeg(EEG / "neuroscan_cnt" / "test_CNT_events_mne_JWoess_clipped.cnt",
                          common.SignalSpec(channels=("F8", "FCZ"), mains_hz=50.0,
                                            expected_sfreq=1000.0))
    assert eeg.data.shape == (2, 90 * 200) and eeg.ch_names == ["F8", "FCZ"]
    # microvolts, not the 32-bit-as-16-bit noise
    assert np.all(np.sqrt((eeg.data ** 2).mean(axis=1)) < 500)
