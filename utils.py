"""Training core shared by train_vq.py, train_pretrain.py and train_instruction.py.

The code lives in the `training/` package (runtime, optim, data, checkpoint, logger, plotting,
args); this module is the one import point, so trainers write `from utils import ...`.

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
from training import *  # noqa: F401,F403
from training import __all__  # noqa: F401
