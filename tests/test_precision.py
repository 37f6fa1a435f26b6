"""--dtype auto resolves to bf16 exactly where bf16 is native (the detection mocked both ways),
fp32 elsewhere; explicit choices are kept; the detection reads PyTorch's oneDNN report."""
import copy
import json

import pytest
import torch
from inference_fixtures import write_checkpoints, write_samples
from test_answering import random_lm
from torch.utils.data import DataLoader

import answering
import downstream_dataset as dd
import simple_inference
import training
import utils
from evaluation.cli import main as evaluation_main
from model import precision
from model.model import attention_bias, short_query_attention

CPU = torch.device("cpu")


@pytest.fixture(params=[True, False], ids=["native-bf16", "no-bf16"])
def native(request, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: request.param)
    return request.param


def test_auto_is_bf16_exactly_where_the_cpu_multiplies_it(native):
    expected = torch.bfloat16 if native else None
    assert training.resolve_amp_dtype("auto", CPU) == expected
    assert training.resolve_amp_dtype(None, CPU) == expected
    runtime = utils.setup_runtime(device="cpu", dtype="auto")
    assert runtime.amp_dtype == expected
    assert runtime.dtype_name == ("bfloat16" if native else "float32")
    with runtime.autocast():
        product = torch.mm(torch.ones(2, 2), torch.ones(2, 2))
    assert product.dtype == (torch.bfloat16 if native else torch.float32)
    assert not runtime.needs_grad_scaler          # bf16 and fp32 need no loss scaling
    assert precision.resolve_inference_dtype("auto", CPU) == (
        torch.bfloat16 if native else torch.float32)


def test_explicit_choices_do_not_depend_on_the_detection(native):
    assert training.resolve_amp_dtype("float32", CPU) is None
    assert training.resolve_amp_dtype("bfloat16", CPU) == torch.bfloat16
    assert precision.resolve_inference_dtype("float32", CPU) == torch.float32
    assert precision.resolve_inference_dtype("bfloat16", CPU) == torch.bfloat16
    with pytest.raises(ValueError, match="--dtype"):
        precision.resolve_inference_dtype("int4", CPU)


def test_training_keeps_fp32_master_weights_under_bf16_autocast(native):
    runtime = utils.setup_runtime(device="cpu", dtype="auto")
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with runtime.autocast():
        loss = model(torch.randn(16, 4)).float().pow(2).mean()
    loss.backward()
    optimizer.step()
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(v.dtype == torch.float32 for state in optimizer.state.values()
               for v in state.values() if torch.is_tensor(v) and v.dim() > 0)


@pytest.mark.parametrize("flags, native", [
    ({"architecture": "x86_64", "avx512_bf16": True, "amx_bf16": False}, True),
    ({"architecture": "x86_64", "avx512_bf16": False, "amx_bf16": True}, True),
    ({"architecture": "x86_64", "avx512_bf16": False, "amx_bf16": False}, False),   # emulated
    ({"architecture": "aarch64"}, True),    # oneDNN's own check is the BF16 extension there
])
def test_detection_reads_onednn_and_the_matrix_unit_flags(monkeypatch, flags, native):
    monkeypatch.delenv(precision.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags, raising=False)

    class OneDNN:
        @staticmethod
        def _is_mkldnn_bf16_supported():
            return True
    monkeypatch.setattr(torch.ops, "mkldnn", OneDNN)
    assert precision.cpu_has_native_bf16() is native
    OneDNN._is_mkldnn_bf16_supported = staticmethod(lambda: False)
    assert precision.cpu_has_native_bf16() is False
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert precision.cpu_has_native_bf16() is False


def test_environment_overrides_the_detection(monkeypatch):
    monkeypatch.setenv(precision.CPU_BF16_ENV, "1")
    assert precision.cpu_has_native_bf16()
    monkeypatch.setenv(precision.CPU_BF16_ENV, "0")
    assert not precision.cpu_has_native_bf16()


# ----------------------------------------------------------------------------- inference in bf16

def tiny_lm():
    return random_lm(n_embd=64, encoder_embd=32)


