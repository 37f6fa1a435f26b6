"""`python -m evaluation compare RUN ...` (test metrics across runs) and `python -m evaluation
export CKPT OUT` (weights + config + model card)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import report
from evaluation import agreement
from evaluation.record import ResultsError, finite, read_run
from evaluation.run import EVAL_MODES, SPLITS_EVALUATED
from evaluation.selection import RESULTS_NAME
from report.tables import OTHER_METRICS
from tasks import TASKS_KEY, TaskError, tasks_from_record
from utils import USER_ERROR_EXIT, UserError


def compare_runs(runs: list, split: str = "test") -> str:
    """One table of every task's `split` metrics (window level, both modes) across runs (e.g.
    seeds): mean ± sample std, and the number of runs that have it."""
    evaluations = [read_run(run)[1]["results"] for run in runs]
    names = list(dict.fromkeys(n for e in evaluations for n in e))
    lines = [f"{len(runs)} runs, {split} split, best.pt of each (else its last evaluation); "
             "mean ± std over runs",
             f"{'task':<9} {'mode':<10} {'runs':>4}  metrics"]
    for name in names:
        for mode in EVAL_MODES:
            found = [e[name][split][mode] for e in evaluations
                     if mode in e.get(name, {}).get(split, {})]
            if not found:
                continue
            metrics = ("balanced_accuracy",
                       *[k for k in OTHER_METRICS if any(k in m for m in found)])
            cells = []
            for metric in (*metrics, "invalid_rate") if mode == "generation" else metrics:
                values = np.array(finite(m.get(metric) for m in found), dtype=np.float64)
                if values.size:
                    std = values.std(ddof=1) if values.size > 1 else 0.0
                    cells.append(f"{metric} {values.mean():.3f} ± {std:.3f}")
            lines.append(f"{name:<9} {mode:<10} {len(found):>4}  " + "  ".join(cells))
    return "\n".join(lines)


def card_metrics(run_dir: Path) -> list[str]:
    """The model card's lines from the run's results.json: tasks, data, test metrics."""
    _, chosen = read_run(run_dir)
    header, rows = report.metrics_rows(chosen["results"], splits=("test",))
    rows = [r for r in rows if r[3] == "window"]
    data = [f"{t} {s}: {e.get('data', {}).get('samples')} samples, "
            f"{e.get('data', {}).get('subjects') or '?'} subjects"
            for t, splits in chosen["results"].items() for s, e in splits.items()]
    return [f"Tasks: {', '.join(chosen['results'])}.", "",
            "Data evaluated: " + "; ".join(data) + ".", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), "",
            f"From `{run_dir / report.REPORT_NAME}` (full report: confusion matrices, "
            "recording and subject levels, calibration, training curves)."]


def model_card(config: dict, run_dir: Path) -> tuple[str, str | None]:
    """(README.md of an exported model: what it is, and the test metrics of its run's report;
    why the metrics are left out, or None)."""
    from model.checkpoints import ITER_NUM_KEY
    step = (config.get("checkpoint") or {}).get(ITER_NUM_KEY)
    lines = [f"# NeuroLM {config.get('kind', '')} weights", "",
             f"Exported from `{config.get('source')}` (step {step})."
             " Load with `model.load_neurolm(FOLDER)` / `model.load_vq(FOLDER)` or "
             "`simple_inference.py --model_path FOLDER`.", ""]
    problem = None
    lines += card_backbone(config.get("backbone"))
    if (run_dir / RESULTS_NAME).is_file():
        try:
            lines += card_metrics(run_dir)
        except ResultsError as err:
            problem = f"no metrics in the model card: {err}"
            lines.append(f"No test metrics: {err}.")
    try:
        lines += card_tasks((config.get("checkpoint") or {}).get(TASKS_KEY), config.get("source"))
    except TaskError as err:
        problem = f"no tasks in the model card: {err}"
    return "\n".join(lines) + "\n", problem


def card_backbone(summary) -> list[str]:
    """The model card's lines on a Hugging Face backbone (model.export.backbone_summary): its
    architecture, base folder and identity, LoRA settings, and how to load what was written
    ([] for the native GPT)."""
    if not isinstance(summary, dict):
        return []
    from model.hf_backbone import SUPPORTED_ARCHITECTURES

    arch = summary.get("architecture")
    lines = ["## Language model", "",
             f"Backbone: {arch} ({SUPPORTED_ARCHITECTURES.get(arch, 'unknown architecture')}), "
             f"through `transformers`."]
    identity = summary.get("base_identity")
    lines.append(f"Base model folder: `{summary.get('base_folder')}`"
                 + (f" (identity `{identity}`: a hash of its config and weights)." if identity
                    else " (its starting weights; a full fine-tune holds all of its own)."))
    lora = summary.get("lora")
    if isinstance(lora, dict):
        targets = ", ".join(lora.get("target_modules") or [])
        lines.append(f"LoRA: rank {lora.get('rank')}, alpha {lora.get('alpha')}, dropout "
                     f"{lora.get('dropout')}, on {targets}.")
    if summary.get("export") == "adapter":
        lines += ["", "`adapter/` is a peft adapter folder (with [SEP]'s trained rows and "
                  "the tokenizer): `AutoPeftModelForCausalLM.from_pretrained(FOLDER/"
                  "adapter)`, or grow the base first: `base = AutoModelForCausalLM."
                  "from_pretrained(BASE); base.resize_token_embeddings(len(AutoTokenizer."
                  "from_pretrained(FOLDER/adapter))); PeftModel.from_pretrained(base, FOLDER/"
                  "adapter)`. NeuroLM rebuilds on the base folder named above "
                  "(`model.load_neurolm(FOLDER, base_folder=...)` when it moved; another base "
                  "is refused)."]
    else:
        lines += ["", "`lm/` is the language model as transformers saves it"
                  + (", LoRA merged in" if isinstance(lora, dict) else "")
                  + ", with its tokenizer ([SEP] added): `AutoModelForCausalLM."
                  "from_pretrained(FOLDER/lm)`."]
    return [*lines, ""]


def card_tasks(stored, source) -> list[str]:
    """The model card's table of the tasks the checkpoint carries: what the model is asked, what
    it answers, and how a recording is cut for it ([] when it carries none)."""
    if not stored:
        return []
    lines = ["", "## Tasks", "", "| task | prompt | answers (label) | window / stride (s) | "
             "channels | band, mains (Hz) |", "|---|---|---|---|---|---|"]
    for t in tasks_from_record(stored, str(source)).values():
        answers = ", ".join(f"`{a.strip()}` ({n})" for a, n in zip(t.answers, t.label_names))
        channels = "every one it has" if t.channels is None else " ".join(t.channels)
        prompt = t.prompt.replace("|", "\\|")
        lines.append(f"| {t.name} | `{prompt}` | {answers} | {t.window_seconds:g} / "
                     f"{t.stride_seconds:g} | {channels} | {t.band_hz[0]:g}-{t.band_hz[1]:g}, "
                     f"{t.mains_hz:g} |")
    return lines


def export(checkpoint, out_dir, tokenizer_path=None, adapter: bool = False,
           base_folder=None) -> Path:
    """model.safetensors + config.json + README.md (a model card, with the test metrics of
    the checkpoint's run folder when it has a readable results.json) in out_dir: the weights
    alone, which load_neurolm / load_vq read directly; a Hugging Face backbone's LM in lm/
    (LoRA merged), or with adapter a LoRA run's peft adapter folder in adapter/."""
    from model.export import export as export_weights
    problems = []

    def card(config: dict) -> str:
        text, problem = model_card(config, Path(checkpoint).parent)
        problems.append(problem)
        return text
    out = export_weights(checkpoint, out_dir, tokenizer_path, card=card, adapter=adapter,
                         base_folder=base_folder)
    # export is for the weights: a broken results.json beside them only says so
    for problem in filter(None, problems):
        print(f"warning: {problem}", file=sys.stderr)
    return out


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m evaluation", description=(
        "compare: one table of test metrics across runs (mean ± std, e.g. over seeds); "
        "export: a checkpoint's weights as model.safetensors + config.json + a model card "
        "(a Hugging Face backbone's LM as its own folder, or a LoRA run's peft adapter); "
        "agree: a checkpoint's answers in bf16 against fp32"))
    sub = parser.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="python -m evaluation compare RUN_A RUN_B ...")
    cmp.add_argument("runs", nargs="+", help="train_instruction.py --out_dir folders "
                                             "(or their results.json)")
    cmp.add_argument("--split", default="test", choices=SPLITS_EVALUATED)
    exp = sub.add_parser("export", help="python -m evaluation export CKPT OUT_DIR")
    exp.add_argument("checkpoint", help="a NeuroLM (best.pt, last.pt) or VQ checkpoint")
    exp.add_argument("out_dir", help="folder for model.safetensors, config.json, README.md")
    exp.add_argument("--tokenizer_path", default=None,
                     help="the VQ checkpoint, when the LM checkpoint lacks the encoder")
    exp.add_argument("--adapter", action="store_true", help=(
        "for a LoRA run: write the adapters as a peft adapter folder (OUT_DIR/adapter, with "
        "[SEP]'s trained rows and the tokenizer: peft's AutoPeftModelForCausalLM loads it, or "
        "PeftModel.from_pretrained on the base model grown to the tokenizer's length) instead "
        "of merging them into the language model's weights (OUT_DIR/lm, the default)"))
    exp.add_argument("--base_folder", default=None, help=(
        "where a LoRA run's base model folder is now, when it moved since training (it must "
        "still be the same model: its identity is checked)"))
    agreement.add_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "agree":
            return agreement.run(args)
        if args.command == "compare":
            print(compare_runs(args.runs, args.split))
        else:
            out = export(args.checkpoint, args.out_dir, args.tokenizer_path, args.adapter,
                         args.base_folder)
            size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
            print(f"exported {args.checkpoint} -> {out} ({size:.1f} MB)")
    except (OSError, ValueError, UserError) as err:   # ResultsError, CheckpointError: ValueError
        print(f"error: {err}", file=sys.stderr)
        return USER_ERROR_EXIT
    return 0

