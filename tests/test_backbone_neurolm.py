"""NeuroLM on a Hugging Face backbone: with GPT-2's weights read by transformers it computes what
the native NeuroLM computes (logits, losses, greedy answers, option scores); on every supported
architecture it trains (gradients reach the LM, the EEG-code head and the EEG side) and its
cached decoding equals recomputing."""
import dataclasses

import pytest
import torch

from model.backbone import BackboneError
from model.gpt2_bpe import GPT2_VOCAB_SIZE, PADDED_VOCAB_SIZE
from model.gpt2_hf import gpt_from_hf
from model.hf_backbone import ATTENTION_IMPLEMENTATIONS, SUPPORTED_ARCHITECTURES, load_causal_lm
from model.model_neural_transformer import NTConfig
from model.model_neurolm import NeuroLM
from model.text_tokenizer import GPT2_TEXT
from tests.test_backbone import VOCAB, folders, tiny_config  # noqa: F401  (fixture)
from tests.test_model_neurolm import CODES, mixed_batch
from tests.test_model_vq import PUBLIC_ENCODER_ARGS, one_torch_thread  # noqa: F401

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny GPT-2 with GPT-2's vocabulary size and an untied head (NeuroLM unties them)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_embd=24, n_layer=2, n_head=2, n_positions=64,
                                     vocab_size=GPT2_VOCAB_SIZE, tie_word_embeddings=False)
    folder = tmp_path_factory.mktemp("gpt2_full_vocab")
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def native_and_hf(folder, attn):
    """The native NeuroLM on the folder's GPT-2, and a NeuroLM on the same folder read by
    transformers given exactly the native one's weights (grown vocabulary, heads, EEG side)."""
    torch.manual_seed(0)
    encoder = NTConfig.from_dict(PUBLIC_ENCODER_ARGS)
    native = NeuroLM(None, encoder, n_eeg_codes=CODES, gpt=gpt_from_hf(folder)).eval()
    lm = load_causal_lm(folder, attn)
    lm.resize_token_embeddings(PADDED_VOCAB_SIZE, mean_resizing=False)
    hf = NeuroLM(None, encoder, n_eeg_codes=CODES, hf_lm=lm).eval()   # GPT-2's BPE
    head = native.GPT2.lm_head.weight
    with torch.no_grad():
        lm.get_input_embeddings().weight.copy_(native.GPT2.transformer.wte.weight)
        lm.get_output_embeddings().weight.copy_(head[:PADDED_VOCAB_SIZE])
        hf.eeg_head.weight.copy_(head[PADDED_VOCAB_SIZE:])
    for name in ("tokenizer", "pos_embed", "encode_transform_layer"):
        getattr(hf, name).load_state_dict(getattr(native, name).state_dict())
    return native, hf


@pytest.mark.parametrize("attn", ATTENTION_IMPLEMENTATIONS)
@torch.no_grad()
def test_gpt2_neurolm_through_transformers_equals_the_native_one(gpt2_folder, attn):
    native, hf = native_and_hf(gpt2_folder, attn)
    x, prompt, chans, time, mask = mixed_batch()          # mixed lengths, padded EEG
    y_eeg = torch.randint(0, CODES, mask.shape).masked_fill(~mask, -1)
    batch = dict(x_eeg=x, y_eeg=y_eeg, x_text=prompt, y_text=prompt, input_chans=chans,
                 input_time=time, input_mask=mask)
    (loss_n, log_n, logits_n), (loss_h, log_h, logits_h) = native(**batch), hf(**batch)
    assert logits_h.shape == logits_n.shape == (3, 16, PADDED_VOCAB_SIZE + CODES)
    torch.testing.assert_close(logits_h, logits_n, atol=1e-5, rtol=0)
    assert log_h.keys() == log_n.keys() and loss_h.item() == pytest.approx(loss_n.item(),
                                                                              abs=1e-5)
    text_only = native(x_text=prompt)[2], hf(x_text=prompt)[2]
    torch.testing.assert_close(text_only[1], text_only[0], atol=1e-5, rtol=0)
    eeg_args = (x, prompt, chans, time, mask)
    answers = [lm.generate(*eeg_args, max_new_tokens=6) for lm in (native, hf)]
    assert torch.equal(answers[1], answers[0])
    options = torch.tensor([[15496, 995, 50256], [995, 50256, 50256]])
    lengths = torch.tensor([3, 2])
    scores = [lm.continuation_log_likelihoods(lm.prefill(*eeg_args), options, lengths)
              for lm in (native, hf)]
    torch.testing.assert_close(scores[1], scores[0], atol=1e-4, rtol=0)


