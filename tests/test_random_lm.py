"""model/random_lm.py: a new random Hugging Face causal-LM folder with its own BPE tokenizer,
read back by everything that takes `--init_from FOLDER`, the same bytes for the same seed."""
import subprocess
import sys

import pytest
import torch

from model.backbone import BackboneError
from model.gpt2_bpe import encode as gpt2_encode
from model.hf_backbone import SUPPORTED_ARCHITECTURES, load_causal_lm
from model.random_lm import EOS_TOKEN, LMShape, write_random_lm
from model.text_tokenizer import HFTextTokenizer
from tests.test_model_vq import one_torch_thread  # noqa: F401  (autouse fixture)

transformers = pytest.importorskip("transformers")

TEXTS = ["Question: Is this EEG segment abnormal? Answer: Yes", "Answer: No",
         "Which sleep stage does this EEG segment belong to? Options: (A) Wake. (B) REM.",
         "the quick brown fox jumps over the lazy dog"] * 20
SHAPE = LMShape(hidden=32, layers=2, heads=4, kv_heads=2, intermediate=64, positions=128)
VOCAB = 320


def shape_of(arch):
    return SHAPE if arch != "gpt2" else LMShape(**{**SHAPE.__dict__, "kv_heads": SHAPE.heads})


@pytest.mark.parametrize("arch", list(SUPPORTED_ARCHITECTURES))
def test_folder_loads_as_a_backbone_with_its_own_tokenizer(arch, tmp_path):
    folder = tmp_path / arch
    n = write_random_lm(folder, arch, shape_of(arch), TEXTS, VOCAB, seed=0)
    assert 256 < n <= VOCAB
    lm = load_causal_lm(folder)
    config = lm.config
    assert config.model_type == arch and config.vocab_size == n
    assert lm.get_input_embeddings().weight.shape == (n, SHAPE.hidden)
    assert config.num_hidden_layers == SHAPE.layers
    if arch != "gpt2":
        assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)
        assert config.intermediate_size == 64 and config.max_position_embeddings == 128
    text = HFTextTokenizer.from_folder(folder)
    assert text.eot_id == config.eos_token_id == 0 and text.n_words == n + 1   # [SEP] added
    auto = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert auto.is_fast and auto.eos_token == EOS_TOKEN and len(auto) == n
    ids = text.encode(" Answer: Yes")
    assert text.decode(ids) == " Answer: Yes" and max(ids) < n
    with torch.no_grad():
        logits = lm(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), n) and torch.isfinite(logits).all()


def test_vocabulary_is_not_gpt2s():
    from model.random_lm import train_bpe

    bpe = train_bpe(TEXTS, VOCAB)
    sentence = " Which sleep stage does this EEG segment belong to?"
    assert bpe.encode(sentence) != gpt2_encode(sentence)
    assert len(bpe) != 50257 and bpe.convert_tokens_to_ids(EOS_TOKEN) == 0


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path):
    def files(folder):
        return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}

    write_random_lm(tmp_path / "a", "llama", SHAPE, TEXTS, VOCAB, seed=3)
    write_random_lm(tmp_path / "b", "llama", SHAPE, TEXTS, VOCAB, seed=3)
    write_random_lm(tmp_path / "c", "llama", SHAPE, TEXTS, VOCAB, seed=4)
    a, b, c = files(tmp_path / "a"), files(tmp_path / "b"), files(tmp_path / "c")
    assert "model.safetensors" in a and "tokenizer.json" in a and a == b
    assert c["tokenizer.json"] == a["tokenizer.json"]
    assert c["model.safetensors"] != a["model.safetensors"]
    # the caller's random state is left alone
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    write_random_lm(tmp_path / "d", "llama", SHAPE, TEXTS, VOCAB, seed=3)
    assert torch.equal(torch.rand(3), expected)


def test_bad_requests_are_refused_before_anything_is_written(tmp_path):
    cases = [(dict(shape=LMShape(hidden=30, heads=4)), "--hidden 30"),
             (dict(shape=LMShape(heads=4, kv_heads=3)), "--kv_heads 3"),
             (dict(shape=LMShape(layers=0)), "--layers 0"),
             (dict(arch="gpt2"), "grouped-query"),
             (dict(arch="bert"), "--architecture 'bert'"),
             (dict(vocab=100), "--vocab_size 100"),
             (dict(texts=[]), "texts are empty"),
             (dict(seed=-1), "--seed -1")]
    for i, (case, match) in enumerate(cases):
        folder = tmp_path / str(i)
        with pytest.raises(BackboneError, match=match):
            write_random_lm(folder, case.get("arch", "llama"), case.get("shape", SHAPE),
                            case.get("texts", TEXTS), case.get("vocab", VOCAB),
                            case.get("seed", 0))
        assert not folder.exists()
    assert [p.name for p in tmp_path.iterdir()] == []     # no temporary folder left behind
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "config.json").write_text("{}")
    with pytest.raises(BackboneError, match="not an empty folder"):
        write_random_lm(tmp_path / "full", "llama", SHAPE, TEXTS, VOCAB)


def test_command_line_writes_the_folder_and_refuses_in_one_line(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS))
    cmd = [sys.executable, "-m", "model.random_lm", "--input", str(corpus), "--hidden", "32",
           "--intermediate", "64", "--positions", "128", "--vocab_size", str(VOCAB)]
    ok = subprocess.run(cmd + ["--out_dir", str(tmp_path / "lm")], capture_output=True,
                        text=True)
    assert ok.returncode == 0, ok.stderr
    assert load_causal_lm(tmp_path / "lm").config.hidden_size == 32
    bad = subprocess.run(cmd + ["--out_dir", str(tmp_path / "lm2"), "--heads", "5"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == ["error: --hidden 32 does not divide into "
                                               "--heads 5"]


def test_task_prompts_make_the_builtin_prompts_short():
    from model.random_lm import task_texts, train_bpe
    from tasks import get_task

    tuev = get_task("TUEV")
    assert tuev.full_text(0) in task_texts(1) and len(task_texts(3)) == 3 * len(task_texts(1))
    plain, with_tasks = train_bpe(TEXTS, 1000), train_bpe(TEXTS + task_texts(10), 1000)
    lengths = [len(tok.encode(tuev.full_text(0))) for tok in (plain, with_tasks)]
    assert lengths[1] < lengths[0] / 2
