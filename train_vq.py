r"""Stage 2: train the text-aligned neural tokenizer (VQ_Align, aligned with text).

    python train_vq.py --dataset_dir data/tuh_pretrain data/tuab --text_dir data/text \
        --out_dir runs/vq [--init_from /models/gpt2] [--preset tiny]

Reads `<dataset_dir>/train/*.pkl` and `<dataset_dir>/val/*.pkl` of every processed dataset
folder, and random text windows of `<text_dir>/train.bin` for the domain loss. Writes
`ckpt-<step>.pt` / `last.pt` (the public VQ layout: "model" with VQ.* and domain_classifier.*
keys and "wte.weight", "encoder_args", "decoder_args", "iter_num", "epoch", plus our resume
keys), `metrics.jsonl` and `curves.png` into --out_dir.

Text embeddings. The domain classifier learns to tell EEG features from the frozen token
embeddings of the LM that stage 3 trains, so --init_from means what it means there. With
--init_from DIR (a local Hugging Face GPT-2 folder or weights file; --gpt2_path is an alias) they
are OpenAI GPT-2's (rows 0..50256 of wte; the encoder must be as wide). With --init_from scratch
(the default) they are the embeddings of the from-scratch GPT of stage 3: a (50257, encoder
width) table drawn N(0, 0.02) (GPT-2's own init) from a generator seeded with --seed. It is
saved in the checkpoint as "wte.weight", and `train_pretrain.py --init_from scratch` copies it
into its token embedding, so the LM starts from exactly the embeddings the tokenizer was aligned
to.

Presets (model shapes; batch and block flags default from them, explicit flags win):
  paper: encoder 12 layers x 768 (12 heads), decoders 4 layers, 8192 codes of dim 128,
         1024 tokens per sample, 64 EEG + 16 text sequences of 1024 per step,
         AdamW lr 5e-5 -> 1e-5 cosine, 50 epochs with 5 warm-up, betas (0.9, 0.999), wd 1e-4.
  tiny:  encoder 2 layers x 64 (4 heads, conv 8 channels), decoders 1 layer, 512 codes of dim 32,
         256 tokens per sample, 8 EEG + 4 text sequences of 64, lr 3e-4 -> 3e-5, 2 epochs with
         0.1 warm-up (about 0.5 M parameters: trains on a CPU in a minute or two).
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
from dataset import reconstruction_targets_batch
from model.checkpoints import vq_layout
from model.gpt2_bpe import GPT2_VOCAB_SIZE
from model.gpt2_hf import load_hf_gpt2
from model.model_neural_transformer import NTConfig
from model.model_vq import CODEBOOK_SIZE, VQ_Align
from model.norm_ema_quantizer import codebook_usage
from utils import Stage, draw_text_batch, to_device

PRESETS = {
    "paper": {
        "encoder": dict(n_layer=12, n_head=12, n_embd=768, out_chans=16),
        "decoder": dict(n_layer=4, n_head=12, n_embd=768),
        "vq": dict(n_embed=CODEBOOK_SIZE, embed_dim=128),
        "defaults": dict(block_size=1024, batch_size=64, text_batch_size=16, text_block_size=1024,
                         lr=5e-5, min_lr=1e-5, max_epochs=50, warmup_epochs=5.0,
                         beta1=0.9, beta2=0.999, weight_decay=1e-4),
    },
    "tiny": {
        "encoder": dict(n_layer=2, n_head=4, n_embd=64, out_chans=8),
        "decoder": dict(n_layer=1, n_head=4, n_embd=64),
        "vq": dict(n_embed=512, embed_dim=32),
        "defaults": dict(block_size=256, batch_size=8, text_batch_size=4, text_block_size=64,
                         # at 1e-3 the adversarial domain loss collapsed the codebook to two
                         # codes within 90 steps on the synthetic corpus; 3e-4 keeps ~80 % in use
                         lr=3e-4, min_lr=3e-5, max_epochs=2, warmup_epochs=0.1,
                         beta1=0.9, beta2=0.999, weight_decay=1e-4),
    },
}
TEXT_INIT_STD = 0.02   # GPT-2's embedding init (nanoGPT _init_weights)
PLOTTED = ("loss", "commit_loss", "rec_freq_loss", "rec_raw_loss", "domain_loss",
           "codebook_usage", "val_loss")


# ----------------------------------------------------------------------------- command line

def build_parser() -> argparse.ArgumentParser:
    parser = utils.stage_parser(__doc__, "train_vq.py")
    g = parser.add_argument_group("data and model")
    g.add_argument("--dataset_dir", nargs="+", required=True,
                   help="processed dataset folder(s) holding train/*.pkl and val/*.pkl")
    utils.add_text_args(g)
    g.add_argument("--init_from", "--gpt2_path", dest="init_from", default="scratch",
                   help="the LM whose frozen token embeddings are the text side: 'scratch' "
                        "(the from-scratch LM's, see the module help) or a local Hugging Face "
                        "GPT-2 folder / weights file (default: %(default)s)")
    g.add_argument("--preset", choices=sorted(PRESETS), default="paper",
                   help="model shape and default batch/block sizes (default: %(default)s)")
    utils.add_eeg_args(g)
    g.add_argument("--public_padding", action="store_true",
                   help="feed padded tokens to k-means and the codebook EMA as the public code "
                        "did (default: padding is masked out)")
    g.add_argument("--restart_unused_codes_after", type=utils.number(int, 0, 1 << 30), default=20,
                   help="move a code that no token picked for this many steps onto a random "
                        "token of the batch; 0 never does, as the public code (default: "
                        "%(default)s)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    defaults = {name: preset["defaults"] for name, preset in PRESETS.items()}
    return utils.parse_with_preset(build_parser(), defaults, argv)


# ----------------------------------------------------------------------------- pieces

def domain_alpha(progress: float) -> float:
    """Gradient-reversal strength 2 / (1 + exp(-10 p)) - 1: 0 at the start, near 1 at the end."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def model_configs(args) -> tuple[NTConfig, NTConfig, dict]:
    preset = PRESETS[args.preset]
    encoder = NTConfig(block_size=args.block_size, **preset["encoder"])
    decoder = NTConfig(block_size=args.block_size, in_chans=preset["vq"]["embed_dim"],
                       **preset["decoder"])
    return encoder, decoder, dict(preset["vq"])


