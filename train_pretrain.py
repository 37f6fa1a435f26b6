r"""Stage 3: multi-channel autoregressive pretraining of NeuroLM.

    python train_pretrain.py --tokenizer_path runs/vq/last.pt --dataset_dir data/tuh_pretrain \
        --text_dir data/text --out_dir runs/pretrain [--model gpt2] [--init_from /models/gpt2]

The frozen VQ checkpoint gives both the LM's EEG encoder (its "VQ.encoder.*" weights become
"tokenizer.*") and the targets: the VQ code of the same channel one second later (tokens of the
last second and padding are ignored, -1). Every optimizer step adds the LM loss of a batch of
`<text_dir>/train.bin` windows. Validation each epoch: EEG loss, EEG token accuracy, perplexity.
Checkpoints are in the public NeuroLM layout (GPT2.*, tokenizer.*, pos_embed.*,
encode_transform_layer.*, "model_args"; a Hugging Face backbone: model/hf_checkpoint.py) plus
our resume keys: `model.load_neurolm` reads them.

--init_from scratch starts a fresh GPT of the --model shape; when its width equals the encoder's
it takes the VQ checkpoint's "wte.weight" (the frozen text embeddings the tokenizer was aligned
to, see train_vq.py) as its first 50257 token embeddings. --init_from DIR loads a local Hugging
Face causal-LM folder (GPT-2 into the native GPT; Llama, Qwen2/3, Mistral, Phi-3 through
transformers, with the folder's tokenizer as the text side; its shape wins over --model).
--lora_rank R trains LoRA adapters instead of the LM's weights (the EEG side trains in full).
Either way the LM's channel embedding starts at minus each channel's mean EEG feature over 32
training recordings (utils.center_channel_embedding: the LM learns slowly from uncentred EEG
features). The LM is built by utils.new_lm (the same for train_instruction.py).

Presets (explicit flags win):
  paper: --model shape (default gpt2), 1024 EEG tokens per sample, 60 EEG + 4 text sequences of
         1024 per step, AdamW lr 6e-4 -> 6e-5, betas (0.9, 0.95), wd 0.1, clip 1.0,
         20 epochs with 2 warm-up.
  tiny:  GPT 2 layers x 64 (4 heads, 128 positions), 256 EEG tokens, 8 EEG + 2 text sequences
         of 64, lr 1e-3 -> 1e-4, 2 epochs with 0.1 warm-up (about 6.5 M parameters, most of them
         the 50304-row embedding and head; trains on a CPU in a minute or two).
"""
from __future__ import annotations

import setup_check  # noqa: F401  (first: one line, not a traceback, outside the .venv)

# isort: split

import argparse
import math
import sys
from pathlib import Path

import torch

import sample_store
import utils
from model import neurolm_layout, next_second_targets
from utils import Stage, draw_text_batch, to_device

# default batch and block sizes of each preset (its LM shape: model.build.LM_PRESETS)
PRESETS = {
    "paper": dict(block_size=1024, batch_size=60, text_batch_size=4, text_block_size=1024,
                  lr=6e-4, min_lr=6e-5, max_epochs=20, warmup_epochs=2.0, beta1=0.9,
                  beta2=0.95, weight_decay=0.1, grad_clip=1.0),
    "tiny": dict(block_size=256, batch_size=8, text_batch_size=2, text_block_size=64,
                 lr=1e-3, min_lr=1e-4, max_epochs=2, warmup_epochs=0.1, beta1=0.9,
                 beta2=0.95, weight_decay=0.1, grad_clip=1.0),
}
PLOTTED = ("loss", "eeg_loss", "text_loss", "eeg_accuracy", "val_eeg_loss", "val_eeg_accuracy")


# ----------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = utils.stage_parser(__doc__, "train_pretrain.py")
    g = parser.add_argument_group("data and model")
    g.add_argument("--tokenizer_path", required=True,
                   help="VQ checkpoint written by train_vq.py (or the public code)")
    g.add_argument("--dataset_dir", nargs="+", required=True,
                   help="processed dataset folder(s): train/*.pkl and val/*.pkl, or a shard "
                        "store (--format shards, dataset_maker/pack.py)")
    g.add_argument("--dataset_weights", nargs="+", default=None,
                   type=utils.number(float, 0.0, 1000.0, low_open=True),
                   help="per --dataset_dir sampling weight in (0, 1000]: a folder gives weight x "
                        "its windows per epoch (0.5: half of them, a different half the next "
                        "epoch; default: every window once)")
    utils.add_text_args(g)
    utils.add_lm_args(g, PRESETS)
    utils.add_eeg_args(g)
    g.add_argument("--fsdp", action="store_true",
                   help="fully shard the LM over the ranks (FSDP2; torchrun): each rank keeps "
                        "1/world of the weights, gradients and AdamW state (README: which model "
                        "fits where); checkpoints keep the single-file layout")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = utils.parse_with_preset(parser, PRESETS, argv)
    if args.dataset_weights is not None and len(args.dataset_weights) != len(args.dataset_dir):
        parser.error(f"--dataset_weights: {len(args.dataset_weights)} weight(s) for "
                     f"{len(args.dataset_dir)} --dataset_dir folder(s); give one per folder")
    return args


# ----------------------------------------------------------------------------- stage

