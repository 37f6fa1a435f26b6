"""Stage 5: ask a trained NeuroLM about one EEG segment (spec section 6).

    python simple_inference.py --model_path CKPT --tokenizer_path VQ --data_path DIR \
        --task TUAB --sample_idx 0 --out_dir OUT
    python simple_inference.py --model_path CKPT --tokenizer_path VQ --edf rec.edf \
        --task Workload --out_dir OUT [--window N]

Each run writes a timestamped folder under --out_dir holding, per answered segment, a PNG of
the input EEG and a JSON record (RECORD_FIELDS). User mistakes end with one "error:" line and
exit status 2, never a traceback. Decoding is greedy, so a run needs no seed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import pickle
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dataset import PATCH_SIZE, SAMPLING_RATE, channel_index, eeg_tokens, load_sample, sample_files
from downstream_dataset import EEG_MAX_TOKENS, TASKS, Task, get_task, task_tokens
from evaluation import generate_answers, option_log_likelihoods
from utils import resolve_device, save_figure, write_json

RECORD_FIELDS = (
    "timestamp", "sample_idx", "task", "prompt", "generated_text", "predicted_label",
    "option_probs", "true_label", "inference_seconds", "model_path", "tokenizer_path", "device",
    "eeg_shape", "peak_memory_mb",
)
USER_ERROR_EXIT = 2


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, without a traceback."""


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
    src.add_argument("--edf", help="a raw EDF/BDF recording, preprocessed here")
    p.add_argument("--task", required=True, help="task name of the instruction table, e.g. TUAB")
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

def resolve_task(name: str) -> Task:
    try:
        return get_task(name)
    except KeyError:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


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


def task_signal(task: Task):
    """(SignalSpec, window seconds, stride seconds) of the task's prepare script: --edf reuses
    its channels, mains frequency and windows."""
    from dataset_maker import PREPARE_SCRIPTS, common, prepare_module
    if task.name not in PREPARE_SCRIPTS:
        raise UserError(f"--edf does not know how task {task.name} cuts recordings; known: "
                        f"{', '.join(t for t in TASKS if t in PREPARE_SCRIPTS)}")
    module = prepare_module(task.name)
    seconds = module.WINDOW_SECONDS
    stride = getattr(module, "STRIDE_SECONDS", seconds)
    # Any recording is welcome here, whatever rate the task's own recordings have.
    spec = common.SignalSpec(channels=module.SIGNAL.channels, mains_hz=module.SIGNAL.mains_hz)
    return spec, seconds, stride


def segments_from_edf(edf: str, task: Task, window: int | None) -> list[Segment]:
    """The task's windows of a raw recording, preprocessed as its prepare script does."""
    from dataset_maker import common

    path = Path(edf)
    if not path.is_file():
        raise UserError(f"--edf {path}: no such file")
    if path.suffix.lower() not in (".edf", ".bdf"):
        raise UserError(f"--edf {path}: expected an EDF or BDF file (.edf, .bdf)")
    spec, seconds, stride = task_signal(task)
    try:
        eeg = common.load_eeg(path, spec)
    except common.BadRecording as err:
        reason = str(err)
        if reason.startswith("missing channels"):
            present = [common.normalise_channel_name(n) for n in _edf_channels(path)]
            reason += (f" (task {task.name} needs {', '.join(spec.channels)}; the file has "
                       f"{', '.join(present)})")
        raise UserError(f"{path}: {reason}") from None
    cut = common.windows(eeg.data, seconds, stride)
    if not cut:
        raise UserError(f"{path}: {eeg.seconds:.1f} s is shorter than one {task.name} window "
                        f"({seconds:g} s)")
    if window is not None:
        if not 0 <= window < len(cut):
            raise UserError(f"--window {window} is out of range: {path} gives {len(cut)} windows "
                            f"of {seconds:g} s every {stride:g} s, so the index must be in "
                            f"0..{len(cut) - 1}")
        picked = [window]
    else:
        picked = range(len(cut))
    return [Segment(cut[i], list(eeg.ch_names), None, "window", i, start_s=i * stride)
            for i in picked]


def _edf_channels(path: Path) -> list[str]:
    import mne
    try:
        return mne.io.read_raw(path, preload=False, verbose="ERROR").ch_names
    except Exception:  # only decorates an error message
        return []


# ----------------------------------------------------------------------------------------------
# model

def load_model(model_path: str, tokenizer_path: str | None, device: torch.device):
    """An eval-mode NeuroLM; every way a checkpoint can be wrong becomes one UserError."""
    from model import CheckpointError, load_neurolm
    from model.checkpoints import is_exported

    for flag, path in (("--model_path", model_path), ("--tokenizer_path", tokenizer_path)):
        if path is not None and not (Path(path).is_file() or is_exported(path)):
            raise UserError(f"{flag} {path}: checkpoint not found")
    try:
        return load_neurolm(model_path, tokenizer_path=tokenizer_path, map_location=device)
    except CheckpointError as err:
        raise UserError(f"cannot load the checkpoint: {err}") from None


