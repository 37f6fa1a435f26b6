"""Whole recordings in, answers out: the Python entry point under simple_inference.py.

    import inference
    loaded = inference.load_model("runs/instruct/best.pt")
    result = inference.analyse_recording("night.edf", "HMC", loaded, abstain=0.6)
    result.windows          # pandas.DataFrame, one row per window
    result.summary, result.warnings, result.sleep

Modules: recordings (finding, opening, streaming preprocessing), qc, ood (training profile and
warnings), answers (batches through the answering path), api (analyse_recording, read_signal,
envelope), sleep, timeline (figures), annotations, agreement, outputs (tables, folders),
console (what the command line prints).
"""
from .api import RecordingResult, analyse_recording, envelope, read_signal
from .loading import LoadedModel, load_model
from .recordings import RecordingError, find_recordings

__all__ = ["LoadedModel", "RecordingError", "RecordingResult", "analyse_recording", "envelope",
           "find_recordings", "load_model", "read_signal"]
