"""NeuroLM's modules: the GPT, the neural tokenizer (VQ), NeuroLM, and their checkpoints.

Names are imported on first use, so `from model.gpt2_bpe import encode` (text-only tools) does
not pay for importing torch.
"""
import importlib

_HOME = {
    "GPT": "model.model", "GPT_PRESETS": "model.model", "GPTConfig": "model.model",
    "build_attention_mask": "model.model", "load_hf_gpt2": "model.model",
    "NeuralTransformer": "model.model_neural_transformer",
    "NTConfig": "model.model_neural_transformer",
    "NeuroLM": "model.model_neurolm",
    "VQ": "model.model_vq", "VQ_Align": "model.model_vq", "CODEBOOK_SIZE": "model.model_vq",
    **{name: "model.checkpoints" for name in (
        "CheckpointError", "LM_PRESETS", "build_gpt", "build_vq_from_checkpoint",
        "load_checkpoint", "load_neurolm", "load_state_dict_checked", "load_vq",
        "neurolm_checkpoint", "neurolm_from_vq", "neurolm_layout", "new_neurolm", "unwrap",
        "vq_checkpoint", "vq_layout")},
}
__all__ = sorted(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
