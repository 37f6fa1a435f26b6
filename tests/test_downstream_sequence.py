"""What a task sample becomes: EEG then [SEP] prompt answer <|endoftext|>, padding, targets."""
import pytest
import torch
from test_downstream_support import write_samples
from torch.utils.data import ConcatDataset, DataLoader

import downstream_dataset as dd
from model.gpt2_bpe import EOT_TOKEN_ID, SEP_TOKEN_ID, decode, encode


@pytest.mark.parametrize("name", sorted(dd.TASKS))
def test_sample_becomes_eeg_then_sep_prompt_answer_end(tmp_path, name):
    task = dd.TASKS[name]
    label = task.n_classes - 1
    write_samples(tmp_path, [label], seconds=4)          # 3 channels x 4 s = 12 EEG tokens
    item = dd.InstructionDataset(name, tmp_path)[0]

    # EEG: 12 real tokens, time-major, padded to 276
    assert item["x_eeg"].shape == (276, 200)
    assert item["input_mask"].tolist() == [True] * 12 + [False] * 264
    assert item["input_time"][:12].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert int(item["input_time"][item["input_mask"]].max()) == 3   # text starts at second 4
    assert torch.all(item["x_eeg"][12:] == 0)

    # text: [SEP] prompt answer end, then end-token padding to 80
    prompt = encode(task.prompt)
    answer = encode(task.target_text(label))               # answer tokens + end token
    n_text = 1 + len(prompt) + len(answer)
    x_text = item["x_text"]
    assert x_text.shape == (80,) and x_text.dtype == torch.long
    assert x_text[0] == SEP_TOKEN_ID
    assert x_text[1:1 + len(prompt)].tolist() == prompt
    assert x_text[1 + len(prompt):n_text].tolist() == answer and answer[-1] == EOT_TOKEN_ID
    assert torch.all(x_text[n_text:] == EOT_TOKEN_ID)
    assert decode(x_text[:n_text]) == task.full_text(label)

    # targets: exactly the answer tokens and the end token, shifted by one (logits at text
    # position k predict token k + 1)
    y_text = item["y_text"]
    scored = (y_text != -1).nonzero().flatten().tolist()
    assert scored == list(range(len(prompt), n_text - 1))
    assert y_text[scored].tolist() == answer
    assert all(y_text[k] == x_text[k + 1] for k in scored)

    # the prompt alone, for generation and option scoring
    assert int(item["prompt_len"]) == 1 + len(prompt)
    assert item["prompt_ids"][:1 + len(prompt)].tolist() == x_text[:1 + len(prompt)].tolist()
    assert torch.all(item["prompt_ids"][1 + len(prompt):] == EOT_TOKEN_ID)
    assert int(item["label"]) == label and item["task"] == name


def test_eeg_longer_than_276_tokens_drops_whole_seconds(tmp_path):
    write_samples(tmp_path, [0], seconds=100)   # 300 tokens of 3 channels
    item = dd.InstructionDataset("TUAB", tmp_path)[0]
    assert int(item["input_mask"].sum()) == 276 // 3 * 3
    assert int(item["input_time"][item["input_mask"]].max()) == 276 // 3 - 1


def test_tasks_mix_in_one_batch(tmp_path):
    write_samples(tmp_path / "a", [0, 1])
    write_samples(tmp_path / "b", [2, 5])
    mixed = ConcatDataset([dd.InstructionDataset("TUAB", tmp_path / "a"),
                           dd.InstructionDataset("TUEV", tmp_path / "b")])
    batch = next(iter(DataLoader(mixed, batch_size=4)))
    assert batch["x_text"].shape == (4, 80) and batch["x_eeg"].shape == (4, 276, 200)
    assert batch["task"] == ["TUAB", "TUAB", "TUEV", "TUEV"]
    assert batch["label"].tolist() == [0, 1, 2, 5]
    # each row's targets sit right after its own prompt
    for row in range(4):
        first = int((batch["y_text"][row] != -1).nonzero()[0])
        assert first == int(batch["prompt_len"][row]) - 1


def test_prepare_returns_train_val_test(tmp_path):
    for split, labels in {"train": [0, 1, 1], "val": [0], "test": [1, 0]}.items():
        write_samples(tmp_path / split, labels)
    train, val, test = dd.prepare_task_datasets("Workload", tmp_path)
    assert (len(train), len(val), len(test)) == (3, 1, 2)
    assert isinstance(train, dd.InstructionDataset) and train.task is dd.TASKS["Workload"]


def test_clear_errors_for_missing_folder_and_bad_label(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        dd.InstructionDataset("TUAB", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no sample files"):
        dd.InstructionDataset("TUAB", tmp_path / "empty")
    write_samples(tmp_path / "bad", [2])
    with pytest.raises(ValueError, match=r"s000\.pkl.*not a TUAB label"):
        dd.InstructionDataset("TUAB", tmp_path / "bad")[0]


def test_text_too_long_for_the_budget_is_refused(tmp_path):
    write_samples(tmp_path, [0])
    with pytest.raises(ValueError, match="text_max_tokens=20"):
        dd.InstructionDataset("TUEV", tmp_path, text_max_tokens=20)
