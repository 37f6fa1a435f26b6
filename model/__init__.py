"""NeuroLM's modules: the GPT, the neural tokenizer (VQ), NeuroLM, and their checkpoints.

Names are imported on first use, so `from model.gpt2_bpe import encode` (text-only tools) does
not pay for importing torch.
"""

_HOME = {
    **dict.fromkeys(("GPT", "GPT_PRESETS", "GPTConfig", "build_attention_mask"), "model"),
    **dict.fromkeys(("gpt_from_hf", "load_hf_gpt2"), "gpt2_hf"),
    **dict.fromkeys(("NeuralTransformer", "NTConfig"), "model_neural_transformer"),
    "NeuroLM": "model_neurolm",
    **dict.fromkeys(("VQ", "VQ_Align", "CODEBOOK_SIZE", "next_second_targets"), "model_vq"),
    **dict.fromkeys(("CheckpointError", "build_neurolm_from_checkpoint",
                     "build_vq_from_checkpoint", "checked_args", "load_state_dict_checked",
                     "neurolm_checkpoint", "neurolm_layout", "unwrap", "vq_checkpoint",
                     "vq_layout"), "checkpoints"),
    **dict.fromkeys(("LM_PRESETS", "build_gpt", "load_neurolm", "load_vq", "neurolm_from_vq",
                     "new_neurolm"), "build"),
    # not the writer `export`: that name is its module (`from model.export import export`)
    **dict.fromkeys(("exported_state", "is_exported", "load_checkpoint", "read_exported"),
                    "export"),
}
__all__ = sorted(_HOME)


def _home_module(home: str):
    # plain imports (no importlib), so the architecture tests see every dependency
    if home == "model":
        import model.model as module
    elif home == "gpt2_hf":
        import model.gpt2_hf as module
    elif home == "model_neural_transformer":
        import model.model_neural_transformer as module
    elif home == "model_neurolm":
        import model.model_neurolm as module
    elif home == "model_vq":
        import model.model_vq as module
    elif home == "checkpoints":
        import model.checkpoints as module
    elif home == "build":
        import model.build as module
    else:
        import model.export as module
    return module


def __getattr__(name):
    if name not in _HOME:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(_home_module(_HOME[name]), name)
    globals()[name] = value
    return value
