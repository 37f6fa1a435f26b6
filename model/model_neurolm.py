"""NeuroLM: a language model that reads EEG through a frozen VQ encoder (spec sections 4-6).

EEG path: patches -> frozen VQ encoder ("tokenizer") features -> Linear+GELU when the LM width
differs from the encoder width -> + the LM's channel embedding (pos_embed, 256 x d) -> the LM
with each token's second as its position. Text path: the LM as usual, positions continuing
after the sample's own last EEG second. The LM is reached only through model/backbone.py: the
native GPT-2 (`GPT2`, the public layout; one head: 50304 text logits, then one per VQ code) or
a Hugging Face causal LM (`LM`, its own text head, `eeg_head` beside it).
Checkpoints, and building a new NeuroLM around a VQ: model/checkpoints.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch.nn import functional as F

from model.backbone import Backbone, GPTBackbone, new_eeg_head
from model.gpt2_bpe import PADDED_VOCAB_SIZE
from model.head_loss import head_cross_entropy
from model.hf_backbone import HFBackbone
from model.model import GPT, GPTConfig, as_attention_mask, build_attention_mask
from model.model_neural_transformer import NeuralTransformer, NTConfig
from model.model_vq import CODEBOOK_SIZE
from model.precision import exact_head_logits, to_inference_precision
from model.text_tokenizer import GPT2_TEXT


@dataclass
class Prefix:
    """What NeuroLM.prefill read of EEG + prompt, for answers to continue from."""
    last_hidden: torch.Tensor          # (B, C) final hidden state of the prompt's last token
    positions: torch.Tensor            # (B, L) positions of the tokens read
    valid: torch.Tensor                # (B, L) which of them are real (not EEG padding)
    cache: object | None               # every layer's keys and values (the backbone's cache)
    embedded: torch.Tensor | None = None     # without a cache: the input embeddings (B, L, C)
    prompt_mask: torch.Tensor | None = None  # without a cache: their mask (B, 1, L, L)


class NeuroLM(nn.Module):
    def __init__(self, gpt_config: GPTConfig | None, encoder_config: NTConfig,
                 n_eeg_codes: int = CODEBOOK_SIZE, gpt: GPT | None = None,
                 per_sample_text_positions: bool = True, hf_lm: nn.Module | None = None,
                 text=None):
        """gpt: an already built GPT (e.g. model.checkpoints.build_gpt(...)) instead of a fresh one.
        hf_lm: a transformers causal LM (model.hf_backbone.load_causal_lm) instead of the GPT,
        its embedding already as long as its tokenizer `text` (model.text_tokenizer, whose
        n_words rows decoding reads and whose eot_id ends answers; default: GPT-2's BPE).

        per_sample_text_positions=False restores the public rule (text after the batch's largest
        EEG second), which makes a sample's positions depend on its batch neighbours.
        """
        super().__init__()
        if hf_lm is None:
            self.GPT2 = gpt if gpt is not None else GPT(gpt_config)
            self.GPT2.grow_vocabulary(PADDED_VOCAB_SIZE, n_eeg_codes)
        else:
            self.LM = hf_lm
            self.eeg_head = new_eeg_head(hf_lm.config.hidden_size, n_eeg_codes)
        self.text = GPT2_TEXT if text is None else text
        self.n_eeg_codes = n_eeg_codes
        self.encoder_config = encoder_config
        self.per_sample_text_positions = per_sample_text_positions
        self.tokenizer = NeuralTransformer(encoder_config)
        for p in self.tokenizer.parameters():
            p.requires_grad = False
        self.tokenizer.eval()
        d, enc = self.backbone.width, encoder_config.n_embd
        self.pos_embed = nn.Embedding(encoder_config.n_channel_embeddings, d)
        self.encode_transform_layer = (nn.Sequential(nn.Linear(enc, d), nn.GELU())
                                       if enc != d else nn.Identity())
        for m in self.encode_transform_layer.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @property
    def backbone(self) -> Backbone:
        """The LM behind one interface (a view: made on each use, so wrappers that replace
        submodules are always seen)."""
        if "LM" in self._modules:
            return HFBackbone(self.LM, self.eeg_head, self.text.n_words)
        return GPTBackbone(self.GPT2)

    @property
    def config(self):
        """The LM's config: GPTConfig of the native GPT, else the transformers config."""
        return self.LM.config if "LM" in self._modules else self.GPT2.config

    def to_inference_precision(self, dtype: torch.dtype) -> "NeuroLM":
        """This model, for answering only, with its weights cast to dtype once (in place;
        model/precision.py: on a CPU in bf16 the Linears, text rows of the head apart, packed
        for oneDNN)."""
        # the frozen EEG encoder's products are centered (precision.CenteredLinear): its
        # features share one large common vector (center_channel_embedding) and what tells
        # windows apart is a few per cent of their norm, which bf16's 3 digits blur. On the
        # demo's test splits the encoder plainly in bf16 moved option probabilities by up to
        # 0.037 and centered by 0.012 (in fp32: 0.009), at half the fp32 encoder's time.
        encoder = tuple(n for n, m in self.tokenizer.named_modules(prefix="tokenizer")
                        if type(m) is nn.Linear)
        if "LM" in self._modules:   # HFBackbone reads the weights of both heads
            heads = (self.LM.get_output_embeddings(), self.eeg_head)
            return to_inference_precision(self, dtype, pack=dtype != torch.bfloat16,
                                          keep=tuple(n for n, m in self.named_modules()
                                                     if any(m is h for h in heads)),
                                          centered=encoder)
        return to_inference_precision(self, dtype, {"GPT2.lm_head": (self.backbone.text_vocab,)},
                                      centered=encoder)

    def train(self, mode: bool = True):
        super().train(mode)
        self.tokenizer.eval()  # frozen: its dropout stays off
        return self

    def get_num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if not non_embedding or "LM" in self._modules:
            return n
        return n - self.GPT2.transformer.wpe.weight.numel()

    @torch.no_grad()
    def center_channel_embedding(self, x_eeg, input_chans, input_time, input_mask):
        """Start the channel embedding (pos_embed) at minus the mean EEG feature of each channel
        in these patches, plus N(0, 0.02); rows of channels absent here get minus the mean over
        all channels. For a new LM, before training (a data-dependent init, like the codebook's
        k-means).

        Why: the frozen encoder's features share one large common vector (about 95 % of their
        norm for the tiny tokenizer), so every EEG token the LM reads is mostly that vector and
        what tells recordings apart is a few per cent. Gradient descent on such uncentred inputs
        crawls: a tiny LM learned 5-class sleep staging to 0.9 balanced accuracy in 300 steps
        with this init and to 0.4 without. pos_embed is added to every EEG token of its channel,
        so it is where an offset belongs; training moves it freely afterwards.
        """
        features = self.encode_transform_layer(
            self.tokenizer(x_eeg, input_chans, input_time, input_mask))[input_mask]  # (n, d)
        chans = input_chans[input_mask].long()
        weight = self.pos_embed.weight
        nn.init.normal_(weight, std=0.02)
        sums = torch.zeros_like(weight).index_add_(0, chans, features.to(weight.dtype))
        counts = torch.bincount(chans, minlength=weight.shape[0]).to(weight.dtype)[:, None]
        mean = torch.where(counts > 0, sums / counts.clamp(min=1), features.mean(0))
        weight -= mean

    def encode_eeg(self, x_eeg, input_chans, input_time, input_mask=None, eeg_features=None):
        """(B, N, P) patches -> (B, N, d) EEG features for the LM (no gradient to the encoder).

        eeg_features: the frozen encoder's output for these patches when the caller has it
        already (the pretraining trainer needs it for the code targets too): not recomputed."""
        features = eeg_features
        if features is None:
            with torch.no_grad():
                features = self.tokenizer(x_eeg.to(self.pos_embed.weight.dtype), input_chans,
                                          input_time, input_mask)                 # (B, N, enc)
        return self.encode_transform_layer(features) + self.pos_embed(input_chans.long())

    # -- training forward ----------------------------------------------------------------------

    def _embed_and_mask(self, x_eeg, x_text, input_chans, input_time, input_mask, eeg_mask,
                        eeg_text_mask, eeg_features=None):
        """(input embeddings, positions, mask: None for plain causal text) of EEG then text."""
        features = None
        if x_eeg is not None:
            features = self.encode_eeg(x_eeg, input_chans, input_time, input_mask, eeg_features)
        x, positions, valid = self.backbone.embed_sequence(
            features, x_text, input_time, input_mask, self.per_sample_text_positions)
        mask = None if x_eeg is None else build_attention_mask(positions, valid)
        given = eeg_mask if x_text is None else eeg_text_mask
        if x_eeg is not None and given is not None:
            mask = as_attention_mask(given)
        return x, positions, mask

    def hidden_states(self, x_eeg=None, x_text=None, input_chans=None, input_time=None,
                      input_mask=None, eeg_mask=None, eeg_text_mask=None, eeg_features=None,
                      last_n=None):
        """-> (B, L, n_embd) final hidden states of EEG followed by text (before the head), or
        of the last ``last_n`` positions only."""
        x, positions, mask = self._embed_and_mask(x_eeg, x_text, input_chans, input_time,
                                                  input_mask, eeg_mask, eeg_text_mask,
                                                  eeg_features)
        return self.backbone.run(x, positions, mask, last_n=last_n)

    def text_logits(self, x_eeg=None, x_text=None, input_chans=None, input_time=None,
                    input_mask=None, last_n=1):
        """-> (B, last_n, text vocabulary) logits at the last ``last_n`` positions only
        (what option scoring reads), without the (B, L, 58k) head over every position."""
        h = self.hidden_states(x_eeg, x_text, input_chans, input_time, input_mask,
                               last_n=last_n)
        return self.backbone.text_logits(h)

    def forward(self, x_eeg=None, y_eeg=None, x_text=None, y_text=None, input_chans=None,
                input_time=None, input_mask=None, eeg_mask=None, eeg_text_mask=None,
                return_logits=True, eeg_features=None):
        """-> (loss or None, log, logits (B, L, text rows + n_codes) or None).

        y_eeg (B, N): VQ codes, -1 ignored, scored at head rows eeg_offset + code (50304 for the
        native GPT); y_text (B, M): text ids, -1 ignored. The loss is one cross-entropy over all
        scored tokens against the whole head (as the public code); the log also splits it into
        its EEG and text parts.
        Trainers pass return_logits=False: the head then runs on the scored positions only,
        chunk by chunk with its gradient (model.head_loss.head_cross_entropy), so the (B, L, 58k)
        logits that dominate time and memory are never stored. eeg_features: see encode_eeg.
        """
        backbone = self.backbone
        h = self.hidden_states(x_eeg, x_text, input_chans, input_time, input_mask, eeg_mask,
                               eeg_text_mask, eeg_features)                   # (B, L, C)
        head = backbone.head_weight()                                         # (V, C)
        logits = F.linear(h, head) if return_logits else None                 # (B, L, V)
        log: dict[str, float] = {}
        parts = []
        if x_eeg is not None:
            parts.append(("eeg", self._eeg_targets(y_eeg, x_eeg.shape[:2], h.device,
                                                   backbone.eeg_offset)))
        if x_text is not None:
            parts.append(("text", y_text if y_text is not None
                          else torch.full(x_text.shape, -1, device=h.device)))
        targets = torch.cat([t.long() for _, t in parts], dim=1).flatten()    # (B * L,)
        rows = (targets >= 0).nonzero().squeeze(1)                          # scored positions
        if rows.numel() == 0:
            return None, log, logits
        scored_targets = targets.index_select(0, rows)
        if logits is not None:
            scored_logits = logits.flatten(0, 1).index_select(0, rows)
            wide = torch.promote_types(scored_logits.dtype, torch.float32)
            per_token = F.cross_entropy(scored_logits.to(wide), scored_targets, reduction="none")
            loss, predicted = per_token.mean(), scored_logits.argmax(-1)
        else:
            loss_sum, per_token, predicted = head_cross_entropy(
                h.flatten(0, 1).index_select(0, rows), head, scored_targets)
            loss = loss_sum / rows.numel()
        log["loss"] = loss.item()
        # which part (EEG or text) each scored token belongs to: parts are consecutive columns
        column = rows % h.shape[1]
        n_eeg = x_eeg.shape[1] if x_eeg is not None else 0
        for name, in_part in (("eeg", column < n_eeg), ("text", column >= n_eeg)):
            n = int(in_part.sum())
            if n == 0:
                continue
            log[f"{name}_loss"] = float(per_token[in_part].detach().sum()) / n
            if name == "eeg":
                right = predicted[in_part] == scored_targets[in_part]
                log["eeg_accuracy"] = float(right.sum()) / n
        return loss, log, logits

    @staticmethod
    def _eeg_targets(y_eeg, shape, device, offset):
        if y_eeg is None:
            return torch.full(shape, -1, dtype=torch.long, device=device)
        y = y_eeg.long()
        return torch.where(y >= 0, y + offset, y)

    # -- generation ----------------------------------------------------------------------------

    def _next_token(self, h_last, temperature, top_k, do_sample):
        """h_last (B, C) -> (B,) next ids, reading only the text vocabulary's logits."""
        logits = self.backbone.text_logits(h_last).float()                    # (B, V)
        if not do_sample:
            return logits.argmax(dim=-1)
        logits = logits / max(temperature, 1e-8)
        if top_k is not None:
            v, _ = torch.topk(logits, min(top_k, logits.shape[-1]))
            logits = logits.masked_fill(logits < v[:, [-1]], float("-inf"))
        return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1).squeeze(1)

    def prefill(self, x_eeg, x_text, input_chans, input_time, input_mask, eeg_text_mask=None,
                room: int = 0, use_cache: bool = True) -> Prefix:
        """Read EEG followed by the prompt x_text (B, M) once -> the Prefix that answers
        continue from (`decode`, `continuation_log_likelihoods`). room: new tokens the cache
        reserves space for. eeg_text_mask, when given, replaces the built mask over the prompt.
        use_cache=False keeps the embedded sequence instead, and decoding recomputes all of it
        at every step (the reference for tests)."""
        features = (self.encode_eeg(x_eeg, input_chans, input_time, input_mask)
                    if x_eeg is not None else None)
        backbone = self.backbone
        x, positions, valid = backbone.embed_sequence(features, x_text, input_time, input_mask,
                                                      self.per_sample_text_positions)
        mask = build_attention_mask(positions, valid)
        if x_eeg is not None and eeg_text_mask is not None:
            mask = as_attention_mask(eeg_text_mask)
        if not use_cache:
            return Prefix(backbone.run(x, positions, mask)[:, -1], positions, valid, None, x,
                          mask)
        cache = backbone.new_cache(x.shape[1] + room)
        return Prefix(backbone.run(x, positions, mask, cache, last_n=1)[:, -1], positions, valid,
                      cache)

    @torch.no_grad()
    def decode(self, prefix: Prefix, max_new_tokens: int, temperature=1.0, top_k=None,
               do_sample: bool = False) -> torch.Tensor:
        """(B, max_new_tokens) new ids after the prefix: the one decoding loop (greedy unless
        do_sample). A row stops at the end-of-text id (eot_id) and is padded with it. Generated
        tokens see their sample's real EEG and all earlier text, never padding. The prefix's
        cache grows: a prefix is decoded once."""
        backbone, eot = self.backbone, self.text.eot_id
        positions, valid, h = prefix.positions, prefix.valid, prefix.last_hidden
        B, L0, device = positions.shape[0], positions.shape[1], positions.device
        x = prefix.embedded
        out, finished = [], torch.zeros(B, dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            nxt = self._next_token(h, temperature, top_k, do_sample)
            nxt = nxt.masked_fill(finished, eot)
            out.append(nxt)
            finished |= nxt == eot
            if finished.all() or step == max_new_tokens - 1:
                break
            new_pos = positions[:, -1:] + 1                                   # (B, 1)
            new_emb = backbone.embed_text(nxt[:, None], new_pos)              # (B, 1, C)
            positions = torch.cat((positions, new_pos), dim=1)
            valid = torch.cat((valid, torch.ones(B, 1, dtype=torch.bool, device=device)), dim=1)
            if prefix.cache is not None:
                step_mask = build_attention_mask(positions, valid, new_pos)
                h = backbone.run(new_emb, new_pos, step_mask, prefix.cache)[:, -1]  # (B, C)
            else:
                x = torch.cat((x, new_emb), dim=1)
                full_mask = build_attention_mask(positions, valid)
                full_mask[:, :, :L0, :L0] = prefix.prompt_mask
                h = backbone.run(x, positions, full_mask)[:, -1]
        ids = torch.stack(out, dim=1) if out else positions.new_empty(B, 0)
        pad = max_new_tokens - ids.shape[1]
        return torch.cat((ids, ids.new_full((B, pad), eot)), dim=1) if pad else ids

    def _scored_logits(self, h, ids):
        """fp32 text logits (..., V) of hidden states h (..., C) whose values at `ids` (..., m)
        are scored: a bf16 native head recomputes those in fp32 too (model/precision.py)."""
        logits = self.backbone.text_logits(h).float()
        if "GPT2" in self._modules:
            logits = exact_head_logits(self.GPT2.lm_head, logits, h, ids)
        return logits

    @torch.no_grad()
    def continuation_log_likelihoods(self, prefix: Prefix, continuations: torch.Tensor,
                                     lengths: torch.Tensor,
                                     max_rows: int | None = None) -> torch.Tensor:
        """(B, K) log-likelihood of each of K continuations (K, W) ids after every prefix row,
        summed over its first lengths[k] tokens under the text vocabulary (Backbone.text_logits).
        The first token is read from the prefix; the rest run as one block over a copy of the
        prefix's cache per (row, continuation), at most max_rows such rows per forward (the
        copies are what costs memory). The prefix is left unchanged."""
        if prefix.cache is None:
            raise ValueError("continuation_log_likelihoods needs a prefix read with use_cache")
        backbone = self.backbone
        first = F.log_softmax(self._scored_logits(prefix.last_hidden, continuations[:, 0]),
                              dim=-1)                                               # (B, V)
        scores = first[:, continuations[:, 0]]                                      # (B, K)
        B, (K, W) = first.shape[0], continuations.shape
        if W == 1:
            return scores
        device = continuations.device
        real = (torch.arange(1, W, device=device) < lengths[:, None]).float()       # (K, W-1)
        n_rows = B * K
        step = n_rows if not max_rows else max(1, max_rows)
        rest = []
        for lo in range(0, n_rows, step):
            row = torch.arange(lo, min(n_rows, lo + step), device=device)
            sample, option = row // K, row % K
            pos = prefix.positions[sample]
            new_pos = pos[:, -1:] + torch.arange(1, W, device=device)              # (R, W-1)
            all_pos = torch.cat((pos, new_pos), dim=1)
            all_valid = torch.cat((prefix.valid[sample],
                                   torch.ones_like(new_pos, dtype=torch.bool)), dim=1)
            ids = continuations[option]                                            # (R, W)
            h = backbone.run(backbone.embed_text(ids[:, :-1], new_pos), new_pos,
                             build_attention_mask(all_pos, all_valid, new_pos),
                             backbone.cache_rows(prefix.cache, sample))
            logp = F.log_softmax(self._scored_logits(h, ids[:, 1:, None]), dim=-1)  # (R, W-1, V)
            rest.append((logp.gather(-1, ids[:, 1:, None]).squeeze(-1) * real[option]).sum(-1))
        return scores + torch.cat(rest).view(B, K)

    @torch.no_grad()
    def generate(self, x_eeg, x_text, input_chans, input_time, input_mask, eeg_mask=None,
                 eeg_text_mask=None, max_new_tokens=10, temperature=1.0, top_k=None,
                 do_sample: bool | None = None, use_cache: bool = True):
        """(B, M + max_new_tokens) ids: the prompt x_text (B, M) followed by the new ids
        (`prefill`, then `decode`).

        Greedy unless asked to sample: do_sample=None samples only when temperature != 1 or
        top_k > 1 is given (top_k=1 is greedy). use_cache=False recomputes the whole sequence
        each step (the reference for tests).
        """
        if do_sample is None:
            do_sample = temperature != 1.0 or (top_k is not None and top_k > 1)
        prefix = self.prefill(x_eeg, x_text, input_chans, input_time, input_mask, eeg_text_mask,
                              room=max_new_tokens, use_cache=use_cache)
        return torch.cat((x_text, self.decode(prefix, max_new_tokens, temperature, top_k,
                                               do_sample)), dim=1)
