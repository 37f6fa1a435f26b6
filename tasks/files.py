"""Where tasks come from besides the built-in table: the one task-file reader, the tasks a run
carries (results.json and checkpoints, key "tasks"), and the tasks of a command line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from tasks import task as checks
from tasks.builtin import BUILTIN_TASKS, get_task
from tasks.task import Task, TaskError, TaskFileError, UnknownTaskError
from tasks.text import check_answers

try:  # Python 3.11+; the same parser as the tomli package on 3.10
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib

TASK_FILE_FIELDS = {"name", "question", "label_names", "answers", "options", "data_dir",
                    "preprocessing"}
PREPROCESSING_FIELDS = {"window_seconds", "stride_seconds", "channels", "mains_hz", "band_hz"}
DEFAULT_TASK_MAINS_HZ = 50.0
TASKS_KEY = "tasks"       # results.json and checkpoints: [Task.to_dict(), ...]


def read_task_file(path) -> Task:
    """A Task from a TOML or JSON task file (README "Your own data and tasks"):

        name = "Eyes"
        question = "Are the eyes closed in this EEG segment?"
        label_names = ["open", "closed"]      # class 0, 1, ... as the labels give them
        answers = ["No", "Yes"]               # or options = [...]: lettered options, as TUEV
        data_dir = "processed/eyes"           # relative to this file
        [preprocessing]
        window_seconds = 4                    # stride_seconds (= window), mains_hz (50),
        channels = "all"                      # band_hz ([0.1, 75]), or a list of channels

    Every problem (a field, a number out of range, a duplicate channel, a window the EEG tokens
    cannot hold, answers that do not tokenise) is one TaskFileError naming the file."""
    path = Path(path)

    def fail(problem: str):
        raise TaskFileError(f"task file {path}: {problem}")

    if not path.is_file():
        fail("no such file")
    kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
    try:
        text = path.read_text(encoding="utf-8-sig")     # a BOM is read as CSVs read it
        raw = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        fail(f"not valid {kind}: {err}")
    if not isinstance(raw, dict):
        fail("expected a table of fields at the top level")

    def known_fields(table: dict, known: set, prefix: str = "") -> None:
        unknown = sorted(set(table) - known)
        if unknown:
            fail(f"unknown {prefix}field(s) {', '.join(unknown)}; known: "
                 f"{', '.join(sorted(known))}")

    known_fields(raw, TASK_FILE_FIELDS)
    for field in ("name", "question", "label_names"):
        if field not in raw:
            fail(f"missing field {field!r}")
    name, question = raw["name"], raw["question"]
    if not isinstance(question, str) or not question.strip():
        fail("question must be a non-empty string")

    def strings(field: str) -> tuple[str, ...]:
        values = raw[field]
        if (not isinstance(values, list) or not values
                or not all(isinstance(v, str) and v.strip() for v in values)):
            fail(f"{field} must be a list of non-empty strings")
        values = tuple(v.strip() for v in values)
        repeated = sorted({v for v in values if [w.lower() for w in values].count(v.lower()) > 1})
        if repeated:
            fail(f"{field} lists {', '.join(map(repr, repeated))} more than once")
        return values

    label_names = strings("label_names")
    if len(label_names) < 2:
        fail("label_names needs at least two classes")
    if "answers" in raw and "options" in raw:
        fail("give either answers (free answers) or options (lettered options), not both")
    kind = "options" if "options" in raw else "answers"
    texts = strings(kind) if kind in raw else label_names
    if len(texts) != len(label_names):
        fail(f"{len(label_names)} label_names but {len(texts)} {kind}: every label needs "
             "exactly one answer")
    pre = raw.get("preprocessing", {})
    if not isinstance(pre, dict):
        fail("preprocessing must be a table")
    known_fields(pre, PREPROCESSING_FIELDS, "preprocessing ")
    if "window_seconds" not in pre:
        fail("missing field 'preprocessing.window_seconds'")
    numbers = {}
    for field, default in (("window_seconds", None), ("stride_seconds", pre["window_seconds"]),
                           ("mains_hz", DEFAULT_TASK_MAINS_HZ)):
        try:
            numbers[field] = checks.check_number(pre.get(field, default), field)
        except ValueError as err:
            fail(f"preprocessing.{field} {err}")
    try:
        band = checks.check_band(pre["band_hz"]) if "band_hz" in pre else None
    except ValueError as err:
        fail(f"preprocessing.band_hz {err}")
    channels = pre.get("channels", "all")
    try:
        channels = None if channels == "all" else checks.check_channels(channels)
    except ValueError as err:
        fail(f"preprocessing.{err}")
    data_dir = raw.get("data_dir", "")
    if not isinstance(data_dir, str):
        fail("data_dir must be a string (a folder, relative to the task file)")
    if isinstance(name, str) and name.lower() in (t.lower() for t in BUILTIN_TASKS):
        fail(f"name {name!r} is a built-in task's; choose another")
    question = question.strip()
    if kind == "options":
        prompt, options = checks.option_prompt(question, texts), texts
        answers = checks.letters(len(texts))
    else:
        prompt = f"Question: {question} Answer:"
        answers, options = tuple(" " + t for t in texts), ()
    task = Task(name=name, prompt=prompt, answers=answers, label_names=label_names,
                option_texts=options, channels=channels, mains_hz=numbers["mains_hz"],
                window_seconds=numbers["window_seconds"],
                stride_seconds=numbers["stride_seconds"],
                processed_dir=str((path.parent / data_dir).resolve()) if data_dir else "",
                source=str(path), **({"band_hz": band} if band else {}))
    try:
        checks.check_task(task)
        check_answers(task)
    except ValueError as err:
        fail(str(err).replace("window_seconds:", "preprocessing.window_seconds:"))
    return task


def tasks_from_record(entries, where: str) -> dict[str, Task]:
    """The tasks a results.json or checkpoint carries under "tasks" (Task.to_dict() each), by
    name. Older records hold names (results.json) or nothing (checkpoints): names are looked up
    among the built-in tasks, nothing means the built-in tasks. A name the record does not
    define, or a malformed definition, is one TaskError naming `where`."""
    if entries is None:
        return dict(BUILTIN_TASKS)
    if not isinstance(entries, (list, tuple)):
        raise TaskError(f"{where}: \"tasks\" must be a list of task definitions")
    tasks = {}
    for entry in entries:
        if isinstance(entry, str):
            try:
                task = get_task(entry)
            except UnknownTaskError:
                raise UnknownTaskError(
                    f"{where}: task {entry!r} is named but not defined (written before runs "
                    "carried their task definitions); give its task file (--task_file) or "
                    "evaluate the checkpoint again with train_instruction.py --eval_only "
                    "--task_file") from None
        else:
            task = Task.from_dict(entry, where)
            try:
                check_answers(task)
            except ValueError as err:
                raise TaskError(f"{where}: task {task.name!r}: {err}") from None
        tasks[task.name] = task
    return tasks


def task_records(tasks) -> list[dict]:
    """What a run writes under "tasks": every task's full definition."""
    return [t.to_dict() for t in (tasks.values() if isinstance(tasks, Mapping) else tasks)]


