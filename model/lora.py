"""LoRA on a NeuroLM's Hugging Face backbone, through `peft`.

`add_lora(model, LoraSettings(rank=8))` wraps the backbone (`model.LM`) in peft's LoRA: every
weight of the language model is frozen and low-rank adapters are added to its attention and
MLP projections; the EEG side (projection, channel embedding, EEG-code head) stays trained and
the VQ encoder stays frozen. `trainable_parameters` gives the trained share; `merge_lora` folds
the adapters into the weights (a plain model again, same outputs); `save_adapter` writes an
adapter folder that peft itself loads onto the base folder's model.

The [SEP] token's rows (input embedding, and text head when not tied to it) train as peft's
trainable tokens: always, not only when NeuroLM added the row, since a row the tokenizer
already had was trained for another role or not at all (Qwen's padding rows past its
tokenizer), and full fine-tuning trains it too. peft keeps those rows' new values (not a
difference to the base), so a checkpoint holds 2 x width numbers for them instead of the
whole embedding and head.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from model.backbone import BackboneError

# Projections adapted per architecture: attention and MLP, the usual LoRA targets (GPT-2's are
# Conv1D layers with transposed weights, hence fan_in_fan_out).
DEFAULT_TARGETS = {
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
}


@dataclass
class LoraSettings:
    rank: int = 8                   # r: rank of each adapter
    alpha: float | None = None      # scale alpha / rank; None: 2 x rank (a common default)
    dropout: float = 0.05           # on the adapters' input
    target_modules: tuple[str, ...] | None = None   # None: DEFAULT_TARGETS of the architecture

    def check(self) -> None:
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise BackboneError(f"--lora_rank {self.rank!r}: expected an integer >= 1")
        if self.alpha is not None and not (0 < float(self.alpha) < float("inf")):
            raise BackboneError(f"--lora_alpha {self.alpha!r}: expected a finite number > 0")
        if not 0 <= float(self.dropout) < 1:
            raise BackboneError(f"--lora_dropout {self.dropout!r}: expected 0 <= dropout < 1")


def add_lora(model: nn.Module, settings: LoraSettings) -> None:
    """Wrap model.LM (a NeuroLM on a Hugging Face backbone) in peft LoRA, in place."""
    from peft import LoraConfig, get_peft_model

    settings.check()
    if "LM" not in model._modules:
        raise BackboneError("LoRA needs a Hugging Face backbone (--init_from FOLDER); the "
                            "native GPT is fine-tuned in full")
    model_type = model.LM.config.model_type
    targets = list(settings.target_modules or DEFAULT_TARGETS[model_type])
    config = LoraConfig(r=settings.rank,
                        lora_alpha=settings.alpha if settings.alpha is not None
                        else 2 * settings.rank,
                        lora_dropout=settings.dropout, target_modules=targets, bias="none",
                        fan_in_fan_out=model_type == "gpt2",
                        trainable_token_indices=_sep_rows(model.LM, model.text.sep_id))
    try:
        model.LM = get_peft_model(model.LM, config)
    except ValueError as err:   # e.g. a target module the model does not have
        raise BackboneError(f"LoRA on {model_type}: {' '.join(str(err).split())}")


def _sep_rows(lm: nn.Module, sep_id: int) -> dict[str, list[int]]:
    """peft's trainable_token_indices: the [SEP] row of the input embedding and of the text
    head (peft ties the two when the model's config ties them)."""
    rows = lm.get_input_embeddings().weight.shape[0]
    if not 0 <= sep_id < rows:
        raise BackboneError(f"[SEP] id {sep_id} is outside the token embedding ({rows} rows)")
    names = {id(m): n for n, m in lm.named_modules()}
    return {names[id(layer)]: [int(sep_id)]
            for layer in (lm.get_input_embeddings(), lm.get_output_embeddings())}


def trainable_tokens(lm: nn.Module) -> list[int]:
    """The token ids whose rows train beside the adapters of a peft-wrapped LM."""
    rows = lm.peft_config["default"].trainable_token_indices or {}
    return sorted({int(i) for ids in rows.values() for i in ids})


def token_rows(layer: nn.Module):
    """(base weight, ids, their trained rows) of an embedding or head under peft's trainable
    tokens; (weight, None, None) for a plain layer or merged rows. The model reads the base
    weight with these few rows in place of its own: peft's `.weight` and forward build the whole
    merged vocabulary x width matrix on every call instead (on a CPU, longer than the text
    head's product itself, once per decoding step)."""
    adapter = getattr(layer, "token_adapter", None)
    if adapter is None:
        return layer.weight, None, None
    base = adapter.get_base_layer().weight
    active = [a for a in adapter.active_adapters if a in adapter.trainable_tokens_delta]
    if adapter.merged or adapter.disable_adapters or not active:
        return base, None, None
    ids = torch.as_tensor(adapter.token_indices[active[0]], device=base.device)
    return base, ids, adapter.trainable_tokens_delta[active[0]]


def embed_tokens(layer: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """layer(ids) for a token embedding, its trainable tokens' rows read from their own."""
    _, rows, values = token_rows(layer)
    if rows is None:
        return layer(ids)
    out = layer.token_adapter.get_base_layer()(ids)
    for row, value in zip(rows, values):
        out = torch.where((ids == row)[..., None], value.to(out.dtype), out)
    return out


def head_logits(layer: nn.Module, hidden: torch.Tensor, n_rows: int) -> torch.Tensor:
    """hidden @ layer.weight[:n_rows].T for a text head, its trainable tokens' logits from
    their own rows."""
    weight, rows, values = token_rows(layer)
    logits = nn.functional.linear(hidden, weight[:n_rows])
    if rows is not None:
        kept = rows < n_rows
        logits[..., rows[kept]] = nn.functional.linear(hidden, values[kept].to(hidden.dtype))
    return logits


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trained, all) parameter counts; shared tensors counted once."""
    seen, trained, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trained += p.numel() if p.requires_grad else 0
    return trained, total


def merge_lora(model: nn.Module) -> None:
    """Fold the adapters into the backbone's weights, in place: model.LM is a plain
    transformers model again (what a full checkpoint or export holds)."""
    model.LM = model.LM.merge_and_unload()


def save_adapter(model: nn.Module, folder) -> None:
    """The adapters as a peft adapter folder (adapter_config.json + weights: the adapters and
    [SEP]'s trainable rows, not the embeddings; + the text tokenizer when it is a Hugging Face
    one), loadable with peft.PeftModel.from_pretrained(base_model, folder) once the base is
    grown to the tokenizer's length, or AutoPeftModelForCausalLM, which grows it (the grown
    rows' values do not matter: [SEP]'s come from the adapter)."""
    settings = model.LM.peft_config["default"]     # peft names the base by the path it was
    if settings.base_model_name_or_path:           # read from: say where it is from anywhere
        settings.base_model_name_or_path = str(Path(settings.base_model_name_or_path).resolve())
    model.LM.save_pretrained(folder, save_embedding_layers=False)
    tokenizer = getattr(model.text, "tokenizer", None)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
