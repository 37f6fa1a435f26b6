"""NeuroLM on a Hugging Face backbone: with GPT-2's weights read by transformers it computes what
the native NeuroLM computes (logits, losses, greedy answers, option scores); on every supported
architecture it trains (gradients reach the LM, the EEG-code head and the EEG side) and its
cached decoding equals recomputing."""
import pytest
import torch

from model.gpt2_bpe import GPT2_VOCAB_SIZE, PADDED_VOCAB_SIZE
from model.gpt2_hf import gpt_from_hf
from model.hf_backbone import ATTENTION_IMPLEMENTATIONS, SUPPORTED_ARCHITECTURES, load_causal_lm
from model.model_neural_transformer import NTConfig
from model.model_neurolm import NeuroLM
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
    hf = NeuroLM(None, encoder, n_eeg_codes=CODES, hf_lm=lm, text_vocab=GPT2_VOCAB_SIZE).eval()
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
    torch.manual_seed(0)
    return NeuroLM(None, NTConfig.from_dict(PUBLIC_ENCODER_ARGS), n_eeg_codes=CODES,
                   hf_lm=load_causal_lm(folder, attn), eot_id=2)


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
