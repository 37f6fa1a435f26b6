"""Tasks, one home: the Task kind (prompt, answers, label names and the preprocessing that cuts
raw recordings into its windows), the six built-in tasks, the one task-file reader, the tasks a
run carries in results.json and its checkpoints, the instruction text and the answer parser.

There is no registry changed at run time: a command reads its tasks (`run_tasks`, or
`tasks_from_record` of a checkpoint or results.json) and passes that set along.

task: Task, the checks of its fields and numbers, the window-fitting rule; builtin:
BUILTIN_TASKS (with their datasets' preprocessing), get_task; text: token ids, instruction text,
answer parser; files: read_task_file, tasks_from_record / task_records (the "tasks" key),
run_tasks.
"""
from tasks.builtin import BUILTIN_TASKS, get_task
from tasks.files import (
    TASKS_KEY,
    read_task_file,
    run_tasks,
    same_task,
    task_records,
    tasks_from_record,
)
from tasks.task import (
    BINARY_METRICS,
    DEFAULT_BAND_HZ,
    EEG_MAX_TOKENS,
    END_TEXT,
    MAX_OPTIONS,
    MULTICLASS_METRICS,
    SPLITS,
    TEXT_MAX_TOKENS,
    Task,
    TaskError,
    TaskFileError,
    UnknownTaskError,
    check_band,
    check_channels,
    check_number,
    fit_window,
    window_problem,
)
from tasks.text import (
    TaskTokens,
    check_answers,
    instruction_text,
    parse_answer,
    task_tokens,
    text_length,
)

__all__ = [
    "BINARY_METRICS", "BUILTIN_TASKS", "DEFAULT_BAND_HZ", "EEG_MAX_TOKENS", "END_TEXT",
    "MAX_OPTIONS", "MULTICLASS_METRICS", "SPLITS", "TASKS_KEY", "TEXT_MAX_TOKENS", "Task",
    "TaskError", "TaskFileError", "TaskTokens", "UnknownTaskError", "check_answers",
    "check_band", "check_channels", "check_number", "fit_window", "get_task",
    "instruction_text", "parse_answer", "read_task_file", "run_tasks", "same_task",
    "task_records", "task_tokens", "tasks_from_record", "text_length", "window_problem",
]