def scratch_text_embeddings(width: int, seed: int) -> torch.Tensor:
    """(50257, width) N(0, 0.02) drawn from its own seeded generator (module help)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(GPT2_VOCAB_SIZE, width, generator=g) * TEXT_INIT_STD


def text_embeddings(args, width: int) -> torch.Tensor:
    if args.init_from == "scratch":
        return scratch_text_embeddings(width, args.seed)
    with utils.reading("--init_from"):
        _, sd = load_hf_gpt2(args.init_from)
    wte = sd["transformer.wte.weight"][:GPT2_VOCAB_SIZE].float()
    if wte.shape[1] != width:
        raise utils.UserError(f"--init_from {args.init_from}: embeddings are {wte.shape[1]} "
                              f"wide but the --preset {args.preset} encoder is {width} wide")
    return wte


# ----------------------------------------------------------------------------- VQ stage

def with_targets(batch: dict) -> dict:
    """The batch plus its reconstruction targets y_freq / y_raw, computed where it is (fp32,
    outside autocast); a batch that already carries them keeps them."""
    if "y_freq" not in batch:
        batch["y_freq"], batch["y_raw"] = reconstruction_targets_batch(batch["x_eeg"],
                                                                       batch["input_mask"])
    return batch


def build_stage(args) -> Stage:
    runtime = utils.setup_runtime(args.device, args.seed, args.dtype)
    encoder_cfg, decoder_cfg, vq_args = model_configs(args)
    raw = VQ_Align(encoder_cfg, decoder_cfg,
                   text_embeddings=text_embeddings(args, encoder_cfg.n_embd),
                   mask_padding_in_quantizer=not args.public_padding,
                   restart_unused_codes_after=args.restart_unused_codes_after, **vq_args)
    model = utils.prepare_model(raw, runtime, compile=args.compile)
    optimizer = utils.configure_optimizer(raw, args.lr, args.weight_decay,
                                          (args.beta1, args.beta2), runtime.device_type)
    # each folder: its shard store (sample_store.py) or its sample pickles; plain items: the
    # targets are computed batched on the device (with_targets), not per item in the workers
    with utils.reading("--dataset_dir"):
        train_set = sample_store.open_split(args.dataset_dir, "train", args.block_size,
                                            targets=False)
        val_set = sample_store.open_split(args.dataset_dir, "val", args.block_size,
                                          targets=False)
    loader = utils.make_loader(train_set, args.batch_size, runtime, shuffle=True,
                               num_workers=args.num_workers, seed=args.seed, drop_last=True)
    val_loader = utils.make_loader(val_set, args.batch_size, runtime, shuffle=False,
                                   num_workers=args.num_workers, seed=args.seed)
    text = utils.text_corpus(args, runtime.rank)
    scaler = runtime.make_grad_scaler()

    def train_step(batches, iter_num, total_steps):
        alpha = domain_alpha(iter_num / max(total_steps, 1))
        logs = []
        for micro, batch in enumerate(batches):
            b = with_targets(to_device(batch, runtime.device))
            ids, _ = draw_text_batch(text, args.text_batch_size, runtime.device,
                                  iter_num * len(batches) + micro)
            with utils.accumulation_context(model, micro, len(batches)), runtime.autocast():
                loss, log = model(b["x_eeg"], b["y_freq"], b["y_raw"], b["input_chans"],
                                  b["input_time"], b["input_mask"], alpha=alpha)
                # the text side goes through the same domain classifier in the same backward,
                # so DDP still sees one gradient per parameter
                text_loss = raw.text_domain_loss(ids, alpha)
                scaler.scale((loss + text_loss) / len(batches)).backward()
            log["domain_loss"] += text_loss.item()
            log["loss"] += text_loss.item()
            logs.append(log)
        return utils.step_with_mean_log(optimizer, scaler, args.grad_clip, logs, step=iter_num,
                                        alpha=alpha)

    @torch.no_grad()
    def validate():
        """Mean VQ losses over the validation files and codebook usage of their codes."""
        model.eval()
        sums, batches, codes, masks = {}, 0, [], []
        for batch in utils.validation_batches(val_loader, args.val_max_batches, runtime):
            b = with_targets(to_device(batch, runtime.device))
            with runtime.autocast():
                _, _, log = raw.VQ(b["x_eeg"], b["y_freq"], b["y_raw"], b["input_chans"],
                                   b["input_time"], b["input_mask"])
                codes.append(raw.VQ.get_codebook_indices(b["x_eeg"], b["input_chans"],
                                                         b["input_time"], b["input_mask"]))
            masks.append(b["input_mask"])
            for k in ("loss", "commit_loss", "rec_freq_loss", "rec_raw_loss"):
                sums[k] = sums.get(k, 0.0) + log[k]
            batches += 1
        model.train()
        out = {f"val_{k}": runtime.mean_across_ranks(v / max(batches, 1)) for k, v in sums.items()}
        if codes:
            usage, perplexity = codebook_usage(torch.cat(codes), raw.VQ.quantize.num_tokens,
                                               torch.cat(masks))
            out.update(val_codebook_usage=runtime.mean_across_ranks(usage),
                       val_code_perplexity=runtime.mean_across_ranks(perplexity))
        return out

    return Stage("VQ_Align", runtime, model, optimizer, scaler, loader, train_step,
                 lambda progress: validate(), lambda: vq_layout(raw), PLOTTED)


def main(argv=None) -> Path | None:
    """Train the tokenizer; the newest checkpoint's path on the main rank (None elsewhere)."""
    return utils.train_main(parse_args(argv), build_stage)


if __name__ == "__main__":
    main(sys.argv[1:])