def run_tasks(names, task_files=(), stored: Mapping[str, Task] | None = None) -> dict[str, Task]:
    """The tasks of one command, by name and in order: `names` looked up among the built-in
    tasks, `stored` (a checkpoint's or results.json's) and the task files, which are all
    included. names None: the task files' tasks, else `stored`, else the six built-in ones. Two
    different definitions under one name, or an unknown name, is one TaskError."""
    known = dict(BUILTIN_TASKS)
    for task in (stored or {}).values():
        known[task.name] = task
    from_files = []
    for path in task_files or ():
        task = read_task_file(path)
        earlier = known.get(task.name)
        if earlier is not None and earlier.source != "built-in" and not same_task(earlier, task):
            raise TaskFileError(f"task file {path}: task {task.name!r} is already defined "
                                f"differently by {earlier.source}")
        known[task.name] = task
        from_files.append(task.name)
    if names is None:
        names = from_files or list(stored or BUILTIN_TASKS)
    chosen = [get_task(n, known).name for n in names]
    chosen += [n for n in from_files if n not in chosen]
    if len(set(chosen)) != len(chosen):
        raise TaskError(f"a task is named twice: {', '.join(chosen)}")
    return {n: known[n] for n in chosen}


def same_task(a: Task, b: Task) -> bool:
    """Two definitions of one task, wherever each was read from (its source aside)."""
    return {**a.to_dict(), "source": ""} == {**b.to_dict(), "source": ""}
