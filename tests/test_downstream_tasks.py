"""The built-in tasks (tasks/): completeness, the exact public strings, tokenisation, their
preprocessing, the answer parser, and a task's definition as a run stores it."""
import pytest

import tasks as tk
from model.gpt2_bpe import EOT_TOKEN_ID, SEP_TOKEN_ID, encode

# The full training texts of label 0 as the public code builds them (spec section 5).
PUBLIC_TEXT_OF_LABEL_0 = {
    "TUAB": "Question: Is this EEG segment abnormal? Answer: No <|endoftext|>",
    "Workload": "Question: Is this EEG segment of high workload? Answer: No <|endoftext|>",
    "SEED": "Question: Which emotion type does this EEG segment belong to? Answer: Positive "
            "<|endoftext|>",
    "TUEV": "Question: Which event type does this EEG segment belong to? Options: (A) spike and "
            "slow wave. (B) generalized periodic epileptiform discharge. (C) periodic lateralized "
            "epileptiform discharge. (D) eye movement. (E) artifact. (F) background. Answer: (A) "
            "<|endoftext|>",
    "TUSL": "Question: Which type does this EEG segment belong to? Options: (A) background. "
            "(B) seizure. (C) slowing. Answer: (A) <|endoftext|>",
    "HMC": "Question: Which sleep type does this EEG segment belong to? Options: (A) Wake. "
           "(B) NREM-1. (C) NREM-2. (D) NREM-3. (E) REM. Answer: (A) <|endoftext|>",
}
N_CLASSES = {"TUAB": 2, "Workload": 2, "SEED": 3, "TUEV": 6, "TUSL": 3, "HMC": 5}
ALL_TASKS = sorted(tk.BUILTIN_TASKS)


def test_table_holds_the_six_tasks():
    assert set(tk.BUILTIN_TASKS) == set(PUBLIC_TEXT_OF_LABEL_0)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_every_row_has_what_the_pipeline_needs(name):
    task = tk.BUILTIN_TASKS[name]
    assert task.name == name and tk.get_task(name.lower()) is task
    assert task.n_classes == N_CLASSES[name] >= 2
    assert len(task.label_names) == task.n_classes == len(set(task.label_names))
    assert task.prompt.startswith("Question: ")
    if task.is_option_task:
        assert task.prompt.endswith("Answer: (")
        assert task.answers == tuple(f"{chr(65 + i)}) " for i in range(task.n_classes))
        assert len(task.option_texts) == task.n_classes
        for i, option in enumerate(task.option_texts):
            assert f"({chr(65 + i)}) {option}." in task.prompt
    else:
        assert task.prompt.endswith("Answer:") and not task.option_texts
        assert all(a.startswith(" ") and a.strip() for a in task.answers)
    assert task.processed_dir and task.splits == ("train", "val", "test")
    assert task.is_binary == (task.n_classes == 2)
    assert task.metrics == (tk.BINARY_METRICS if task.n_classes == 2 else tk.MULTICLASS_METRICS)
    assert "balanced_accuracy" in task.metrics     # what picks best.pt (evaluation.SELECTION)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_texts_are_exactly_the_public_training_texts(name):
    task = tk.BUILTIN_TASKS[name]
    assert task.full_text(0) == PUBLIC_TEXT_OF_LABEL_0[name]
    for label in range(task.n_classes):
        head, _ = PUBLIC_TEXT_OF_LABEL_0[name].rsplit(task.answers[0].strip(), 1)
        expected = head + task.answers[label].strip() + " <|endoftext|>"
        assert task.full_text(label) == expected
        tokens = tk.task_tokens(task)
        assert [SEP_TOKEN_ID, *tokens.prompt[1:], *tokens.answers[label]] == \
            [SEP_TOKEN_ID] + encode(expected)


@pytest.mark.parametrize("name", ALL_TASKS)
def test_answers_tokenise_distinctly_and_fit(name):
    tokens = tk.task_tokens(name)
    assert len(set(tokens.answers)) == len(tokens.answers)
    assert all(a[-1] == EOT_TOKEN_ID and EOT_TOKEN_ID not in a[:-1] for a in tokens.answers)
    assert len(tokens.prompt) + tokens.max_answer_len <= tk.TEXT_MAX_TOKENS


