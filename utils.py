"""Training core shared by train_vq.py, train_pretrain.py and train_instruction.py.

The code lives in the `training/` package (runtime, optim, data, checkpoint, io, logger,
plotting, args, loop); this module is the one import point of it for the stage scripts,
dataset.py, downstream_dataset.py and simple_inference.py, which write `from utils import ...`.
Names are re-exported one by one, so `__all__` below is the API they may use.

A trainer's loop, in outline::

    runtime = setup_runtime(args.device, args.seed, args.dtype)
    model = prepare_model(build_model(), runtime, compile=args.compile)
    optimizer = configure_optimizer(unwrap(model), args.lr, args.weight_decay,
                                    (args.beta1, args.beta2), runtime.device_type)
    scaler = runtime.make_grad_scaler()
    loader = make_loader(train_set, args.batch_size, runtime, shuffle=True,
                         num_workers=args.num_workers, seed=args.seed, drop_last=True)
    ckpt = Checkpointer(args.out_dir, args.keep_checkpoints, is_main=runtime.is_main)
    iter_num, epoch, step_in_epoch = 0, 0, 0
    if (path := resolve_resume(args.resume, args.out_dir)) is not None:
        iter_num, epoch, step_in_epoch = restore_training_state(
            load_checkpoint(path), model, optimizer, scaler)
        epoch, step_in_epoch = resume_position(epoch, step_in_epoch, loader.batches_per_epoch)
    while iter_num < total_steps:
        loader.set_epoch(epoch, skip_batches=step_in_epoch)
        for batch in loader:       # grad_accum micro-batches per optimizer step
            with accumulation_context(model, micro, args.grad_accum), runtime.autocast():
                loss = model(...) / args.grad_accum
                scaler.scale(loss).backward()
            ... optimizer_step(optimizer, scaler, args.grad_clip, step=iter_num) ...
            step_in_epoch counts loader batches, iter_num optimizer steps; save with
            ckpt.save(training_state(model, optimizer, scaler, iter_num, epoch, step_in_epoch,
                      config=args, model_args=...), iter_num)
        epoch, step_in_epoch = epoch + 1, 0
    cleanup_runtime()
"""
from training import (  # noqa: F401  (re-exported by name)
    CENTERING_SAMPLES,
    CONFIG_KEY,
    CURVES_NAME,
    DTYPE_CHOICES,
    EPOCH_KEY,
    ITER_NUM_KEY,
    MODEL_KEY,
    OPTIMIZER_KEY,
    RNG_KEY,
    SCALER_KEY,
    STAGE_KEY,
    STEP_IN_EPOCH_KEY,
    USER_ERROR_EXIT,
    Checkpointer,
    CheckpointError,
    Logger,
    Progress,
    ResumableLoader,
    ResumableSampler,
    Runtime,
    Stage,
    StepResult,
    UserError,
    accumulation_context,
    add_common_args,
    add_public_alias,
    atomic_torch_save,
    atomic_write,
    capture_rng_state,
    center_channel_embedding,
    checkpoint_state,
    cleanup_runtime,
    configure_optimizer,
    cosine_lr,
    decay_groups,
    default_num_workers,
    distributed_env,
    draw_text_batch,
    find_ddp,
    fit,
    format_line,
    is_complete_checkpoint,
    is_sharded,
    json_safe,
    load_checkpoint,
    load_sharded,
    make_loader,
    maybe_compile,
    one_line,
    optimizer_step,
    parse_with_preset,
    plot_curves,
    plot_metrics,
    prepare_model,
    read_metrics,
    resolve_amp_dtype,
    resolve_device,
    resolve_resume,
    restore_rng_state,
    restore_training_state,
    resume_position,
    run_stage,
    save_figure,
    save_sharded,
    schedule_steps,
    seed_everything,
    set_lr,
    setup_runtime,
    shard_model,
    sharded_to_single_file,
    single_file_to_sharded,
    spread_batch,
    spread_indices,
    stage_parser,
    step_with_mean_log,
    to_device,
    to_plain,
    train_main,
    training_state,
    unwrap,
    write_json,
)

__all__ = [
    "accumulation_context", "add_common_args", "add_public_alias", "atomic_torch_save",
    "atomic_write", "capture_rng_state", "center_channel_embedding", "CENTERING_SAMPLES",
    "checkpoint_state", "Checkpointer", "CheckpointError", "cleanup_runtime", "CONFIG_KEY",
    "configure_optimizer", "cosine_lr", "CURVES_NAME", "decay_groups", "default_num_workers",
    "distributed_env", "draw_text_batch", "DTYPE_CHOICES", "EPOCH_KEY", "find_ddp", "fit",
    "format_line", "is_complete_checkpoint", "is_sharded", "ITER_NUM_KEY", "json_safe",
    "load_checkpoint", "load_sharded", "Logger", "make_loader", "maybe_compile", "MODEL_KEY",
    "one_line", "OPTIMIZER_KEY", "optimizer_step", "parse_with_preset", "plot_curves",
    "plot_metrics", "prepare_model", "Progress", "read_metrics", "resolve_amp_dtype",
    "resolve_device", "resolve_resume", "restore_rng_state", "restore_training_state",
    "ResumableLoader", "ResumableSampler", "resume_position", "RNG_KEY", "run_stage", "Runtime",
    "save_figure", "save_sharded", "SCALER_KEY", "schedule_steps", "seed_everything", "set_lr",
    "setup_runtime", "shard_model", "sharded_to_single_file", "single_file_to_sharded",
    "spread_batch", "spread_indices", "Stage", "STAGE_KEY", "stage_parser", "STEP_IN_EPOCH_KEY",
    "step_with_mean_log", "StepResult", "to_device", "to_plain", "train_main", "training_state",
    "unwrap", "USER_ERROR_EXIT", "UserError", "write_json",
]
