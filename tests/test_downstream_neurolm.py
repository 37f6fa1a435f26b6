"""Instruction sequences, option scoring and generation with a tiny real NeuroLM."""
import pytest
import torch
from test_downstream_support import write_samples
from torch.utils.data import DataLoader

import downstream_dataset as dd
import evaluation as ev
from answering import answer_batch
from model.model import GPTConfig, build_attention_mask, text_positions_after_eeg
from model.model_neural_transformer import NTConfig
from model.model_neurolm import NeuroLM

EEG_TOKENS = 12          # 3 channels x up to 4 s: short sequences keep the tiny model fast


@pytest.fixture(scope="module")
def tiny_neurolm():
    torch.manual_seed(0)
    model = NeuroLM(GPTConfig(block_size=128, n_layer=1, n_head=2, n_embd=16),
                    NTConfig(n_layer=1, n_head=2, n_embd=16, out_chans=4), n_eeg_codes=8)
    return model.eval()


def _dataset(folder, task, labels, seconds=2):
    write_samples(folder, labels, seconds=seconds)
    return dd.InstructionDataset(task, folder, eeg_max_tokens=EEG_TOKENS)


def test_instruction_item_yields_the_spec_mask(tmp_path):
    item = _dataset(tmp_path, "TUAB", [1])[0]        # 3 channels x 2 s = 6 real EEG tokens
    time, real = item["input_time"][None], item["input_mask"][None]
    text_pos = text_positions_after_eeg(time, real, item["x_text"].numel())
    assert text_pos[0, :3].tolist() == [2, 3, 4]     # continues after the last EEG second (1)
    positions = torch.cat((time, text_pos), dim=1)
    valid = torch.cat((real, torch.ones_like(text_pos, dtype=torch.bool)), dim=1)
    mask = build_attention_mask(positions, valid)[0, 0]
    n_real, n_eeg = 6, EEG_TOKENS
    seconds = item["input_time"].tolist()
    for i in range(n_real):                           # EEG: same or earlier seconds, real only
        for j in range(n_eeg):
            assert bool(mask[i, j]) == (j < n_real and seconds[j] <= seconds[i])
        assert not mask[i, n_eeg:].any()
    for k in range(item["x_text"].numel()):           # text: all real EEG, text up to itself
        row = mask[n_eeg + k]
        assert row[:n_real].all() and not row[n_real:n_eeg].any()
        assert row[n_eeg:n_eeg + k + 1].all() and not row[n_eeg + k + 1:].any()


def test_dataset_targets_are_what_the_model_scores(tmp_path, tiny_neurolm):
    """y_text marks exactly the answer and end tokens in the model's convention (logits at text
    position k predict token k + 1), and option scoring reads the same positions."""
    dataset = _dataset(tmp_path, "TUSL", [0, 2, 1])
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    with torch.no_grad():
        loss, log, logits = tiny_neurolm(
            x_eeg=batch["x_eeg"], x_text=batch["x_text"], y_text=batch["y_text"],
            input_chans=batch["input_chans"], input_time=batch["input_time"],
            input_mask=batch["input_mask"])
        scores = answer_batch(tiny_neurolm, batch, "TUSL").log_likelihoods
    text_logits = logits[:, EEG_TOKENS:].float()          # (B, 80, V)
    answer = dd.task_tokens("TUSL").answers
    nll_full, loglik_text = 0.0, []
    for b in range(3):
        start = int(batch["prompt_len"][b]) - 1            # position that predicts the answer
        label = int(batch["label"][b])
        ll = 0.0
        for j, tok in enumerate(answer[label]):
            assert int(batch["y_text"][b, start + j]) == tok
            nll_full -= float(torch.log_softmax(text_logits[b, start + j], -1)[tok])
            ll += float(torch.log_softmax(text_logits[b, start + j, :50257], -1)[tok])
        loglik_text.append(ll)
    # the model normalises over its whole head, option scoring over the 50257 text ids
    assert float(loss) == pytest.approx(nll_full / (3 * len(answer[0])), rel=1e-5)
    assert log["text_loss"] == pytest.approx(float(loss), rel=1e-5)
    true_option = scores.gather(1, batch["label"][:, None]).squeeze(1)
    assert true_option.tolist() == pytest.approx(loglik_text, rel=1e-5)


def test_option_scores_do_not_depend_on_batch_neighbours(tmp_path, tiny_neurolm):
    write_samples(tmp_path / "short", [0], seconds=1)
    write_samples(tmp_path / "long", [1], seconds=4)
    files = [tmp_path / "short" / "s000.pkl", tmp_path / "long" / "s000.pkl"]
    dataset = dd.InstructionDataset("Workload", files, eeg_max_tokens=EEG_TOKENS)
    together = next(iter(DataLoader(dataset, batch_size=2)))
    with torch.no_grad():
        both = answer_batch(tiny_neurolm, together, "Workload").log_likelihoods
        for row in range(2):
            alone = {k: v[row:row + 1] for k, v in together.items() if torch.is_tensor(v)}
            single = answer_batch(tiny_neurolm, alone, "Workload").log_likelihoods
            torch.testing.assert_close(both[row:row + 1], single, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["TUSL", "SEED"])
def test_evaluate_task_with_a_real_model(tmp_path, tiny_neurolm, name):
    n_classes = dd.TASKS[name].n_classes
    dataset = _dataset(tmp_path, name, [i % n_classes for i in range(5)])
    out = ev.evaluate_task(tiny_neurolm, dataset, name, batch_size=3, device="cpu",
                           progress=False)
    gen, texts = out["predictions"]["generation"], out["predictions"]["generated_text"]
    assert len(gen) == len(texts) == 5
    for label, text in zip(gen, texts):               # parseable or None, never a made-up class
        assert label is None or 0 <= label < n_classes
        assert label == dd.parse_answer(name, text)
    assert out["generation"]["invalid_rate"] == pytest.approx(gen.count(None) / 5)
    probs = torch.tensor(out["predictions"]["probs"])
    assert probs.shape == (5, n_classes)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(5))
    assert out["predictions"]["scoring"] == probs.argmax(dim=1).tolist()
    for metric in dd.TASKS[name].metrics:
        assert metric in out["scoring"] and metric in out["generation"]