@pytest.mark.parametrize("task", ["TUAB", "HMC"])
def test_a_bf16_copy_gives_the_fp32_answers(tmp_path, task):
    fp32 = tiny_lm()
    labels = [i % dd.TASKS[task].n_classes for i in range(6)]
    write_samples(tmp_path, labels, seconds=2)
    batch = next(iter(DataLoader(dd.InstructionDataset(task, tmp_path, eeg_max_tokens=40),
                                 batch_size=len(labels))))
    want = answering.answer_batch(fp32, batch, task)
    bf16 = copy.deepcopy(fp32).to_inference_precision(torch.bfloat16)
    # the LM's matrix products read bf16 weights held once; what must stay fp32 does: the
    # residual stream, LayerNorm, the embeddings (every parameter left); the frozen EEG
    # encoder's products are centered, their shared part in fp32
    assert not any(type(m) is torch.nn.Linear for m in bf16.GPT2.modules())
    assert not any(type(m) is torch.nn.Linear for m in bf16.tokenizer.modules())
    centered = [m for m in bf16.tokenizer.modules() if isinstance(m, precision.CenteredLinear)]
    assert centered and all(m.weight.dtype == torch.float32 and m.low.dtype == torch.bfloat16
                            for m in centered)
    linears = [m for m in bf16.modules() if isinstance(m, precision.PackedLinear)]
    assert linears and all(p.dtype == torch.bfloat16 for m in linears for p in m.parts)
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    assert isinstance(bf16.GPT2.lm_head, precision.PackedLinear)
    residual = []
    hook = bf16.GPT2.transformer.h[0].register_forward_hook(lambda m, a, out: residual.append(out))
    got = answering.answer_batch(bf16, batch, task)
    hook.remove()
    assert residual and all(x.dtype == torch.float32 for x in residual)
    assert got.log_likelihoods.dtype == torch.float32
    # a random LM's greedy text is near-tied noise (simple_inference's planted model below
    # checks texts); its parsed labels and the scored answer are what must agree
    assert got.labels == want.labels
    assert len(set(want.labels)) > 1 or len(set(map(tuple, want.log_likelihoods.tolist()))) > 1
    probs, expected = got.probabilities(), want.probabilities()
    # rounding the weights alone moves these probabilities by ~0.01: random weights 15x a
    # trained model's amplify it; the 0.02 goal is `python -m evaluation agree`'s, on trained runs
    assert float((probs - expected).abs().max()) <= 0.05
    # so the scored answer is the same wherever fp32's is not a near-tie within that bound
    top2 = expected.topk(2, dim=-1).values
    clear = top2[:, 0] - top2[:, 1] > 0.1
    assert clear.sum() >= 3
    assert torch.equal(probs.argmax(-1)[clear], expected.argmax(-1)[clear])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.qint8])
def test_a_centered_product_rounds_only_what_tells_tokens_apart(dtype):
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 96)
    # every token of a sample carries one large vector; they differ by 2 % of it
    shared = torch.randn(3, 1, 64) * 5
    x = shared + 0.1 * torch.randn(3, 40, 64)
    want = linear(x).detach()
    varying = want - want.mean(dim=1, keepdim=True)

    def error(got):
        assert got.shape == want.shape
        return float((got.float() - want).norm() / varying.norm())

    plain = error(precision.PackedLinear(linear, dtype=dtype)(x))
    centered_out = precision.CenteredLinear(linear, dtype)(x)
    assert centered_out.dtype == torch.float32
    centered = error(centered_out)
    # plain rounding scales with the shared vector, centered with the 2 % that varies
    assert centered < plain / 8
    assert centered < (0.01 if dtype == torch.bfloat16 else 0.04)


def test_the_largest_text_logits_of_a_bf16_head_are_exact_in_fp32():
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 5000 + 300, bias=False)
    head = precision.PackedLinear(linear, (5000,))
    h = torch.randn(3, 2, 64)
    rounded = torch.nn.functional.linear(h, linear.weight[:5000].to(torch.bfloat16).float())
    got = precision.text_head(head, h, 5000)
    assert got.dtype == torch.float32 and got.shape == (3, 2, 5000)
    top = rounded.topk(precision.EXACT_TOP_LOGITS // 2, dim=-1).indices   # clear of the edge
    # exact up to fp32 summation order: bf16 output rounding would be ~1/256 of the logit
    torch.testing.assert_close(got.gather(-1, top), rounded.gather(-1, top), rtol=1e-5, atol=1e-5)
    assert float((got - rounded).abs().max()) > 1e-3          # the rest: bf16's product
    assert torch.equal(got.argmax(-1), rounded.argmax(-1))
    # the whole head gives the same text rows, in bf16
    whole = head(h)
    assert whole.dtype == torch.bfloat16 and whole.shape == (3, 2, 5300)


def test_simple_inference_in_bf16_gives_the_fp32_answer(tmp_path, capsys):
    ckpts = write_checkpoints(tmp_path / "ckpts")
    samples = write_samples(tmp_path / "samples", [1, 0])
    records = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        rc = simple_inference.main(["--model_path", str(ckpts["lm"]), "--data_path",
                                    str(samples), "--task", "Workload", "--sample_idx", "1",
                                    "--plot", "none", "--dtype", dtype, "--out_dir", str(out)])
        assert rc == 0, capsys.readouterr().err
        records[dtype] = json.loads(next(out.rglob("sample_0001.json")).read_text())
    fp32, bf16 = records["float32"], records["bfloat16"]
    assert bf16["generated_text"] == fp32["generated_text"] and fp32["predicted_label"] == 1
    assert bf16["predicted_label"] == fp32["predicted_label"]
    assert (fp32["dtype"], bf16["dtype"]) == ("float32", "bfloat16")
    for name, p in fp32["option_probs"].items():
        assert abs(bf16["option_probs"][name] - p) <= 0.02


def test_agreement_command_writes_its_table_and_json(tmp_path, capsys):
    ckpts = write_checkpoints(tmp_path / "ckpts")
    write_samples(tmp_path / "eegmat" / "test", [0, 1, 1])
    out = tmp_path / "agree.json"
    rc = evaluation_main(["agree", "--model_path", str(ckpts["lm"]), "--task_dir",
                          f"Workload={tmp_path / 'eegmat'}", "--json", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and "Workload" in printed and "bfloat16" in printed
    result = json.loads(out.read_text())["results"]["Workload"]["bfloat16"]
    assert result["windows"] == 3 and result["same_scoring_answer"] == 1.0
    assert result["same_generated_answer"] == 1.0 and result["max_prob_diff"] <= 0.02
    assert result["meets_goals"]
    rc = evaluation_main(["agree", "--model_path", str(ckpts["lm"]), "--task_dir",
                          f"Workload={tmp_path / 'nowhere'}"])
    assert rc == 2 and "no sample files" in capsys.readouterr().err


def test_short_query_attention_in_bf16_matches_fp32_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 1, 16), torch.randn(2, 3, 40, 16), torch.randn(2, 3, 40, 16)
    visible = torch.rand(2, 1, 1, 40) > 0.3
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=visible)
    bf = [t.to(torch.bfloat16) for t in (q, k, v)]
    for mask in (visible, attention_bias(visible, bf[0])):
        got = short_query_attention(*bf, mask)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got.float(), want, atol=0.03, rtol=0.02)


