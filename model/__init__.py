"""NeuroLM's modules: the GPT, the neural tokenizer (VQ) and NeuroLM, with their checkpoints.

Names are imported on first use, so `from model.gpt2_bpe import encode` (text-only tools) does
not pay for importing torch.
"""
import importlib

_HOME = {
    "GPT": "model.model", "GPT_PRESETS": "model.model", "GPTConfig": "model.model",
    "build_attention_mask": "model.model", "load_hf_gpt2": "model.model",
    "NeuralTransformer": "model.model_neural_transformer",
    "NTConfig": "model.model_neural_transformer",
    "NeuroLM": "model.model_neurolm", "load_neurolm": "model.model_neurolm",
    "neurolm_checkpoint": "model.model_neurolm", "save_neurolm": "model.model_neurolm",
    "VQ": "model.model_vq", "VQ_Align": "model.model_vq", "load_vq": "model.model_vq",
    "save_vq": "model.model_vq", "vq_checkpoint": "model.model_vq",
}
__all__ = sorted(_HOME)


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