# ----------------------------------------------------------------------------- parser

WELL_FORMED = {   # task -> [(generated text, label)]
    "TUAB": [(" No ", 0), (" Yes ", 1), ("Yes", 1), ("yes.", 1), ("NO", 0), (" abnormal", 1),
             ("Normal", 0)],
    "Workload": [(" No ", 0), (" Yes ", 1), ("  yes  ", 1), ("rest", 0), ("Arithmetic.", 1)],
    "SEED": [(" Positive ", 0), (" Neutral ", 1), (" Negative ", 2), ("negative.", 2),
             ("NEUTRAL", 1)],
    "TUEV": [("A) ", 0), ("B) ", 1), ("F) ", 5), ("(C)", 2), ("d", 3), ("E)", 4),
             ("(B) generalized periodic epileptiform discharge.", 1), ("eye movement", 3),
             ("spsw", 0), ("Background.", 5), ("A) <|endoftext|>junk", 0)],
    "TUSL": [("A) ", 0), ("B) ", 1), ("C) ", 2), ("(b)", 1), ("seizure", 1), ("Slowing.", 2),
             ("b) seizure", 1), ("bckg", 0)],
    "HMC": [("A) ", 0), ("E) ", 4), ("(c)", 2), ("NREM-3", 3), ("wake", 0), ("rem.", 4),
            ("N2", 2), ("(D) NREM-3", 3)],
}
NEAR_MISS = {   # plausible-looking but not an answer of this task: must be None
    "TUAB": ["Yess", "Maybe", "Yes No", "Yes, abnormal", "(A)", "positive"],
    "Workload": ["Yes please", "high", "(B)", "abnormal"],
    "SEED": ["Posit", "Happy", "Positive Negative", "A) ", "yes"],
    "TUEV": ["G) ", "(A) seizure", "A B", "AB)", "spike", "(Z)", "seizure"],
    "TUSL": ["D) ", "(A) seizure", "seizures", "spike and slow wave", "Yes"],
    "HMC": ["F) ", "NREM", "(A) REM", "N4", "sleep"],
}
GARBAGE = ["", "   ", "<|endoftext|>", "!!!", "the the the", "\n\n", "12345", "(((", "))"]


@pytest.mark.parametrize("name", ALL_TASKS)
def test_parser_reads_well_formed_answers(name):
    task = tk.BUILTIN_TASKS[name]
    for label in range(task.n_classes):
        assert tk.parse_answer(task, task.answers[label]) == label
        assert tk.parse_answer(task, task.target_text(label)) == label
    for text, label in WELL_FORMED[name]:
        assert tk.parse_answer(name, text) == label, text


@pytest.mark.parametrize("name", ALL_TASKS)
def test_parser_refuses_near_misses_and_garbage(name):
    for text in NEAR_MISS[name] + GARBAGE:
        assert tk.parse_answer(name, text) is None, text


def test_unknown_task_names_the_known_ones():
    with pytest.raises(KeyError, match="TUAB"):
        tk.get_task("TUXX")
    with pytest.raises(tk.UnknownTaskError) as err:
        tk.get_task("TUXX", {"Mine": tk.BUILTIN_TASKS["TUAB"]})
    assert str(err.value) == "unknown task 'TUXX'; known tasks: Mine"     # not KeyError's quotes


@pytest.mark.parametrize("name", ALL_TASKS)
def test_a_task_is_stored_whole_and_read_back_equal(name):
    import json
    task = tk.BUILTIN_TASKS[name]
    stored = json.loads(json.dumps(tk.task_records([task])))     # as results.json holds it
    assert tk.tasks_from_record(stored, "results.json") == {name: task}
    assert {"window_seconds", "stride_seconds", "channels", "mains_hz", "band_hz"} <= set(
        stored[0])
    # the preprocessing fits one sequence: no built-in window is cut by the token budget
    assert len(task.channels) * task.window_seconds <= tk.EEG_MAX_TOKENS
    assert tk.fit_window(task.window_seconds, task.stride_seconds, len(task.channels)) == (
        task.window_seconds, task.stride_seconds)
