"""Stage 5: ask a trained NeuroLM about EEG: one processed sample, or whole recordings.

    python simple_inference.py --model_path CKPT --tokenizer_path VQ --data_path DIR \
        --task TUAB --sample_idx 0 --out_dir OUT
    python simple_inference.py --model_path CKPT --edf recordings/ more.edf 'night*/*.bdf' \
        --task HMC --out_dir OUT [--qc flag|skip] [--abstain 0.6] [--strict] [--plot overview]

--edf takes files, folders, globs or a BIDS root, in any format MNE reads (EDF, BDF, CNT,
BrainVision, FIF, EEGLAB, ...) at any rate. Each recording is streamed through the task's
preprocessing and answered window by window (inference/, the Python entry point
`inference.analyse_recording`); OUT gets recordings.csv (a row per recording, unreadable ones
with their error), windows.csv (a row per window across recordings) and a folder per recording
named after it: answers.json, overview.png (the timeline), hypnogram.png for a sleep task, and
the answers as annotations (EDF+, BIDS events.tsv, MNE .fif). A processed sample (--data_path)
gives OUT/<sample>/sample_NNNN.json and .png. User mistakes end with one "error:" line and exit
status 2, never a traceback. Decoding is greedy, so a run needs no seed.
"""
from __future__ import annotations

import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)

# isort: split

import argparse
import datetime as dt
import math
import pickle
import resource
import sys
from pathlib import Path

import torch

from dataset import PATCH_SIZE, SAMPLING_RATE, channel_index, load_sample, sample_files
from inference import analyse_recording, console, load_model, outputs, timeline
from inference.annotations import write_all as write_annotation_files
from inference.loading import resolve_task
from inference.recordings import (
    RecordingError,
    display_name,
    find_recordings,
    open_recording,
)
from model.precision import INFERENCE_DTYPE_CHOICES
from utils import USER_ERROR_EXIT, UserError

RECORD_FIELDS = (
    "timestamp", "sample_idx", "task", "prompt", "generated_text", "predicted_label",
    "option_probs", "true_label", "inference_seconds", "model_path", "tokenizer_path", "device",
    "dtype", "eeg_shape", "peak_memory_mb",
)
PLOT_MODES = ("overview", "first", "all", "none")
DEFAULT_BATCH_SIZE = 16
plot_eeg = timeline.plot_eeg      # tests count the traces through this name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_path", required=True,
                   help="instruction-tuned NeuroLM checkpoint, or its exported folder (python -m "
                        "evaluation export)")
    p.add_argument("--tokenizer_path", default=None,
                   help="VQ checkpoint whose encoder the LM uses (optional when the LM "
                        "checkpoint carries the encoder weights)")
    p.add_argument("--base_folder", default=None,
                   help="where a LoRA checkpoint's base model folder is now, if it moved")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data_path", help="folder of processed sample .pkl files of the task")
    src.add_argument("--edf", nargs="+", help="raw recordings: files, folders, globs or a "
                     "BIDS root, in any format MNE reads (EDF, BDF, CNT, BrainVision .vhdr, "
                     "FIF, ...), preprocessed here")
    p.add_argument("--task", default=None, metavar="NAME",
                   help="task name, e.g. TUAB, or one stored in the checkpoint (default: the "
                        "task of --task_file, else the checkpoint's only stored task)")
    p.add_argument("--task_file", default=None, metavar="FILE",
                   help="your own task: a TOML/JSON file (README 'Your own data and tasks')")
    p.add_argument("--channels", choices=("task", "all"), default="task", metavar="task|all",
                   help="with --edf: the task's channels (default), or every channel the "
                        "vocabulary knows, with fewer seconds per window when there are many")
    p.add_argument("--batch_size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                   help="with --edf: windows answered together (default: %(default)s)")
    p.add_argument("--qc", choices=("flag", "skip"), default="flag",
                   help="with --edf: windows failing quality control (flat, clipped, muscle, "
                        "line noise, implausible amplitude, BAD_ annotations) are answered and "
                        "flagged, or left unanswered (default: %(default)s)")
    p.add_argument("--abstain", type=float, default=None, metavar="P",
                   help="with --edf: mark windows whose top probability is below P uncertain "
                        "(kept and counted apart)")
    p.add_argument("--strict", action="store_true",
                   help="with --edf: refuse recordings outside what the task was trained on "
                        "(channel coverage, rate, amplitude, bipolar stand-ins)")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="with one --edf recording: its known labels (a hypnogram or other "
                        "annotation file MNE reads, or a CSV/TSV of onset, duration, label) for "
                        "the agreement; a Sleep-EDF *-Hypnogram.edf beside its *-PSG.edf is "
                        "found without it")
    p.add_argument("--label_map", default=None, metavar="DESC=LABEL,...",
                   help="with --edf: which annotation descriptions mean which task label (the "
                        "recording's own annotations are the known labels when --labels is not "
                        "given); sleep-stage spellings are known without it")
    p.add_argument("--plot", choices=PLOT_MODES, default="overview",
                   help="overview: the timeline of each recording (a sample's EEG with "
                        "--data_path); first / all: also a PNG of the first / every window; "
                        "none (default: %(default)s)")
    p.add_argument("--sample_idx", type=int, default=0, metavar="N",
                   help="with --data_path: 0-based index into the .pkl files sorted by name "
                        "(default: %(default)s)")
    p.add_argument("--window", type=int, default=None, metavar="K",
                   help="with --edf: answer only window K, a 0-based window index (not "
                        "seconds: window K starts at K x the task's stride; default: every "
                        "window)")
    p.add_argument("--out_dir", "--output_dir", dest="out_dir", default="runs/inference",
                   help="where the tables and the per-recording folders go (default: "
                        "%(default)s; --output_dir: the same flag, its former name)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, "
                   "cuda, cuda:N")
    p.add_argument("--dtype", choices=INFERENCE_DTYPE_CHOICES, default="auto",
                   help="weights and arithmetic: auto (bf16 where the GPU or CPU multiplies it "
                        "natively, else float32), float32, bfloat16, int8 (CPUs: int8 "
                        "weights, the rest float32) (default: %(default)s)")
    p.add_argument("--max_new_tokens", type=int, default=None, metavar="N",
                   help="tokens to generate (default: the task's longest answer)")
    return p