def hf_neurolm(folder, attn="sdpa"):
    """NeuroLM on a folder's random tiny LM; its text side: ids 0..VOCAB-1, end token 2 (what
    decoding needs; these folders hold no tokenizer)."""
    torch.manual_seed(0)
    text = dataclasses.replace(GPT2_TEXT, n_words=VOCAB, eot_id=2, sep_id=1, name="ids")
    return NeuroLM(None, NTConfig.from_dict(PUBLIC_ENCODER_ARGS), n_eeg_codes=CODES,
                   hf_lm=load_causal_lm(folder, attn), text=text)


def small_vocab_batch():
    x, prompt, chans, time, mask = mixed_batch()
    return x, prompt % (VOCAB - 3) + 3, chans, time, mask      # ids of the tiny vocabulary


@pytest.mark.parametrize("arch", list(SUPPORTED_ARCHITECTURES))
def test_neurolm_trains_on_every_architecture(folders, arch):  # noqa: F811
    lm = hf_neurolm(folders[arch]).train()
    x, prompt, chans, time, mask = small_vocab_batch()
    y_eeg = torch.randint(0, CODES, mask.shape).masked_fill(~mask, -1)
    loss, log, logits = lm(x_eeg=x, y_eeg=y_eeg, x_text=prompt, y_text=prompt,
                           input_chans=chans, input_time=time, input_mask=mask,
                           return_logits=False)
    assert logits is None and {"eeg_loss", "text_loss", "eeg_accuracy"} <= log.keys()
    loss.backward()
    trained = [lm.eeg_head, lm.pos_embed, lm.LM.get_input_embeddings(), lm.LM.get_decoder()]
    trained += [lm.encode_transform_layer] if list(lm.encode_transform_layer.parameters()) else []
    for module in trained:
        assert any(p.grad is not None and bool(p.grad.any()) for p in module.parameters()), module
    assert not any(p.requires_grad for p in lm.tokenizer.parameters())
    # the loss with logits kept equals the chunked head's (eval: the models' dropout off)
    batch = dict(x_eeg=x, y_eeg=y_eeg, x_text=prompt, y_text=prompt, input_chans=chans,
                 input_time=time, input_mask=mask)
    with torch.no_grad():
        lm.eval()
        full, chunked = lm(**batch), lm(**batch, return_logits=False)
    assert full[2].shape[-1] == VOCAB + CODES
    assert full[0].item() == pytest.approx(chunked[0].item(), rel=1e-5)


@pytest.mark.parametrize("attn", ATTENTION_IMPLEMENTATIONS)
@pytest.mark.parametrize("arch", list(SUPPORTED_ARCHITECTURES))
@torch.no_grad()
def test_cached_generation_equals_recomputing_on_every_architecture(folders, arch,  # noqa: F811
                                                                    attn):
    lm = hf_neurolm(folders[arch], attn).eval()
    args = small_vocab_batch()
    cached = lm.generate(*args, max_new_tokens=5)
    assert torch.equal(cached, lm.generate(*args, max_new_tokens=5, use_cache=False))
    # option scores from copies of the cache equal scoring each full sequence
    options, lengths = torch.tensor([[5, 6, 2], [7, 2, 2]]), torch.tensor([3, 2])
    scores = lm.continuation_log_likelihoods(lm.prefill(*args), options, lengths)
    x, prompt, chans, time, mask = args
    for k in range(2):
        text = torch.cat((prompt, options[k, :lengths[k]].expand(3, -1)), dim=1)
        logp = lm.text_logits(x, text, chans, time, mask, last_n=int(lengths[k]) + 1)
        logp = logp[:, :-1].float().log_softmax(-1)
        want = logp.gather(-1, options[k, :lengths[k]].expand(3, -1)[..., None]).sum((1, 2))
        torch.testing.assert_close(scores[:, k], want, atol=1e-4, rtol=0)