def build_stage(args) -> Stage:
    runtime = utils.setup_runtime(args.device, args.seed, args.dtype)
    raw, tokenizer = utils.new_lm(args)
    utils.add_adapters(raw, args, runtime)
    tokenizer = tokenizer.to(runtime.device).requires_grad_(False)
    raw.backbone.set_recompute(args.activation_checkpointing)
    utils.check_text_block(args, raw)
    # each folder: its shard store (sample_store.py) or its sample pickles, mixed by weight
    with utils.reading("--dataset_dir"):
        train_set = sample_store.open_split(args.dataset_dir, "train", args.block_size,
                                            targets=False, weights=args.dataset_weights,
                                            seed=args.seed)
        val_set = sample_store.open_split(args.dataset_dir, "val", args.block_size,
                                          targets=False)
    utils.center_channel_embedding(raw.to(runtime.device), train_set, runtime.device)
    # The LM's frozen encoder (the same weights) gives both the features and, through the VQ's
    # head and codebook, the code targets: one encoder pass, one copy in memory.
    tokenizer.encoder = tokenizer.decoder_freq = tokenizer.decoder_raw = None
    # The EEG and text passes are separate forwards (different batch sizes), and each leaves
    # some parameters unused (wte / pos_embed): DDP has to be told.
    ddp_kwargs = {"find_unused_parameters": True} if runtime.ddp else {}
    if args.fsdp:   # the frozen tokenizer stays whole on every rank
        model = utils.shard_model(raw, runtime, raw.backbone.blocks(), replicate=[raw.tokenizer])
        model = utils.maybe_compile(model, args.compile)
    else:
        model = utils.prepare_model(raw, runtime, compile=args.compile, **ddp_kwargs)
    optimizer = utils.configure_optimizer(raw, args.lr, args.weight_decay,
                                          (args.beta1, args.beta2), runtime.device_type)
    scaler = runtime.make_grad_scaler()
    loader = utils.make_loader(train_set, args.batch_size, runtime, shuffle=True,
                               num_workers=args.num_workers, seed=args.seed, drop_last=True)
    val_loader = utils.make_loader(val_set, args.batch_size, runtime, shuffle=False,
                                   num_workers=args.num_workers, seed=args.seed)
    text = utils.text_corpus(args, runtime.rank, text=raw.text)

    def eeg_inputs(batch):
        b = to_device(batch, runtime.device)
        with torch.no_grad(), runtime.autocast():
            b["eeg_features"] = raw.tokenizer(b["x_eeg"], b["input_chans"], b["input_time"],
                                              b["input_mask"])
            codes = tokenizer.codes_from_features(b["eeg_features"])
        b["y_eeg"] = next_second_targets(codes, b["input_time"], b["input_mask"])
        return b

    def eeg_loss(b):
        loss, log, _ = model(x_eeg=b["x_eeg"], y_eeg=b["y_eeg"], input_chans=b["input_chans"],
                             input_time=b["input_time"], input_mask=b["input_mask"],
                             return_logits=False, eeg_features=b["eeg_features"])
        if loss is None:  # only 1 s samples in this batch: nothing to predict, keep DDP in step
            loss = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0
            log = {"eeg_loss": 0.0, "eeg_accuracy": 0.0}
        return loss, log

    def train_step(batches, iter_num, total_steps):
        # two micro-steps per batch (EEG, then text): DDP syncs only on the very last backward
        n_micro = 2 * len(batches)
        logs = []
        for i, batch in enumerate(batches):
            b = eeg_inputs(batch)
            x_text, y_text = draw_text_batch(text, args.text_batch_size, runtime.device,
                                                iter_num * len(batches) + i)
            with utils.accumulation_context(model, 2 * i, n_micro), runtime.autocast():
                loss_eeg, log = eeg_loss(b)
                scaler.scale(loss_eeg / len(batches)).backward()
            with utils.accumulation_context(model, 2 * i + 1, n_micro), runtime.autocast():
                loss_text, text_log, _ = model(x_text=x_text, y_text=y_text,
                                               return_logits=False)
                scaler.scale(loss_text / len(batches)).backward()
            logs.append({"loss": loss_eeg.item() + loss_text.item(), "eeg_loss": log["eeg_loss"],
                         "eeg_accuracy": log["eeg_accuracy"], "text_loss": text_log["text_loss"]})
        return utils.step_with_mean_log(optimizer, scaler, args.grad_clip, logs, step=iter_num)

    @torch.no_grad()
    def validate():
        """EEG next-second loss, token accuracy and perplexity over the validation files."""
        model.eval()
        loss_sum = right = scored = 0.0
        for batch in utils.validation_batches(val_loader, args.val_max_batches, runtime):
            b = eeg_inputs(batch)
            n = float((b["y_eeg"] >= 0).sum())
            if n == 0:
                continue
            with runtime.autocast():
                _, log = eeg_loss(b)
            loss_sum += log["eeg_loss"] * n
            right += log["eeg_accuracy"] * n
            scored += n
        model.train()
        # token-weighted means over all ranks: sum the pieces, then divide
        totals = [runtime.mean_across_ranks(v) for v in (loss_sum, right, scored)]
        if totals[2] == 0:
            return {}
        val_loss = totals[0] / totals[2]
        return {"val_eeg_loss": val_loss, "val_eeg_accuracy": totals[1] / totals[2],
                "val_eeg_perplexity": math.exp(min(val_loss, 50.0))}

    return Stage("NeuroLM", runtime, model, optimizer, scaler, loader, train_step,
                 lambda progress: validate(), lambda: neurolm_layout(raw), PLOTTED)


def main(argv=None) -> Path | None:
    """Train; returns the newest checkpoint's path on the main rank (None elsewhere)."""
    return utils.train_main(parse_args(argv), build_stage)


if __name__ == "__main__":
    main(sys.argv[1:])