def check_args(args) -> None:
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be at least 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    if args.abstain is not None and not (math.isfinite(args.abstain) and 0 <= args.abstain <= 1):
        raise UserError(f"--abstain must be a probability between 0 and 1, got {args.abstain}")


def peak_memory_mb(device: torch.device) -> float:
    """GPU memory the tensors reached on a GPU; the process's peak resident set otherwise."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10   # macOS: bytes


# ----------------------------------------------------------------------------------------------
# a processed sample

def read_sample(data_path: str, sample_idx: int):
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
    unknown = []
    for name in sample["ch_names"]:
        try:
            channel_index(name)
        except ValueError:
            unknown.append(name)
    if unknown:
        raise UserError(f"{path}: channels not in the model's channel vocabulary: "
                        f"{', '.join(unknown)}")
    return sample, path


def answer_sample(args, loaded, task, sample: dict, path: Path) -> None:
    from inference.answers import answer_windows

    got = answer_windows(loaded.model, task, [sample["X"]], sample["ch_names"], loaded.device,
                         loaded.temperature(task), args.max_new_tokens)
    X = sample["X"][:, :got.seconds_seen[0] * PATCH_SIZE]   # what the model was shown
    record = {
        "timestamp": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "sample_idx": args.sample_idx, "task": task.name, "prompt": task.prompt,
        "generated_text": got.texts[0], "predicted_label": got.labels[0],
        "option_probs": {n: float(p) for n, p in zip(task.label_names, got.probs[0])},
        "true_label": sample["y"], "inference_seconds": round(got.seconds, 4),
        "model_path": str(Path(args.model_path).resolve()),
        "tokenizer_path": (str(Path(args.tokenizer_path).resolve())
                           if args.tokenizer_path is not None else None),
        "device": str(loaded.device), "dtype": str(loaded.dtype).removeprefix("torch."),
        "eeg_shape": list(X.shape),
        "peak_memory_mb": round(peak_memory_mb(loaded.device), 1)}
    folder = Path(args.out_dir) / outputs.folder_name(display_name(path))
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"sample_{args.sample_idx:04d}"
    n_traces = len(sample["ch_names"])
    if args.plot != "none":
        n_traces = plot_eeg(X, sample["ch_names"], SAMPLING_RATE, folder / f"{stem}.png",
                            f"{task.name} | {display_name(path)} | sample_idx {args.sample_idx}")
    from utils import write_json
    write_json(folder / f"{stem}.json", record, indent=2)
    console.print_record(record, task, display_name(path), "sample_idx", args.sample_idx, X,
                         sample["X"].shape[1], n_traces,
                         f"{folder / stem}.json" + (f", {stem}.png" if args.plot != "none"
                                                    else ""))


# ----------------------------------------------------------------------------------------------
# raw recordings

def check_window(args, rec) -> None:
    if args.window is not None and not 0 <= args.window < rec.n_windows:
        raise UserError(f"--window {args.window} is out of range: {rec.name} gives "
                        f"{rec.n_windows} windows of {rec.window_s:g} s every {rec.stride_s:g} "
                        f"s, so the index must be in 0..{rec.n_windows - 1}")


def answer_recording(args, loaded, task, path: Path, writer: outputs.RunWriter) -> None:
    if args.window is not None:
        check_window(args, open_recording(path, task, args.channels))
    progress = console.Progress(display_name(path))
    windows = None if args.window is None else [args.window]
    try:
        result = analyse_recording(path, task, loaded, qc=args.qc, abstain=args.abstain,
                                   strict=args.strict, batch_size=args.batch_size,
                                   channels=args.channels, progress=progress, windows=windows,
                                   max_new_tokens=args.max_new_tokens, labels=args.labels,
                                   label_map=args.label_map)
    finally:
        progress.close()
    name = result.summary["file"]
    console.print_header(task, name, result.signal, len(result.windows))
    console.print_warnings(result.warnings)
    folder = writer.folder(name)
    saved = [outputs.write_answers(folder, result)] + write_annotation_files(folder, name, result)
    if args.plot != "none":
        if args.window is None:
            timeline.plot_timeline(result, folder / "overview.png",
                                   f"{task.name} | {name} | {len(result.windows)} windows")
            saved.append("overview.png")
            if result.sleep is not None:
                timeline.plot_hypnogram(result, folder / "hypnogram.png",
                                        f"{task.name} hypnogram | {name}")
                saved.append("hypnogram.png")
        shown = result.windows["window"].tolist()
        if args.window is None and args.plot != "all":
            shown = shown[:1] if args.plot == "first" else []
        if shown:
            rec = open_recording(path, task, args.channels)
            for k in shown:
                X, _, _ = rec.read(k * rec.stride_samples, k * rec.stride_samples
                                   + rec.window_samples)
                plot_eeg(X, rec.ch_names, SAMPLING_RATE, folder / f"window_{k:04d}.png",
                         f"{task.name} | {name} | window {k}")
                saved.append(f"window_{k:04d}.png")
    writer.add(result.summary, result.windows)
    console.print_window_table(result, str(loaded.device), peak_memory_mb(loaded.device))
    print(f"saved    {folder}: {', '.join(saved)}")


def answer_recordings(args, loaded, task, paths: list[Path]) -> int:
    writer = outputs.RunWriter(args.out_dir, task.label_names)
    n_ok, failed = 0, []
    try:
        for path in paths:
            try:
                answer_recording(args, loaded, task, path, writer)
                n_ok += 1
            except UserError as err:   # this recording only: the others are still answered
                if len(paths) == 1:
                    raise
                status = "refused" if args.strict and "(--strict)" in str(err) else "error"
                writer.add(outputs.error_row(display_name(path), path, task.name, str(err),
                                             status))
                failed.append(str(err))
                print(f"skipped  {err}", file=sys.stderr, flush=True)
    except BaseException:
        writer.abandon()
        raise
    if n_ok == 0:
        writer.abandon()
        raise UserError(f"no recording could be answered: {failed[0]}"
                        + (f" (and {len(failed) - 1} more)" if failed[1:] else ""))
    saved = writer.close()
    print(f"saved    {args.out_dir}: {', '.join(saved)} ({n_ok} of {len(paths)} recordings"
          + (f"; {len(failed)} errors in recordings.csv)" if failed else ")"))
    return USER_ERROR_EXIT if args.strict and failed else 0


def run(args: argparse.Namespace) -> int:
    check_args(args)
    if args.task_file is not None:    # a bad task file is said before any model is loaded
        resolve_task(None, None, args.task_file)
    try:   # inputs first where the task is known without the checkpoint: cheaper to report
        task = resolve_task(args.task, None, args.task_file)
    except UserError:
        task = None
    paths = sample = None
    if args.edf is not None:
        paths = find_recordings(args.edf)
        if args.labels is not None and len(paths) > 1:
            raise UserError(f"--labels names the labels of one recording; --edf gives "
                            f"{len(paths)} (companion hypnograms are found without it)")
        if len(paths) == 1 and task is not None:
            try:
                check_window(args, open_recording(paths[0], task, args.channels))
            except RecordingError as err:
                raise UserError(f"{display_name(paths[0])}: {err}") from None
    else:
        sample, sample_path = read_sample(args.data_path, args.sample_idx)
    loaded = load_model(args.model_path, args.tokenizer_path, args.device, args.dtype,
                        args.base_folder)
    if loaded.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(loaded.device)
    task = resolve_task(args.task, loaded, args.task_file)
    if sample is not None:
        answer_sample(args, loaded, task, sample, sample_path)
        return 0
    return answer_recordings(args, loaded, task, paths)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT


if __name__ == "__main__":
    sys.exit(main())
