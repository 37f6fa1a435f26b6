"""A NeuroLM on a Hugging Face backbone inside a NeuroLM checkpoint, self-contained.

Instead of the native layout's "model_args", such a checkpoint carries under "backbone" what
rebuilds the LM without its folder: the architecture, its transformers config, the attention
implementation, and the text tokenizer (tokenizer.json, with the [SEP] it was trained with).
Its weights are the state dict's "LM.*" (the transformers model's own names) and "eeg_head.*",
beside the usual "tokenizer.*", "pos_embed.*", "encode_transform_layer.*". A LoRA checkpoint
holds only what was trained (the adapters, [SEP]'s rows as peft trainable tokens, the EEG
side), never the base's embedding or head, and names its base folder with a hash of it: it is
rebuilt on that folder, grown by [SEP] as training grew it, and refused on any other.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from model.backbone import BackboneError
from model.hf_backbone import ATTENTION_IMPLEMENTATIONS, SUPPORTED_ARCHITECTURES
from model.lora import trainable_tokens
from model.model_neural_transformer import NTConfig
from model.model_neurolm import NeuroLM
from model.text_tokenizer import HFTextTokenizer

BACKBONE_KEY = "backbone"
ADAPTER_KEY = "lora_adapter"    # peft adapter weights beside "model" (an exported adapter)


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


def grow_embeddings(lm: nn.Module, rows: int) -> None:
    """Grow the token embedding (and an untied text head) of a transformers model to `rows`,
    each new row the mean of the old ones, computed in float64: the same bits wherever the
    same base is grown (transformers' mean_resizing samples around the mean with the global
    random generator, and computes a vocabulary-sized covariance first)."""
    old = lm.get_input_embeddings().weight.shape[0]
    if old >= rows:
        return
    lm.resize_token_embeddings(rows, mean_resizing=False)
    layers = {id(m.weight): m.weight for m in (lm.get_input_embeddings(),
                                                lm.get_output_embeddings()) if m is not None}
    with torch.no_grad():
        for weight in layers.values():
            weight[old:] = weight[:old].double().mean(0).to(weight.dtype)


# ----------------------------------------------------------------------------------------------
# LoRA: the checkpoint holds what was trained, the base weights stay in the base folder


def is_lora(model: nn.Module) -> bool:
    return is_hf_neurolm(model) and hasattr(model.LM, "peft_config")


_IDENTITIES: dict = {}     # (folder, its files' names, sizes, mtimes) -> identity


def base_identity(folder) -> str:
    """A hash of a model folder's config.json and weight files: their names, sizes, safetensors
    headers (every tensor's name, dtype, shape) and 64 evenly spread 4 KiB samples of their
    bytes (two fine-tunes of one architecture differ there; reading a 10 GB folder whole would
    take minutes). Remembered per folder while its files keep their sizes and modification
    times: every checkpoint of a LoRA run names its base, and saves should not re-read it."""
    folder = Path(folder).resolve()
    files = [folder / "config.json"] + sorted(
        p for p in folder.iterdir()
        if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json"))
    key = (str(folder), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if key not in _IDENTITIES:
        if len(_IDENTITIES) >= 64:
            _IDENTITIES.clear()
        _IDENTITIES[key] = _folder_hash(files)
    return _IDENTITIES[key]


def note_base(lm: nn.Module, folder) -> None:
    """Remember on a transformers model the folder its weights were read from and that folder's
    identity now: a LoRA checkpoint names the base the adapters were trained on, even when the
    folder changes during the run (the identity read at save time would then name another)."""
    lm.neurolm_base = (str(Path(folder).resolve()), base_identity(folder))


def _folder_hash(files: list[Path]) -> str:
    digest = hashlib.sha256(files[0].read_bytes())
    for path in files[1:]:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            if path.suffix == ".safetensors":
                digest.update(f.read(8 + int.from_bytes(f.read(8), "little")))
            for k in range(64):
                f.seek(size * k // 64)
                digest.update(f.read(4096))
    return "sha256:" + digest.hexdigest()


def hf_parts(model: nn.Module) -> tuple[dict, dict] | None:
    """(state dict, "backbone" entry) of a NeuroLM on a Hugging Face backbone; None for the
    native GPT. With LoRA the state holds the adapters, [SEP]'s trainable rows and the EEG
    side, not the frozen base (its embedding and head included), and the entry names the base
    folder and its identity."""
    if not is_hf_neurolm(model):
        return None
    state, layout = model.state_dict(), backbone_layout(model)
    if is_lora(model):
        state = _trained_state(model)
        settings = model.LM.peft_config["default"]
        base = model.LM.get_base_model()
        if getattr(base, "neurolm_base", None) is None:   # built elsewhere: the folder as it is
            note_base(base, base.config._name_or_path)
        layout["lora"] = {"rank": settings.r, "alpha": settings.lora_alpha,
                          "dropout": settings.lora_dropout,
                          "target_modules": sorted(settings.target_modules),
                          "trainable_tokens": trainable_tokens(model.LM),
                          "embedding_rows": base.config.vocab_size}
        layout["base_folder"], layout["base_identity"] = base.neurolm_base
    return state, layout


def _trained_state(model: NeuroLM) -> dict:
    """The state dict of a NeuroLM with LoRA less the frozen base: the adapters, the trainable
    tokens' rows (once: a tied head shares the embedding's) and everything outside the LM."""
    every = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    shared = every - {n for n, _ in model.named_parameters()}
    return {k: v for k, v in model.state_dict().items()
            if k not in shared and (not k.startswith("LM.") or ".lora_" in k
                                    or ".trainable_tokens_delta." in k)}


def lora_neurolm(layout: dict, sd: dict, source: str, encoder_config: NTConfig,
                 n_eeg_codes: int, per_sample_text_positions: bool = True, base_folder=None,
                 adapter: dict | None = None) -> NeuroLM:
    """A NeuroLM with LoRA from its checkpoint: the base folder it names (or `base_folder`, where
    that folder is now; refused either way when its identity differs), the same adapters, then
    the checkpoint's weights. `adapter`: the adapter weights as a peft adapter folder holds them
    (an exported adapter, model/export.py), loaded by peft itself; `sd` then holds the rest."""
    from model.hf_backbone import load_causal_lm
    from model.lora import LoraSettings, add_lora

    lora = layout.get("lora") or {}
    if not {"trainable_tokens", "embedding_rows"} <= lora.keys():
        raise BackboneError(f"{source}: a LoRA checkpoint of an earlier layout (it stores the "
                            f"whole token embedding and head); train it again")
    stored = str(layout.get("base_folder"))
    folder = Path(stored if base_folder is None else base_folder)
    if not (folder / "config.json").is_file():
        moved = ("" if base_folder is not None else
                 "; if it moved, give its new place (--base_folder FOLDER)")
        raise BackboneError(f"{source}: its base model folder {folder} is missing (LoRA "
                            f"checkpoints hold only what was trained){moved}")
    if base_identity(folder) != layout.get("base_identity"):
        raise BackboneError(f"{source}: {folder} is not the base model it was trained on "
                            f"(its config or weights differ from {stored}'s)")
    lm = load_causal_lm(folder, layout.get("attn_implementation", "sdpa"))
    note_base(lm, folder)
    text = HFTextTokenizer.from_state(layout.get("text"), source)
    grow_embeddings(lm, text.n_words)       # as neurolm_on_hf grew it for training
    rows, trained_rows = lm.get_input_embeddings().weight.shape[0], lora.get("embedding_rows")
    if rows != trained_rows:
        raise BackboneError(f"{source}: its base grows to {rows} token rows with its tokenizer, "
                            f"the model was trained with {trained_rows}")
    model = NeuroLM(None, encoder_config, n_eeg_codes=n_eeg_codes,
                    per_sample_text_positions=per_sample_text_positions, hf_lm=lm, text=text)
    add_lora(model, LoraSettings(rank=lora.get("rank"), alpha=lora.get("alpha"),
                                 dropout=lora.get("dropout", 0.0),
                                 target_modules=tuple(lora.get("target_modules") or ())))
    if trainable_tokens(model.LM) != lora["trainable_tokens"]:
        raise BackboneError(f"{source}: trained the rows of tokens {lora['trainable_tokens']}, "
                            f"its tokenizer's [SEP] is {text.sep_id}")
    from_adapter = _load_adapter(model, adapter, source) if adapter is not None else set()
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as err:
        raise BackboneError(f"{source}: weights do not fit ({' '.join(str(err).split())[:300]})")
    absent = sorted((set(_trained_state(model)) & set(missing)) - from_adapter)
    if unexpected or absent:
        raise BackboneError(f"{source}: weights do not fit its LoRA layout (missing "
                            f"{absent[:5]}, unexpected {unexpected[:5]})")
    return model


def _load_adapter(model: NeuroLM, adapter: dict, source: str) -> set[str]:
    """Load peft adapter weights into model.LM with peft's own loader; -> the NeuroLM state
    names they filled."""
    from peft import set_peft_model_state_dict

    try:
        result = set_peft_model_state_dict(model.LM, adapter)
    except (RuntimeError, ValueError) as err:
        raise BackboneError(f"{source}: adapter weights do not fit "
                            f"({' '.join(str(err).split())[:300]})")
    if result.unexpected_keys:
        raise BackboneError(f"{source}: adapter weights the model does not have: "
                            f"{sorted(result.unexpected_keys)[:5]}")
    return {"LM." + k for k in set(model.LM.state_dict()) - set(result.missing_keys)}