@torch.no_grad()
def answer(model, task: Task, segment: Segment, device: torch.device,
           max_new_tokens: int | None) -> dict:
    """Greedy cached answer, its label and the option probabilities for one segment."""
    try:
        eeg = eeg_tokens(segment.X, segment.ch_names, EEG_MAX_TOKENS)
    except ValueError as err:   # e.g. more channels than EEG tokens
        raise UserError(f"cannot turn the EEG into tokens: {err}") from None
    prompt = task_tokens(task).prompt
    batch = {"x_eeg": eeg["x_eeg"], "input_chans": eeg["input_chans"],
             "input_time": eeg["input_time"], "input_mask": eeg["input_mask"]}
    batch = {k: v[None].to(device) for k, v in batch.items()}
    batch["prompt_ids"] = torch.tensor([prompt], dtype=torch.long, device=device)
    batch["prompt_len"] = torch.tensor([len(prompt)], dtype=torch.long, device=device)
    _synchronise(device)
    start = time.perf_counter()
    texts, labels = generate_answers(model, batch, task, max_new_tokens)
    loglik = option_log_likelihoods(model, batch, task)
    probs = torch.softmax(loglik.float(), dim=-1)[0].tolist()
    _synchronise(device)
    return {"generated_text": texts[0], "predicted_label": labels[0],
            "option_probs": {name: p for name, p in zip(task.label_names, probs)},
            "inference_seconds": time.perf_counter() - start,
            "seconds_seen": int(eeg["input_mask"].sum()) // len(segment.ch_names)}


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
    task = resolve_task(args.task)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be at least 1, got {args.max_new_tokens}")
    try:
        device = resolve_device(args.device)
    except (RuntimeError, ValueError) as err:
        raise UserError(str(err)) from None
    # Inputs first: their mistakes are cheaper to report than a model load.
    if args.edf is not None:
        segments, source = segments_from_edf(args.edf, task, args.window), Path(args.edf)
    else:
        segment, source = segment_from_folder(args.data_path, args.sample_idx)
        segments = [segment]
    check_channels(segments[0], source)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    model = load_model(args.model_path, args.tokenizer_path, device)
    run_dir = make_run_dir(args.out_dir, task.name)

    records = []
    for segment in segments:
        result = answer(model, task, segment, device, args.max_new_tokens)
        X = segment.X[:, :result["seconds_seen"] * PATCH_SIZE]   # what the model was shown
        stem = f"{segment.index_key.replace('_idx', '')}_{segment.index:04d}"
        record = make_record(args, task, segment, result, X, device)
        n_traces = plot_eeg(X, segment.ch_names, SAMPLING_RATE, run_dir / f"{stem}.png",
                            f"{task.name} | {source.name} | {segment.index_key} {segment.index}")
        write_json(run_dir / f"{stem}.json", record, indent=2)
        records.append(record)
        if len(segments) == 1:
            print_record(record, task, source, segment, X, n_traces, run_dir / stem)
    if len(segments) > 1:
        print_window_table(records, segments, task, source, run_dir)
    return 0


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
                 n_traces: int, stem: Path) -> None:
    memory = "GPU peak" if record["device"].startswith("cuda") else "process peak RSS"
    seconds = X.shape[1] / SAMPLING_RATE
    shown = "" if X.shape[1] == segment.X.shape[1] else (
        f" (first {seconds:g} of {segment.X.shape[1] / SAMPLING_RATE:g} s: "
        f"{EEG_MAX_TOKENS} EEG tokens at most)")
    probs = " | ".join(f"{k} {v:.3f}" for k, v in record["option_probs"].items())
    truth = ("" if record["true_label"] is None
             else f"   true label {_label_text(task, record['true_label'])}")
    print(f"task     {task.name}   {segment.index_key} {segment.index} of {source}\n"
          f"EEG      {n_traces} channels x {seconds:g} s{shown}\n"
          f"prompt   {record['prompt']}\n"
          f"answer   {record['generated_text']!r}\n"
          f"label    {_label_text(task, record['predicted_label'])}{truth}\n"
          f"options  {probs}\n"
          f"time     {record['inference_seconds']:.3f} s on {record['device']}   "
          f"memory {record['peak_memory_mb']:.0f} MB ({memory})\n"
          f"saved    {stem}.json, {stem.name}.png")


def print_window_table(records: list[dict], segments: list[Segment], task: Task, source: Path,
                       run_dir: Path) -> None:
    print(f"task     {task.name}   {len(records)} windows of {source}\n"
          f"prompt   {records[0]['prompt']}")
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
    print(f"time     {total:.3f} s in all on {records[0]['device']}   memory {memory:.0f} MB\n"
          f"saved    {run_dir}/window_*.json, window_*.png")


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
