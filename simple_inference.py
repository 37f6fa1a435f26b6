"""Stage 5: ask a trained NeuroLM about one EEG segment (spec section 6).

    python simple_inference.py --model_path CKPT --tokenizer_path VQ --data_path DIR \
        --task TUAB --sample_idx 0 --out_dir OUT
    python simple_inference.py --model_path CKPT --tokenizer_path VQ --edf rec.edf \
        --task Workload --out_dir OUT [--window N] [--batch_size 16] [--plot overview]
    python simple_inference.py --model_path CKPT --task_file my_task.toml --edf rec.vhdr \
        [--channels all]

Each run writes a timestamped folder under --out_dir. A processed sample gives a JSON record
(RECORD_FIELDS) and a PNG of its EEG. A raw recording (--edf: any format MNE reads, EDF, BDF,
CNT, BrainVision, FIF, ..., at any rate) is cut into the task's windows, answered in batches of
--batch_size and written as one answers.json (the recording, then one record per window) and one
answers.csv (a row per window), with overview.png: the recording and the per-window answers
(--plot first|all add window PNGs, --plot none draws nothing). The channels are matched through
dataset.normalise_channel, and the run says which it used and which it left out. User mistakes
end with one "error:" line and exit status 2, never a traceback. Decoding is greedy, so a run
needs no seed.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import importlib
import os
import pickle
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import answering
from dataset import PATCH_SIZE, SAMPLING_RATE, channel_index, eeg_tokens, load_sample, sample_files
from downstream_dataset import (
    EEG_MAX_TOKENS,
    TASKS,
    Task,
    TaskFileError,
    get_task,
    load_task_files,
    task_tokens,
)
from utils import USER_ERROR_EXIT, UserError, resolve_device, save_figure, write_json

RECORD_FIELDS = (
    "timestamp", "sample_idx", "task", "prompt", "generated_text", "predicted_label",
    "option_probs", "true_label", "inference_seconds", "model_path", "tokenizer_path", "device",
    "eeg_shape", "peak_memory_mb",
)
PLOT_MODES = ("overview", "first", "all", "none")
DEFAULT_BATCH_SIZE = 16


@dataclass
class Segment:
    """One EEG window to ask about, with where it came from."""
    X: np.ndarray               # (C, T) microvolts at 200 Hz
    ch_names: list[str]
    true_label: int | None
    index_key: str              # "sample_idx" or "window"
    index: int
    start_s: float | None = None  # where a window of a raw recording starts


# ----------------------------------------------------------------------------------------------
# command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True, help="instruction-tuned NeuroLM checkpoint")
    p.add_argument("--tokenizer_path", default=None,
                   help="VQ checkpoint whose encoder the LM uses (optional when the LM "
                        "checkpoint carries the encoder weights)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_path", help="folder of processed sample .pkl files of the task")
    src.add_argument("--edf", help="a raw recording in any format MNE reads (EDF, BDF, CNT, "
                     "BrainVision .vhdr, FIF, ...), preprocessed here")
    p.add_argument("--task", default=None,
                   help="task name of the instruction table, e.g. TUAB (default: the task of "
                        "--task_file)")
    p.add_argument("--task_file", default=None,
                   help="your own task: a TOML/JSON file (README 'Your own data and tasks')")
    p.add_argument("--channels", choices=("task", "all"), default="task",
                   help="with --edf: the task's channels (default), or every channel the "
                        "vocabulary knows, with fewer seconds per window when there are many")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE,
                   help="with --edf: windows answered together (default: %(default)s)")
    p.add_argument("--plot", choices=PLOT_MODES, default="overview",
                   help="overview: one figure of the recording with the per-window answers (a "
                        "sample's EEG with --data_path); first / all: also a PNG of the first / "
                        "every window; none (default: %(default)s)")
    p.add_argument("--sample_idx", type=int, default=0,
                   help="with --data_path: index into the .pkl files sorted by name")
    p.add_argument("--window", type=int, default=None,
                   help="with --edf: answer only this window (default: every window)")
    p.add_argument("--out_dir", "--output_dir", dest="out_dir", default="runs/inference",
                   help="runs are written to timestamped folders under it (--output_dir: the "
                        "same flag, its former name)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, "
                   "cuda, cuda:N")
    p.add_argument("--max_new_tokens", type=int, default=None,
                   help="tokens to generate (default: the task's longest answer)")
    return p


# ----------------------------------------------------------------------------------------------
# inputs: a processed sample or windows of a raw recording

def resolve_task(name: str | None, task_file: str | None = None) -> Task:
    custom = None
    if task_file is not None:
        try:
            custom = load_task_files([task_file])[0]
        except TaskFileError as err:
            raise UserError(str(err)) from None
    if name is None:
        if custom is None:
            raise UserError("give --task (a task name, e.g. TUAB) or --task_file")
        return custom
    try:
        return get_task(name)
    except KeyError:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def display_name(path) -> str:
    """A file name safe to print, plot and write to JSON: bytes that are not UTF-8 and control
    characters (tabs, newlines) become escapes."""
    raw = os.fsencode(Path(path).name).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in raw)


def segment_from_folder(data_path: str, sample_idx: int) -> tuple[Segment, Path]:
    try:
        files = sample_files(data_path)
    except FileNotFoundError as err:
        raise UserError(f"--data_path {err}") from None
    if not 0 <= sample_idx < len(files):
        raise UserError(f"--sample_idx {sample_idx} is out of range: {data_path} holds "
                        f"{len(files)} sample files, so the index must be in 0..{len(files) - 1}")
    path = files[sample_idx]
    try:
        sample = load_sample(path)
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as err:  # unsafe ones too
        raise UserError(f"cannot read sample file {path}: {err}") from None
    if sample["X"].shape[1] < PATCH_SIZE:
        raise UserError(f"{path}: the sample is {sample['X'].shape[1] / SAMPLING_RATE:g} s long, "
                        f"shorter than one second (one EEG token, {PATCH_SIZE} samples)")
    return Segment(sample["X"], sample["ch_names"], sample["y"], "sample_idx", sample_idx), path


def check_channels(segment: Segment, source: Path) -> None:
    unknown = []
    for name in segment.ch_names:
        try:
            channel_index(name)
        except ValueError:
            unknown.append(name)
    if unknown:
        raise UserError(f"{source}: channels not in the model's channel vocabulary: "
                        f"{', '.join(unknown)}")


def task_signal(task: Task, channels: str = "task"):
    """(SignalSpec, window seconds, stride seconds) of a task: a built-in task's from its prepare
    script (the home of its dataset's facts), a task file's from the file. --channels all (or a
    task without fixed channels) takes every channel the vocabulary knows."""
    from dataset_maker import common
    if task.prepare_script:
        module = importlib.import_module(f"dataset_maker.{task.prepare_script}")
        seconds = module.WINDOW_SECONDS
        stride = getattr(module, "STRIDE_SECONDS", seconds)
        wanted, mains = module.SIGNAL.channels, module.SIGNAL.mains_hz
    elif task.window_seconds is not None:
        seconds, stride = task.window_seconds, task.stride_seconds or task.window_seconds
        wanted, mains = task.channels, task.mains_hz
    else:
        raise UserError(f"--edf does not know how task {task.name} cuts recordings (no prepare "
                        "script, no preprocessing in a task file)")
    # Any recording is welcome here, whatever rate the task's own recordings have.
    spec = common.SignalSpec(channels=None if channels == "all" else wanted, mains_hz=mains)
    return spec, seconds, stride


@dataclass
class RawInput:
    """A preprocessed raw recording and how it was cut."""
    path: Path
    data: np.ndarray            # (C, T) microvolts at 200 Hz
    ch_names: list[str]
    left_out: list              # [(raw name, why)]
    seconds: float              # window length
    stride: float
    n_windows: int


def read_recording(edf: str, task: Task, channels: str = "task") -> RawInput:
    """A raw recording preprocessed as the task's prepare script does; its window length shrinks
    when the channels would not fit the EEG token budget."""
    from dataset_maker import common

    path = Path(edf)
    name = display_name(path)
    if not path.is_file():
        raise UserError(f"--edf {name}: no such file")
    spec, seconds, stride = task_signal(task, channels)
    try:
        eeg = common.load_eeg(path, spec)
    except common.BadRecording as err:
        reason = str(err)
        if reason.startswith("missing channels") and spec.channels is not None:
            present = [common.normalise_channel_name(n) for n in _edf_channels(path)]
            reason += (f" (task {task.name} needs {', '.join(spec.channels)}; the file has "
                       f"{', '.join(present)}; --channels all takes whatever it has)")
        raise UserError(f"{name}: {reason}") from None
    n_channels = len(eeg.ch_names)
    if n_channels > EEG_MAX_TOKENS:
        raise UserError(f"{name}: {n_channels} channels do not fit in {EEG_MAX_TOKENS} EEG "
                        "tokens (one per channel-second); list fewer in a task file")
    fit = EEG_MAX_TOKENS // n_channels
    if seconds > fit:   # many channels: fewer seconds per window, as the pretraining windows do
        seconds, stride = fit, min(stride, fit)
    if eeg.data.shape[1] < PATCH_SIZE:
        raise UserError(f"{name}: the recording is {eeg.seconds:.2f} s long, shorter than one "
                        f"second (one EEG token)")
    n_windows = len(range(0, eeg.data.shape[1] - int(round(seconds * SAMPLING_RATE)) + 1,
                          int(round(stride * SAMPLING_RATE))))
    if n_windows == 0:
        raise UserError(f"{name}: {eeg.seconds:.1f} s is shorter than one {task.name} window "
                        f"({seconds:g} s)")
    return RawInput(path, eeg.data, list(eeg.ch_names), list(eeg.left_out), seconds, stride,
                    n_windows)


def segments_from_edf(recording: RawInput, window: int | None) -> list[Segment]:
    from dataset_maker import common

    cut = common.windows(recording.data, recording.seconds, recording.stride)
    if window is not None:
        if not 0 <= window < len(cut):
            raise UserError(f"--window {window} is out of range: "
                            f"{display_name(recording.path)} gives {len(cut)} windows of "
                            f"{recording.seconds:g} s every {recording.stride:g} s, so the index "
                            f"must be in 0..{len(cut) - 1}")
        picked = [window]
    else:
        picked = range(len(cut))
    return [Segment(cut[i], recording.ch_names, None, "window", i,
                    start_s=i * recording.stride) for i in picked]


def _edf_channels(path: Path) -> list[str]:
    import mne
    try:
        return mne.io.read_raw(path, preload=False, verbose="ERROR").ch_names
    except Exception:  # only decorates an error message
        return []


def describe_channels(recording: RawInput) -> str:
    used = f"{len(recording.ch_names)} used: {', '.join(recording.ch_names)}"
    if not recording.left_out:
        return used
    left = "; ".join(f"{raw!r} ({why})" for raw, why in recording.left_out)
    return f"{used}\n         left out: {left}"


# ----------------------------------------------------------------------------------------------
# model

def load_model(model_path: str, tokenizer_path: str | None, device: torch.device):
    """An eval-mode NeuroLM; every way a checkpoint can be wrong becomes one UserError."""
    from model import CheckpointError, load_neurolm
    from model.export import is_exported

    for flag, path in (("--model_path", model_path), ("--tokenizer_path", tokenizer_path)):
        if path is not None and not (Path(path).is_file() or is_exported(path)):
            raise UserError(f"{flag} {path}: checkpoint not found")
    try:
        return load_neurolm(model_path, tokenizer_path=tokenizer_path, map_location=device)
    except CheckpointError as err:
        raise UserError(f"cannot load the checkpoint: {err}") from None


@torch.no_grad()
def answer_batch(model, task: Task, segments: list[Segment], device: torch.device,
                 max_new_tokens: int | None) -> list[dict]:
    """Greedy cached answers, labels and option probabilities of segments answered together;
    each segment's inference_seconds is its share of the batch's time."""
    try:
        eegs = [eeg_tokens(seg.X, seg.ch_names, EEG_MAX_TOKENS) for seg in segments]
    except ValueError as err:   # e.g. more channels than EEG tokens
        raise UserError(f"cannot turn the EEG into tokens: {err}") from None
    prompt = task_tokens(task).prompt
    batch = {k: torch.stack([e[k] for e in eegs]).to(device)
             for k in ("x_eeg", "input_chans", "input_time", "input_mask")}
    batch["prompt_ids"] = torch.tensor([prompt] * len(segments), dtype=torch.long, device=device)
    batch["prompt_len"] = torch.full((len(segments),), len(prompt), dtype=torch.long,
                                     device=device)
    _synchronise(device)
    start = time.perf_counter()
    answers = answering.answer_batch(model, batch, task, max_new_tokens)
    texts, labels, probs = answers.texts, answers.labels, answers.probabilities().tolist()
    _synchronise(device)
    share = (time.perf_counter() - start) / len(segments)
    return [{"generated_text": text, "predicted_label": label,
             "option_probs": {name: p for name, p in zip(task.label_names, row)},
             "inference_seconds": share,
             "seconds_seen": int(eeg["input_mask"].sum()) // len(seg.ch_names)}
            for text, label, row, eeg, seg in zip(texts, labels, probs, eegs, segments)]


def answer(model, task: Task, segment: Segment, device: torch.device,
           max_new_tokens: int | None) -> dict:
    """The one-window path: answer_batch of one segment."""
    return answer_batch(model, task, [segment], device, max_new_tokens)[0]


def answer_all(model, task: Task, segments: list[Segment], device: torch.device,
               max_new_tokens: int | None, batch_size: int) -> list[dict]:
    """Every segment, batch_size at a time, with a progress bar when there is more than one
    batch (tqdm: plain lines when redirected)."""
    from tqdm import tqdm

    results = []
    with tqdm(total=len(segments), unit="window", desc="answering",
              disable=len(segments) <= batch_size, mininterval=1.0) as bar:
        for lo in range(0, len(segments), batch_size):
            chunk = segments[lo:lo + batch_size]
            results += answer_batch(model, task, chunk, device, max_new_tokens)
            bar.update(len(chunk))
    return results


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------------------------
# device, memory, output files

def peak_memory_mb(device: torch.device) -> float:
    """GPU memory the tensors reached on a GPU; the process's peak resident set otherwise."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def make_run_dir(out_dir: str | os.PathLike, task_name: str) -> Path:
    """A new folder named by the start time; a suffix keeps two runs of one second apart."""
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(out_dir) / f"{stamp}_{task_name}"
    for n in range(1000):
        candidate = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
        except OSError as err:
            raise UserError(f"cannot create the output folder {candidate}: {err}") from err
    raise UserError(f"too many runs named {base} in this second")


def nice_scale_uv(X: np.ndarray) -> float:
    """A round amplitude (1, 2 or 5 times a power of ten) near a typical channel's spread."""
    spread = float(np.median(np.percentile(X, 95, axis=1) - np.percentile(X, 5, axis=1)))
    if not np.isfinite(spread) or spread <= 0:
        return 1.0
    exponent = np.floor(np.log10(spread))
    for mult in (1, 2, 5, 10):
        if mult * 10**exponent >= spread / 2:
            return float(mult * 10**exponent)
    return float(10 ** (exponent + 1))


def draw_eeg(X: np.ndarray, ch_names: list[str], sfreq: float, title: str):
    """A figure of the channels stacked top to bottom with their names, time in seconds, and a
    microvolt scale bar; its first len(ch_names) lines are the channel traces."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    n_ch, n_t = X.shape
    scale = nice_scale_uv(X)
    gap = 2.0 * scale  # room for a typical channel between two baselines
    t = np.arange(n_t) / sfreq
    offsets = -gap * np.arange(n_ch)
    fig, ax = plt.subplots(figsize=(min(4 + n_t / sfreq * 0.6, 20), 1.2 + 0.3 * n_ch))
    centred = X - np.median(X, axis=1, keepdims=True)
    for row, off in zip(centred, offsets):
        ax.plot(t, row + off, lw=0.6, color="k")
    ax.set_yticks(offsets, ch_names)
    ax.set_xlabel("time (s)")
    ax.set_xlim(0, n_t / sfreq)
    ax.set_ylim(offsets[-1] - gap, gap)
    # Scale bar just right of the traces.
    x_bar = n_t / sfreq * 1.01
    ax.plot([x_bar, x_bar], [gap * 0.5, gap * 0.5 - scale], color="tab:red", lw=2, clip_on=False)
    ax.text(x_bar * 1.005, gap * 0.5 - scale / 2, f"{scale:g} \u00b5V", color="tab:red",
            va="center", ha="left", fontsize=8, clip_on=False)
    ax.set_title(title, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def plot_eeg(X: np.ndarray, ch_names: list[str], sfreq: float, path: Path, title: str) -> int:
    """draw_eeg saved as a PNG; returns the number of channel traces drawn."""
    fig = draw_eeg(X, ch_names, sfreq, title)
    n_traces = len(fig.axes[0].lines) - 1  # all lines but the scale bar
    save_figure(fig, path, bbox_inches="tight")  # "tight" keeps the scale bar label
    return n_traces


# ----------------------------------------------------------------------------------------------
# one run

def run(args: argparse.Namespace) -> int:
    task = resolve_task(args.task, args.task_file)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be at least 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise UserError(str(err)) from None
    # Inputs first: their mistakes are cheaper to report than a model load.
    recording = None
    if args.edf is not None:
        recording = read_recording(args.edf, task, args.channels)
        segments, source = segments_from_edf(recording, args.window), Path(args.edf)
    else:
        segment, source = segment_from_folder(args.data_path, args.sample_idx)
        segments = [segment]
    check_channels(segments[0], source)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = load_model(args.model_path, args.tokenizer_path, device)
    run_dir = make_run_dir(args.out_dir, task.name)
    try:
        if recording is None:
            answer_sample(args, model, task, segments[0], source, device, run_dir)
        else:
            answer_recording(args, model, task, recording, segments, device, run_dir)
    except BaseException:
        if not any(run_dir.iterdir()):   # never leave an empty run folder behind
            run_dir.rmdir()
        raise
    return 0


def answer_sample(args, model, task: Task, segment: Segment, source: Path,
                  device: torch.device, run_dir: Path) -> None:
    result = answer(model, task, segment, device, args.max_new_tokens)
    X = segment.X[:, :result["seconds_seen"] * PATCH_SIZE]   # what the model was shown
    stem = f"sample_{segment.index:04d}"
    record = make_record(args, task, segment, result, X, device)
    n_traces = len(segment.ch_names)
    if args.plot != "none":
        n_traces = plot_eeg(X, segment.ch_names, SAMPLING_RATE, run_dir / f"{stem}.png",
                            f"{task.name} | {display_name(source)} | sample_idx {segment.index}")
    write_json(run_dir / f"{stem}.json", record, indent=2)
    print_record(record, task, source, segment, X, n_traces,
                 f"{run_dir / stem}.json" + (f", {stem}.png" if args.plot != "none" else ""))


def answer_recording(args, model, task: Task, recording: RawInput, segments: list[Segment],
                     device: torch.device, run_dir: Path) -> None:
    name = display_name(recording.path)
    print(f"task     {task.name}   {len(segments)} of {recording.n_windows} windows of "
          f"{recording.seconds:g} s every {recording.stride:g} s from {name}\n"
          f"channels {describe_channels(recording)}", flush=True)
    results = answer_all(model, task, segments, device, args.max_new_tokens, args.batch_size)
    records = []
    for segment, result in zip(segments, results):
        X = segment.X[:, :result["seconds_seen"] * PATCH_SIZE]
        record = make_record(args, task, segment, result, X, device)
        record["start_s"] = segment.start_s
        records.append(record)
    saved = write_recording_answers(run_dir, task, recording, records)
    if args.plot != "none":
        if args.window is None:
            plot_overview(recording, task, segments, records, run_dir / "overview.png")
            saved.append("overview.png")
        # one window asked for: its own figure; otherwise the first or every one on request
        pairs = list(zip(segments, records))
        shown = pairs if args.window is not None or args.plot == "all" else (
            pairs[:1] if args.plot == "first" else [])
        for segment, record in shown:
            stem = f"window_{segment.index:04d}.png"
            X = segment.X[:, :record["eeg_shape"][1]]
            plot_eeg(X, segment.ch_names, SAMPLING_RATE, run_dir / stem,
                     f"{task.name} | {name} | window {segment.index}")
            saved.append(stem)
    if len(segments) == 1:
        segment, record = segments[0], records[0]
        X = segment.X[:, :record["eeg_shape"][1]]
        print_record(record, task, recording.path, segment, X, len(segment.ch_names), None)
    else:
        print_window_table(records, segments, task)
    print(f"saved    {run_dir}: {', '.join(saved)}")


def write_recording_answers(run_dir: Path, task: Task, recording: RawInput,
                            records: list[dict]) -> list[str]:
    """answers.json (the recording, then one record per window) and answers.csv (one row per
    window: where it starts, the answer, its label and every option's probability)."""
    from utils import atomic_write

    meta = {"source": str(recording.path.resolve()).encode("utf-8", "backslashreplace")
            .decode("utf-8"), "file": display_name(recording.path), "task": task.name,
            "prompt": task.prompt, "channels": recording.ch_names,
            "left_out": [{"channel": raw, "reason": why} for raw, why in recording.left_out],
            "window_seconds": recording.seconds, "stride_seconds": recording.stride,
            "n_windows": recording.n_windows, "windows": records}
    write_json(run_dir / "answers.json", meta, indent=2)
    header = ["window", "start_s", "generated_text", "predicted_label", "label_name"] + [
        f"p_{name}" for name in task.label_names] + ["inference_seconds"]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(header)
            for r in records:
                label = r["predicted_label"]
                out.writerow([r["window"], f"{r['start_s']:g}", r["generated_text"],
                              "" if label is None else label,
                              "" if label is None else task.label_names[label]]
                             + [f"{r['option_probs'][n]:.6f}" for n in task.label_names]
                             + [r["inference_seconds"]])
    atomic_write(run_dir / "answers.csv", write)
    return ["answers.json", "answers.csv"]


def plot_overview(recording: RawInput, task: Task, segments: list[Segment], records: list[dict],
                  path: Path) -> None:
    """The whole recording (decimated for drawing) above the per-window option probabilities,
    each window's answer written over its span."""
    import matplotlib
    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    data, names = recording.data, recording.ch_names
    step = max(1, data.shape[1] // 4000)
    shown = data[:, ::step]
    t = np.arange(shown.shape[1]) * step / SAMPLING_RATE
    scale = nice_scale_uv(shown)
    offsets = -2.0 * scale * np.arange(len(names))
    fig, (top, bottom) = plt.subplots(
        2, 1, sharex=True, figsize=(min(6 + t[-1] * 0.05, 24), 3 + 0.18 * len(names)),
        gridspec_kw={"height_ratios": [max(2, len(names) / 6), 1.5]})
    centred = shown - np.median(shown, axis=1, keepdims=True)
    for row, off in zip(centred, offsets):
        top.plot(t, row + off, lw=0.4, color="k")
    ticks = list(range(0, len(names), max(1, len(names) // 24)))
    top.set_yticks(offsets[ticks], [names[i] for i in ticks], fontsize=7)
    top.set_ylim(offsets[-1] - 2 * scale, 2 * scale)
    top.set_title(f"{task.name} | {display_name(recording.path)} | {len(names)} channels, "
                  f"{len(segments)} windows of {recording.seconds:g} s ({scale:g} \u00b5V "
                  "between baselines)", fontsize=9)
    centres = [seg.start_s + recording.seconds / 2 for seg in segments]
    for name in task.label_names:
        bottom.plot(centres, [r["option_probs"][name] for r in records], marker=".", lw=1,
                    label=name)
    for centre, record in zip(centres, records):
        label = record["predicted_label"]
        bottom.text(centre, 1.04, "?" if label is None else task.label_names[label],
                    ha="center", va="bottom", fontsize=6, rotation=90)
    bottom.set_ylim(0, 1.25)
    bottom.set_ylabel("p(option)")
    bottom.set_xlabel("time (s)")
    bottom.legend(fontsize=7, loc="lower right", ncol=min(6, task.n_classes))
    for ax in (top, bottom):
        ax.spines[["top", "right"]].set_visible(False)
    save_figure(fig, path, bbox_inches="tight")


def make_record(args, task: Task, segment: Segment, result: dict, X: np.ndarray,
                device: torch.device) -> dict:
    record = {
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        segment.index_key: segment.index,
        "task": task.name,
        "prompt": task.prompt,
        "generated_text": result["generated_text"],
        "predicted_label": result["predicted_label"],
        "option_probs": result["option_probs"],
        "true_label": segment.true_label,
        "inference_seconds": round(result["inference_seconds"], 4),
        "model_path": str(Path(args.model_path).resolve()),
        "tokenizer_path": (str(Path(args.tokenizer_path).resolve())
                           if args.tokenizer_path is not None else None),
        "device": str(device),
        "eeg_shape": list(X.shape),
        "peak_memory_mb": round(peak_memory_mb(device), 1),
    }
    return record


def _label_text(task: Task, label: int | None) -> str:
    if label is None:
        return "none (the answer matches no option)"
    if 0 <= label < task.n_classes:
        return f"{label} ({task.label_names[label]})"
    return f"{label} (not a {task.name} label)"


def print_record(record: dict, task: Task, source: Path, segment: Segment, X: np.ndarray,
                 n_traces: int, saved: str | None) -> None:
    memory = "GPU peak" if record["device"].startswith("cuda") else "process peak RSS"
    seconds = X.shape[1] / SAMPLING_RATE
    shown = "" if X.shape[1] == segment.X.shape[1] else (
        f" (first {seconds:g} of {segment.X.shape[1] / SAMPLING_RATE:g} s: "
        f"{EEG_MAX_TOKENS} EEG tokens at most)")
    probs = " | ".join(f"{k} {v:.3f}" for k, v in record["option_probs"].items())
    truth = ("" if record["true_label"] is None
             else f"   true label {_label_text(task, record['true_label'])}")
    print(f"task     {task.name}   {segment.index_key} {segment.index} of "
          f"{display_name(source)}\n"
          f"EEG      {n_traces} channels x {seconds:g} s{shown}\n"
          f"prompt   {record['prompt']}\n"
          f"answer   {record['generated_text']!r}\n"
          f"label    {_label_text(task, record['predicted_label'])}{truth}\n"
          f"options  {probs}\n"
          f"time     {record['inference_seconds']:.3f} s on {record['device']}   "
          f"memory {record['peak_memory_mb']:.0f} MB ({memory})"
          + ("" if saved is None else f"\nsaved    {saved}"))


def print_window_table(records: list[dict], segments: list[Segment], task: Task) -> None:
    print(f"prompt   {records[0]['prompt']}")
    rows = [("window", "start_s", "answer", "label", "p(label)")]
    for record, segment in zip(records, segments):
        label = record["predicted_label"]
        name = task.label_names[label] if label is not None else "none"
        p = f"{record['option_probs'][name]:.3f}" if label is not None else "-"
        rows.append((str(segment.index), f"{segment.start_s:g}",
                     repr(record["generated_text"]), name, p))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    total = sum(r["inference_seconds"] for r in records)
    memory = records[-1]["peak_memory_mb"]
    print(f"time     {total:.3f} s in all ({len(records) / max(total, 1e-9):.3g} windows/s) on "
          f"{records[0]['device']}   memory {memory:.0f} MB")


# ----------------------------------------------------------------------------------------------
# main

def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
