"""A NeuroLM on a Hugging Face backbone inside a NeuroLM checkpoint, self-contained.

Instead of the native layout's "model_args", such a checkpoint carries under "backbone" what
rebuilds the LM without its folder: the architecture, its transformers config, the attention
implementation, and the text tokenizer (tokenizer.json, with the [SEP] it was trained with).
Its weights are the state dict's "LM.*" (the transformers model's own names) and "eeg_head.*",
beside the usual "tokenizer.*", "pos_embed.*", "encode_transform_layer.*".
"""
from __future__ import annotations

from torch import nn

from model.backbone import BackboneError
from model.hf_backbone import ATTENTION_IMPLEMENTATIONS, SUPPORTED_ARCHITECTURES
from model.model_neural_transformer import NTConfig
from model.model_neurolm import NeuroLM
from model.text_tokenizer import HFTextTokenizer

BACKBONE_KEY = "backbone"


def is_hf_neurolm(model: nn.Module) -> bool:
    return "LM" in model._modules


def backbone_layout(model: NeuroLM) -> dict:
    """The "backbone" entry of a checkpoint of `model` (plain types only)."""
    config = model.LM.config
    return {"model_type": config.model_type, "config": config.to_dict(),
            "attn_implementation": config._attn_implementation, "text": model.text.state()}


def neurolm_from_layout(layout, source: str, encoder_config: NTConfig, n_eeg_codes: int,
                        per_sample_text_positions: bool = True) -> NeuroLM:
    """A NeuroLM (random weights) of the shape a checkpoint's "backbone" entry describes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not isinstance(layout, dict) or not isinstance(layout.get("config"), dict):
        raise BackboneError(f"{source}: '{BACKBONE_KEY}' holds no transformers config")
    model_type, attn = layout.get("model_type"), layout.get("attn_implementation", "sdpa")
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise BackboneError(f"{source}: backbone architecture {model_type!r} is not supported "
                            f"(supported: {', '.join(SUPPORTED_ARCHITECTURES)})")
    if attn not in ATTENTION_IMPLEMENTATIONS:
        attn = "sdpa"   # e.g. trained elsewhere with a kernel this machine may lack
    settings = {k: v for k, v in layout["config"].items() if k != "model_type"}
    try:
        config = AutoConfig.for_model(model_type, **settings)
    except (TypeError, ValueError) as err:
        raise BackboneError(f"{source}: unusable backbone config ({' '.join(str(err).split())})")
    lm = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    text = HFTextTokenizer.from_state(layout.get("text"), source)
    return NeuroLM(None, encoder_config, n_eeg_codes=n_eeg_codes,
                   per_sample_text_positions=per_sample_text_positions, hf_lm=lm, text=text)