def test_agreement_reads_the_tasks_the_checkpoint_carries(tmp_path, capsys):
    """A task-file run's checkpoint defines its tasks: `agree` needs no task file for them."""
    import dataclasses

    from tasks import BUILTIN_TASKS, TASKS_KEY
    ckpts = write_checkpoints(tmp_path / "ckpts")
    lm = torch.load(ckpts["lm"], weights_only=True)
    stored = dataclasses.replace(BUILTIN_TASKS["Workload"], name="MyWorkload",
                                 source="my_workload.toml", processed_dir="MyWorkloadData")
    lm[TASKS_KEY] = [stored.to_dict()]
    torch.save(lm, tmp_path / "lm_tasks.pt")
    write_samples(tmp_path / "data" / "MyWorkloadData" / "test", [0, 1])
    write_samples(tmp_path / "data" / "Workload" / "test", [0, 1])   # a task the run did not have
    out = tmp_path / "agree.json"
    rc = evaluation_main(["agree", "--model_path", str(tmp_path / "lm_tasks.pt"), "--data_root",
                          str(tmp_path / "data"), "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert set(json.loads(out.read_text())["results"]) == {"MyWorkload"}
    rc = evaluation_main(["agree", "--model_path", str(tmp_path / "lm_tasks.pt"), "--task_dir",
                          f"myworkload={tmp_path / 'data' / 'MyWorkloadData'}"])
    assert rc == 0 and "MyWorkload" in capsys.readouterr().out
    rc = evaluation_main(["agree", "--model_path", str(ckpts["lm"]), "--task_dir",
                          f"MyWorkload={tmp_path / 'data' / 'MyWorkloadData'}"])
    assert rc == 2 and "unknown task 'MyWorkload'" in capsys.readouterr().err


def test_an_int8_copy_gives_the_fp32_answers(tmp_path):
    fp32 = tiny_lm()
    labels = [i % 2 for i in range(8)]
    write_samples(tmp_path, labels, seconds=2)
    batch = next(iter(DataLoader(dd.InstructionDataset("TUAB", tmp_path, eeg_max_tokens=40),
                                 batch_size=len(labels))))
    want = answering.answer_batch(fp32, batch, "TUAB")
    int8 = copy.deepcopy(fp32).to_inference_precision(precision.resolve_inference_dtype("int8",
                                                                                        CPU))
    linears = [m for m in int8.modules() if isinstance(m, precision.PackedLinear)]
    assert linears and all(m.dtype == torch.qint8 for m in linears)
    assert not any(type(m) is torch.nn.Linear for m in int8.modules())
    assert all(p.dtype == torch.float32 for p in int8.parameters())
    got = answering.answer_batch(int8, batch, "TUAB")
    probs, expected = got.probabilities(), want.probabilities()
    assert float((probs - expected).abs().max()) <= 0.1     # random weights amplify, as above
    clear = (expected[:, 0] - expected[:, 1]).abs() > 0.2
    assert clear.sum() >= 2
    assert torch.equal(probs.argmax(-1)[clear], expected.argmax(-1)[clear])
    with pytest.raises(ValueError, match="int8 runs on CPUs only"):
        precision.resolve_inference_dtype("int8", torch.device("cuda"))
