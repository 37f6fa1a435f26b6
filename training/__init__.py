"""The training library every stage shares: typed run values (config), the loop (loop), its
checkpoints, data loading, runtime, optimisation, logging and plots. It imports nothing of the
application (only `model/` for the checkpoint layouts); stage scripts reach it through `utils`."""
from model.checkpoints import CheckpointError, unwrap
from model.export import load_checkpoint

from .args import (
    RUN_CONFIG_NAME,
    add_common_args,
    add_public_alias,
    number,
    parse_with_preset,
    read_config,
    stage_parser,
)
from .checkpoint import (
    CONFIG_KEY,
    EPOCH_KEY,
    ITER_NUM_KEY,
    MODEL_KEY,
    OPTIMIZER_KEY,
    RNG_KEY,
    SCALER_KEY,
    STAGE_KEY,
    STEP_IN_EPOCH_KEY,
    Checkpointer,
    capture_rng_state,
    is_complete_checkpoint,
    resolve_resume,
    restore_rng_state,
    restore_training_state,
    training_state,
)
from .config import RunArgs, TrainArgs
from .data import (
    ResumableLoader,
    ResumableSampler,
    collate_tensors,
    default_num_workers,
    make_loader,
    resume_position,
    spread_batch,
    spread_indices,
)
from .errors import USER_ERROR_EXIT, UserError, one_line
from .fsdp import is_sharded, shard_model
from .io import atomic_torch_save, atomic_write, json_safe, run_lock, to_plain, write_json
from .logger import Logger, format_line
from .loop import (
    CURVES_NAME,
    Progress,
    Stage,
    checkpoint_state,
    draw_text_batch,
    fit,
    plot_curves,
    progress_bar,
    run_main,
    run_stage,
    step_with_mean_log,
    to_device,
    train_main,
    validation_batches,
)
from .modeling import (
    CENTERING_SAMPLES,
    accumulation_context,
    center_channel_embedding,
    find_ddp,
    maybe_compile,
    prepare_model,
)
from .optim import StepResult, configure_optimizer, cosine_lr, decay_groups, optimizer_step, set_lr
from .plotting import plot_metrics, read_metrics, save_figure
from .runtime import (
    DTYPE_CHOICES,
    Runtime,
    cleanup_runtime,
    distributed_env,
    release_freed_memory,
    resolve_amp_dtype,
    resolve_device,
    reuse_freed_memory,
    seed_everything,
    setup_runtime,
)

__all__ = [
    # typed run values
    "TrainArgs", "RunArgs",
    # runtime
    "Runtime", "setup_runtime", "cleanup_runtime", "seed_everything", "distributed_env",
    "resolve_device", "resolve_amp_dtype", "reuse_freed_memory", "release_freed_memory",
    "DTYPE_CHOICES",
    # model wrapping
    "maybe_compile", "unwrap", "find_ddp", "prepare_model", "accumulation_context",
    "center_channel_embedding", "CENTERING_SAMPLES",
    # fully sharded (FSDP2)
    "shard_model", "is_sharded",
    # optimisation
    "cosine_lr", "set_lr", "decay_groups", "configure_optimizer", "optimizer_step", "StepResult",
    # data
    "make_loader", "collate_tensors", "ResumableLoader", "ResumableSampler", "default_num_workers",
    "resume_position", "spread_indices", "spread_batch",
    # checkpoints and files
    "Checkpointer", "atomic_torch_save", "atomic_write", "save_figure", "load_checkpoint",
    "CheckpointError", "is_complete_checkpoint", "resolve_resume", "capture_rng_state",
    "restore_rng_state", "training_state", "restore_training_state", "to_plain", "json_safe",
    "write_json", "run_lock", "MODEL_KEY", "OPTIMIZER_KEY", "SCALER_KEY", "ITER_NUM_KEY",
    "EPOCH_KEY", "STEP_IN_EPOCH_KEY", "RNG_KEY", "CONFIG_KEY", "STAGE_KEY",
    # user errors
    "UserError", "USER_ERROR_EXIT", "one_line",
    # logging
    "Logger", "format_line", "plot_metrics", "read_metrics", "progress_bar",
    # command line and run configs
    "add_common_args", "add_public_alias", "parse_with_preset", "stage_parser", "number",
    "read_config", "RUN_CONFIG_NAME",
    # the shared loop
    "Stage", "Progress", "fit", "run_stage", "checkpoint_state", "draw_text_batch", "to_device",
    "plot_curves", "CURVES_NAME", "train_main", "run_main",
    "validation_batches", "step_with_mean_log",
]
