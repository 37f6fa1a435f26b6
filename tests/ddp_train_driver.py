r"""Run train_vq.py, train_pretrain.py or train_instruction.py under torchrun and save every
rank's final parameters.

    python -m torch.distributed.run --nproc_per_node=2 tests/ddp_train_driver.py \
        vq|pretrain|instruction \
        DUMP_DIR <trainer flags...>

Each rank writes DUMP_DIR/rank<r>.pt (its unwrapped state dict) so a test can compare ranks;
checkpoints alone cannot show this, since only rank 0 writes them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch  # noqa: E402

import train_instruction  # noqa: E402
import train_pretrain  # noqa: E402
import train_vq  # noqa: E402
import training  # noqa: E402
import utils  # noqa: E402

TRAINERS = {"vq": train_vq, "pretrain": train_pretrain, "instruction": train_instruction}


def main(argv: list[str]) -> None:
    which, dump_dir, rest = argv[0], Path(argv[1]), argv[2:]
    trainer = TRAINERS[which]
    args = trainer.parse_args(rest)
    try:
        stage = trainer.build_stage(args)
        config = utils.run_config(args)
        training.run_stage(stage, training.RunArgs.from_mapping(config),
                           training.TrainArgs.from_mapping(config), config)
        dump_dir.mkdir(parents=True, exist_ok=True)
        # the whole state on every rank, sharded (--fsdp) or not: a collective
        model_state = training.training_state(stage.model)["model"]
        state = {k: v.detach().cpu() for k, v in model_state.items()}
        torch.save(state, dump_dir / f"rank{stage.runtime.rank}.pt")
    finally:
        training.cleanup_runtime()


if __name__ == "__main__":
    main(sys.argv[1:])
