"""What a run prints: a sample's record, a recording's header, window table, QC counts and
warnings, and progress (a tqdm bar on a terminal, plain lines when redirected)."""
from __future__ import annotations

import sys

from dataset import SAMPLING_RATE
from tasks import EEG_MAX_TOKENS

from .agreement import format_agreement
from .sleep import class_time, format_summary

MAX_TABLE_ROWS = 60   # longer recordings print their per-class time instead of every window


def label_text(task, label) -> str:
    if label is None:
        return "none (the answer matches no option)"
    if 0 <= label < task.n_classes:
        return f"{label} ({task.label_names[label]})"
    return f"{label} (not a {task.name} label)"


def print_record(record: dict, task, source_name: str, index_key: str, index: int, X,
                 full_samples: int, n_traces: int, saved: str | None) -> None:
    memory = "GPU peak" if record["device"].startswith("cuda") else "process peak RSS"
    seconds = X.shape[1] / SAMPLING_RATE
    shown = "" if X.shape[1] == full_samples else (
        f" (first {seconds:g} of {full_samples / SAMPLING_RATE:g} s: "
        f"{EEG_MAX_TOKENS} EEG tokens at most)")
    probs = " | ".join(f"{k} {v:.3f}" for k, v in record["option_probs"].items())
    truth = ("" if record.get("true_label") is None
             else f"   true label {label_text(task, record['true_label'])}")
    print(f"task     {task.name}   {index_key} {index} of {source_name}\n"
          f"EEG      {n_traces} channels x {seconds:g} s{shown}\n"
          f"prompt   {record['prompt']}\n"
          f"answer   {record['generated_text']!r}\n"
          f"label    {label_text(task, record['predicted_label'])}{truth}\n"
          f"options  {probs}\n"
          f"time     {record['inference_seconds']:.3f} s on {record['device']}   "
          f"memory {record['peak_memory_mb']:.0f} MB ({memory})"
          + ("" if saved is None else f"\nsaved    {saved}"))


def describe_channels(signal: dict) -> str:
    used = f"{len(signal['channels'])} used: {', '.join(signal['channels'])}"
    if not signal["left_out"]:
        return used
    left = "; ".join(f"{c['channel']!r} ({c['reason']})" for c in signal["left_out"])
    return f"{used}\n         left out: {left}"


def print_header(task, name: str, signal: dict, n_asked: int) -> None:
    print(f"task     {task.name}   {n_asked} of {signal['n_windows']} windows of "
          f"{signal['window_seconds']:g} s every {signal['stride_seconds']:g} s from {name}\n"
          f"channels {describe_channels(signal)}\n"
          f"signal   {signal['filters']}; montage {signal['montage']}", flush=True)


def print_warnings(warnings: list[str]) -> None:
    for line in warnings:
        print(f"warning  {line}", flush=True)


def print_window_table(result, device: str, peak_mb: float) -> None:
    table, task = result.windows, result.task
    print(f"prompt   {task.prompt}")
    if len(table) <= MAX_TABLE_ROWS:
        rows = [("window", "start_s", "answer", "label", "p(label)", "flags")]
        for r in table.itertuples(index=False):
            name = r.label_name or "none"
            p = f"{getattr(r, f'prob_{name}'):.3f}" if r.label_name else "-"
            flags = ";".join(filter(None, [r.qc_flags, "uncertain" if r.uncertain else ""]))
            rows.append((str(r.window), f"{r.start_s:g}", repr(r.generated_text), name, p,
                         flags))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    times = class_time(task, table, result.signal["stride_seconds"])
    print("classes  " + "   ".join(
        f"{name} {v['minutes']:g} min ({'n/a' if v['percent'] is None else v['percent']}"
        f"{'' if v['percent'] is None else ' %'})" for name, v in times.items()))
    s = result.summary
    qc = ", ".join(f"{k[3:]} {v}" for k, v in s.items() if k.startswith("qc_")
                   and k not in ("qc_flagged", "qc_skipped") and v)
    print(f"checked  {s['answered']} answered, {s['qc_flagged']} QC-flagged"
          f"{f' ({qc})' if qc else ''}, {s['qc_skipped']} skipped, {s['uncertain']} uncertain;"
          f" recording answer {s['answer'] or 'none'}"
          + (f" (p {s['answer_prob']:.3f})" if s["answer_prob"] != "" else ""))
    if result.sleep is not None:
        for line in format_summary(result.sleep):
            print(line)
    if result.agreement is not None:
        print(format_agreement(result.agreement))
    total = float(table["inference_seconds"].sum())
    print(f"time     {total:.3f} s in all ({s['answered'] / max(total, 1e-9):.3g} windows/s) "
          f"on {device}   memory {peak_mb:.0f} MB")


class Progress:
    """progress(done, total) for analyse_recording: a tqdm bar on a terminal, a plain line per
    tenth when redirected."""

    def __init__(self, name: str):
        self.name, self.bar, self.shown = name, None, -1

    def __call__(self, done: int, total: int) -> None:
        if sys.stderr.isatty():
            if self.bar is None:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="window", desc=self.name, mininterval=1.0)
            self.bar.update(done - self.bar.n)
        elif total >= 100 and done * 10 // total > self.shown:
            self.shown = done * 10 // total
            print(f"answering {self.name}: {done}/{total} windows", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