TEXTS = ["Question: Is this EEG segment abnormal? Answer: Yes", "Answer: No",
         "Which sleep type does this EEG segment belong to? Options: (A) Wake. (B) REM.",
         "the quick brown fox jumps over the lazy dog"] * 20


def save_small_tokenizer(folder) -> int:
    """A byte-level BPE trained here on a few sentences (a vocabulary that is not GPT-2's, with
    its own end token), saved as the folder's tokenizer; -> its length."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(TEXTS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|eos|>")
    tok.save_pretrained(folder)
    return len(tok)


def save_tiny_lm_with_tokenizer(folder, architecture: str, **config) -> int:
    """A tiny random `architecture` model over save_small_tokenizer's vocabulary (no row for
    [SEP] yet: building adds it), saved in folder with that tokenizer; -> the vocabulary size."""
    n = save_small_tokenizer(folder)
    torch.manual_seed(0)
    lm_config = tiny_config(architecture)
    lm_config.vocab_size = n
    for key, value in config.items():
        setattr(lm_config, key, value)
    transformers.AutoModelForCausalLM.from_config(lm_config).save_pretrained(folder)
    return n


@pytest.fixture(scope="module")
def llama_with_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama_tok")
    return folder, save_tiny_lm_with_tokenizer(folder, "llama")


def test_text_side_comes_from_the_folders_tokenizer(llama_with_tokenizer):
    from model.text_tokenizer import HFTextTokenizer

    folder, n = llama_with_tokenizer
    text = HFTextTokenizer.from_folder(folder)
    assert text.n_words == n + 1 and text.sep_id == n and text.eot_id == 0   # [SEP] added
    ids = text.encode(" Answer: Yes")
    assert text.decode(ids + [text.eot_id, text.sep_id]) == " Answer: Yes"
    assert ids != transformers_gpt2_ids(" Answer: Yes")
    assert text.identity() == HFTextTokenizer.from_folder(folder).identity() != "gpt2"


def transformers_gpt2_ids(s):
    from model.gpt2_bpe import encode

    return encode(s)


def test_new_neurolm_on_a_llama_folder_answers_in_its_tokenizer(llama_with_tokenizer):
    from model.build import is_hf_backbone, neurolm_on_hf
    from tests.test_model_vq import tiny_vq

    folder, n = llama_with_tokenizer
    assert is_hf_backbone(folder) and not is_hf_backbone(folder, "native")
    lm = neurolm_on_hf(tiny_vq().VQ, folder).eval()
    assert lm.LM.get_input_embeddings().weight.shape[0] == n + 1
    x, _, chans, time, mask = mixed_batch()
    prompt = torch.tensor([[lm.text.sep_id] + lm.text.encode("Question: abnormal? Answer:")] * 3)
    out = lm.generate(x, prompt, chans, time, mask, max_new_tokens=4)
    new = out[:, prompt.shape[1]:]
    assert int(new.max()) <= n and isinstance(lm.text.decode(new[0].tolist()), str)
    assert lm.backbone.text_logits(torch.zeros(1, lm.backbone.width)).shape == (1, n + 1)


def test_checkpoint_of_a_hf_neurolm_reloads_without_its_folder(llama_with_tokenizer, tmp_path):
    """The checkpoint carries the backbone's config and tokenizer: reloaded after the folder is
    gone, it computes the same logits and the same answers, in the same tokenizer."""
    import shutil

    from model import load_neurolm, neurolm_checkpoint
    from model.build import neurolm_on_hf
    from tests.test_model_vq import tiny_vq

    folder, _ = llama_with_tokenizer
    copy = tmp_path / "base"
    shutil.copytree(folder, copy)
    lm = neurolm_on_hf(tiny_vq().VQ, copy).eval()
    torch.save(neurolm_checkpoint(lm, iter_num=3), tmp_path / "lm.pt")
    shutil.rmtree(copy)
    again = load_neurolm(tmp_path / "lm.pt")
    assert again.text.identity() == lm.text.identity() and again.text.sep_id == lm.text.sep_id
    x, _, chans, time, mask = mixed_batch()
    prompt = torch.tensor([[lm.text.sep_id] + lm.text.encode("Question: abnormal? Answer:")] * 3)
    with torch.no_grad():
        assert torch.equal(again(x_eeg=x, x_text=prompt, input_chans=chans, input_time=time,
                                 input_mask=mask)[2],
                           lm(x_eeg=x, x_text=prompt, input_chans=chans, input_time=time,
                              input_mask=mask)[2])
        assert torch.equal(again.generate(x, prompt, chans, time, mask, max_new_tokens=4),
                           lm.generate(x, prompt, chans, time, mask, max_new_tokens=4))


@pytest.mark.parametrize("arch", ["gpt2", "qwen3"])
def test_recomputed_layers_give_the_same_loss_and_gradients(folders, arch):  # noqa: F811
    lm = hf_neurolm(folders[arch])
    for module in lm.LM.modules():       # dropout off, train mode on (checkpointing needs it)
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    lm.train()
    assert len(lm.backbone.blocks()) == 2
    x, prompt, chans, time, mask = small_vocab_batch()
    y_eeg = torch.randint(0, CODES, mask.shape, generator=torch.Generator().manual_seed(0))
    batch = dict(x_eeg=x, y_eeg=y_eeg.masked_fill(~mask, -1), x_text=prompt, y_text=prompt,
                 input_chans=chans, input_time=time, input_mask=mask, return_logits=False)
    results = []
    for on in (False, True):
        lm.zero_grad()
        lm.backbone.set_recompute(on)
        assert lm.LM.is_activation_checkpointing == on
        lm(**batch)[0].backward()
        results.append({n: p.grad.clone() for n, p in lm.named_parameters() if p.grad is not None})
    assert results[0].keys() == results[1].keys()
    for name, grad in results[0].items():
        torch.testing.assert_close(results[1][name], grad, atol=1e-6, rtol=1e-5)


def test_new_neurolm_picks_the_backbone_from_the_folder(llama_with_tokenizer, gpt2_folder,
                                                        tmp_path):
    """--init_from FOLDER: a Llama folder becomes a Hugging Face backbone with its tokenizer; a
    GPT-2 folder keeps the native GPT (the public layout) unless asked for the library's."""
    from model import vq_checkpoint
    from model.build import new_neurolm
    from model.model import GPT
    from tests.test_model_vq import tiny_vq

    torch.save(vq_checkpoint(tiny_vq()), tmp_path / "vq.pt")
    lm, _ = new_neurolm(tmp_path / "vq.pt", init_from=str(llama_with_tokenizer[0]))
    assert lm.config.model_type == "llama" and lm.text.n_words == llama_with_tokenizer[1] + 1
    vq_encoder = tiny_vq().VQ.encoder.state_dict()
    assert all(torch.equal(v, vq_encoder[k]) for k, v in lm.tokenizer.state_dict().items())
    native, _ = new_neurolm(tmp_path / "vq.pt", init_from=str(gpt2_folder))
    assert isinstance(native.GPT2, GPT) and native.text.name == "gpt2"
    with pytest.raises(BackboneError, match="no config.json"):
        new_neurolm(tmp_path / "vq.pt", init_from=str(tmp_path), backbone="hf")
