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
from training import (  # noqa: F401  (re-exported)
    # checkpoints
    CONFIG_KEY,
    # the shared loop
    CURVES_NAME,
    # runtime
    DTYPE_CHOICES,
    EPOCH_KEY,
    ITER_NUM_KEY,
    MODEL_KEY,
    OPTIMIZER_KEY,
    RNG_KEY,
    SCALER_KEY,
    STAGE_KEY,
    STEP_IN_EPOCH_KEY,
    # user errors
    USER_ERROR_EXIT,
    Checkpointer,
    CheckpointError,
    # logging and plots
    Logger,
    # data
    ResumableLoader,
    ResumableSampler,
    Runtime,
    Stage,
    # optimisation
    StepResult,
    UserError,
    # model wrapping
    accumulation_context,
    # command line
    add_common_args,
    add_public_alias,
    # files: atomic writers, strict JSON
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
    json_safe,
    load_checkpoint,
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
    schedule_steps,
    seed_everything,
    set_lr,
    setup_runtime,
    spread_batch,
    spread_indices,
    stage_parser,
    to_device,
    to_plain,
    train_main,
    training_state,
    unwrap,
    write_json,
)

__all__ = [
    "DTYPE_CHOICES", "Runtime", "cleanup_runtime", "distributed_env", "resolve_amp_dtype",
    "resolve_device", "seed_everything", "setup_runtime",
    "accumulation_context", "center_channel_embedding", "find_ddp", "maybe_compile",
    "prepare_model", "unwrap",
    "StepResult", "configure_optimizer", "cosine_lr", "decay_groups", "optimizer_step", "set_lr",
    "ResumableLoader", "ResumableSampler", "default_num_workers", "make_loader",
    "resume_position", "spread_batch", "spread_indices",
    "atomic_torch_save", "atomic_write", "json_safe", "save_figure", "to_plain", "write_json",
    "CONFIG_KEY", "EPOCH_KEY", "ITER_NUM_KEY", "MODEL_KEY", "OPTIMIZER_KEY", "RNG_KEY",
    "SCALER_KEY", "STAGE_KEY", "STEP_IN_EPOCH_KEY", "CheckpointError", "Checkpointer", "capture_rng_state",
    "is_complete_checkpoint", "load_checkpoint", "resolve_resume", "restore_rng_state",
    "restore_training_state", "training_state",
    "Logger", "format_line", "plot_metrics", "read_metrics",
    "add_common_args", "add_public_alias", "parse_with_preset", "schedule_steps", "stage_parser",
    "UserError", "USER_ERROR_EXIT", "one_line",
    "CURVES_NAME", "Stage", "checkpoint_state", "draw_text_batch", "fit", "plot_curves",
    "run_stage", "to_device", "train_main",
]
