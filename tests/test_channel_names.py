"""The one channel-name normaliser (dataset.normalise_channel): every naming convention of the
issue, read from a synthetic EDF written with those names, lands on the vocabulary."""
from __future__ import annotations

import pytest
from raw_fixtures import write_edf

import dataset
from dataset_maker import common

CONVENTIONS = {
    "EDF+ prefix (EEGMAT)": (["EEG Fp1", "EEG Cz", "EEG O2"], ["FP1", "CZ", "O2"]),
    "TUH -REF / -LE": (["EEG FP1-REF", "EEG C3-LE", "EEG O2-REF"], ["FP1", "C3", "O2"]),
    "average reference": (["Fp1-AVG", "Cz-AVG", "Oz-AVG"], ["FP1", "CZ", "OZ"]),
    "mastoid / ear references (HMC)": (["EEG F4-M1", "EEG C3-M2", "T3-A1", "O1-A2"],
                                       ["F4", "C3", "T3", "O1"]),
    "BCI2000 dots": (["Fc5.", "C3..", "Afz.", "Iz.."], ["FC5", "C3", "AFZ", "IZ"]),
    "new 10-20 names": (["T7", "T8", "P7", "P8"], ["T3", "T4", "T5", "T6"]),
    "old 10-20 names": (["T3", "T4", "T5", "T6"], ["T3", "T4", "T5", "T6"]),
    "bipolar pairs of the vocabulary": (["FP1-F7", "T3-T5", "EEG P4-O2"],
                                        ["FP1-F7", "T7-P7", "P4-O2"]),
    "derivations (Sleep-EDF)": (["EEG Fpz-Cz", "EEG Pz-Oz"], ["FPZ", "PZ"]),
}


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_each_naming_convention_reads_from_an_edf(convention, tmp_path):
    names, expected = CONVENTIONS[convention]
    edf = write_edf(tmp_path / "rec.edf", names + ["ECG ECG", "Status"], 4, sfreq=160.0)
    eeg = common.load_eeg(edf, common.SignalSpec(channels=None, mains_hz=50.0))
    assert eeg.ch_names == expected
    assert {raw for raw, _ in eeg.left_out} == {"ECG ECG", "Status"}
    assert eeg.data.shape == (len(expected), 4 * dataset.SAMPLING_RATE)


def test_t7_and_t3_are_one_vocabulary_entry_both_ways(tmp_path):
    assert dataset.normalise_channel("T7") == dataset.normalise_channel("EEG T3-REF") == "T3"
    assert dataset.normalise_channel("t8..") == dataset.normalise_channel("T4") == "T4"
    # a task asking for the new name finds the old one, and the other way round
    old = write_edf(tmp_path / "old.edf", ["EEG T3-REF", "EEG T5-REF", "EEG CZ-REF"], 3)
    new = write_edf(tmp_path / "new.edf", ["T7.", "P7.", "Cz.."], 3)
    for path, wanted in ((old, ("T7", "P7", "CZ")), (new, ("T3", "T5", "CZ"))):
        eeg = common.load_eeg(path, common.SignalSpec(channels=wanted, mains_hz=50.0))
        assert eeg.ch_names == list(wanted)


def test_unknown_channels_are_left_out_with_a_reason_never_failing_the_recording(tmp_path):
    names = ["EEG Fp1", "EEG A2-A1", "E42", "EEG Fp1-REF", "EOG horizontal"]
    edf = write_edf(tmp_path / "rec.edf", names, 3)
    eeg = common.load_eeg(edf, common.SignalSpec(channels=None, mains_hz=50.0))
    assert eeg.ch_names == ["FP1"]
    reasons = dict(eeg.left_out)
    assert reasons["EEG A2-A1"] == "a derivation between two reference electrodes"
    assert "vocabulary" in reasons["E42"] and "duplicate" in reasons["EEG Fp1-REF"]
    assert reasons["EOG horizontal"] == "not an EEG channel"
    none_known = write_edf(tmp_path / "none.edf", ["E1", "E2"], 3)
    with pytest.raises(common.BadRecording, match="no channel of the vocabulary"):
        common.load_eeg(none_known, common.SignalSpec(channels=None, mains_hz=50.0))


def test_the_rules_table_names_its_sources():
    assert all(source and pattern for source, pattern, _ in dataset.CHANNEL_NAME_RULES)
    assert common.normalise_channel_name("EEG EKG1-REF") == "EKG1"   # cleaned, not placed
