"""A new random Hugging Face causal-LM folder: a backbone to try NeuroLM on any architecture
without downloading one.

    python -m model.random_lm --out_dir out/llama --architecture llama --hidden 64 --layers 2 \
        --heads 4 --kv_heads 2 --intermediate 256 --positions 1024 --vocab_size 4096

`write_random_lm(folder, architecture, shape, texts, vocab_size, seed)` trains a byte-level BPE
tokenizer on `texts` with `tokenizers` (its own vocabulary, not GPT-2's, and an end-of-text
token), builds a randomly initialised model of `architecture` (any of
model.hf_backbone.SUPPORTED_ARCHITECTURES) and `shape` whose vocabulary is that tokenizer's,
and saves both with `save_pretrained`: the folder is what `--init_from FOLDER` takes
(load_causal_lm, HFTextTokenizer.from_folder). The same seed and texts give the same bytes.
From the command line the texts are files (--input) or, by default, the offline Python-docs
corpus that text_dataset_maker/prepare.py uses.
"""
from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from model.backbone import BackboneError
from model.hf_backbone import SUPPORTED_ARCHITECTURES, progress_bars_on_a_terminal_only

EOS_TOKEN = "<|endoftext|>"
BYTE_ALPHABET = 256     # byte-level BPE starts from every byte: the smallest vocabulary
VOCAB_MAX = 1_000_000   # beyond any real tokenizer; a typo, not a request


@dataclass(frozen=True)
class LMShape:
    """The size of a random LM (names follow transformers' Llama config)."""
    hidden: int = 64            # hidden_size: width of the residual stream
    layers: int = 2             # num_hidden_layers
    heads: int = 4              # num_attention_heads (hidden must divide by it)
    kv_heads: int = 2           # num_key_value_heads (heads must divide by it; GPT-2: = heads)
    intermediate: int = 256     # intermediate_size: width of the MLP
    positions: int = 1024       # max_position_embeddings

    def check(self, architecture: str) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, int) and 1 <= value <= VOCAB_MAX):
                raise BackboneError(f"--{f.name} {value!r}: expected an integer in "
                                    f"1..{VOCAB_MAX}")
        if self.hidden % self.heads:
            raise BackboneError(f"--hidden {self.hidden} does not divide into --heads "
                                f"{self.heads}")
        if self.heads % self.kv_heads:
            raise BackboneError(f"--heads {self.heads} does not divide into --kv_heads "
                                f"{self.kv_heads}")
        if architecture == "gpt2" and self.kv_heads != self.heads:
            raise BackboneError(f"--kv_heads {self.kv_heads}: GPT-2 has no grouped-query "
                                f"attention (give --kv_heads {self.heads})")


def train_bpe(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE (GPT-2's scheme, a vocabulary of its own) trained on `texts`, with
    EOS_TOKEN as id 0 and end-of-sequence token, as a transformers fast tokenizer. The trainer
    stops below vocab_size when the texts offer no more merges."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not (isinstance(vocab_size, int) and BYTE_ALPHABET + 1 < vocab_size <= VOCAB_MAX):
        raise BackboneError(f"--vocab_size {vocab_size!r}: expected an integer in "
                            f"{BYTE_ALPHABET + 2}..{VOCAB_MAX} (the 256 bytes, the end token "
                            f"and at least one merge)")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS_TOKEN], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bpe.get_vocab_size() <= BYTE_ALPHABET + 1:
        raise BackboneError("the texts are empty: no BPE merge could be learned")
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS_TOKEN)


def random_config(architecture: str, shape: LMShape, vocab_size: int, eos_id: int):
    """The transformers config of a model of `architecture` and `shape`; every special id
    (begin, end, padding) is the tokenizer's end token."""
    from transformers import AutoConfig

    if architecture not in SUPPORTED_ARCHITECTURES:
        raise BackboneError(f"--architecture {architecture!r}: expected one of "
                            f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    shape.check(architecture)
    ids = dict(bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    if architecture == "gpt2":
        return AutoConfig.for_model(
            "gpt2", n_embd=shape.hidden, n_layer=shape.layers, n_head=shape.heads,
            n_inner=shape.intermediate, n_positions=shape.positions, vocab_size=vocab_size,
            **ids)
    extra = {}
    if architecture == "qwen3":         # its default head_dim (128) ignores hidden / heads
        extra["head_dim"] = shape.hidden // shape.heads
    if architecture in ("mistral", "phi3"):     # full attention: a window only a real model needs
        extra["sliding_window"] = None
    return AutoConfig.for_model(
        architecture, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        intermediate_size=shape.intermediate, max_position_embeddings=shape.positions,
        vocab_size=vocab_size, **ids, **extra)


def write_random_lm(folder, architecture: str, shape: LMShape, texts: Iterable[str],
                    vocab_size: int, seed: int = 0) -> int:
    """Write a new folder (refused when it exists and is not empty): the tokenizer trained on
    `texts` and a random model of `architecture` and `shape` over its vocabulary, initialised
    from `seed`. -> the vocabulary's size. Written in a temporary folder beside it, then
    renamed: the folder is whole or absent."""
    folder = Path(folder)
    if not (isinstance(seed, int) and 0 <= seed < 2**63):
        raise BackboneError(f"--seed {seed!r}: expected an integer in 0..2**63-1")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise BackboneError(f"--out_dir {folder}: exists and is not an empty folder (delete it "
                            "or choose another)")
    tokenizer = train_bpe(texts, vocab_size)
    config = random_config(architecture, shape, len(tokenizer), tokenizer.eos_token_id)
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):    # the caller's random state stays as it was
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    progress_bars_on_a_terminal_only()
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        temp.chmod(0o777 & ~umask)      # mkdtemp's 0700 would outlive the rename
        model.save_pretrained(temp)
        tokenizer.save_pretrained(temp)
        if folder.exists():
            folder.rmdir()
        os.replace(temp, folder)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return len(tokenizer)


def corpus_texts(inputs: list[str] | None, text_field: str = "text") -> Iterable[str]:
    """The documents of --input files, or of the offline Python-docs corpus when none given
    (text_dataset_maker's readers: the demo's text corpus)."""
    from text_dataset_maker.sources import builtin_documents, expand_inputs, local_documents

    if inputs:
        files = [str(p) for p in expand_inputs(inputs)]
        return (d["text"] for d in local_documents(files, text_field, None))
    return (d["text"] for d in builtin_documents(1, None))


def task_texts(repeats: int) -> list[str]:
    """Every built-in task's prompt with each of its answers, `repeats` times. A real LM's
    tokenizer has seen these words; a small corpus has not (Python's docs: TUEV's text takes 101
    tokens of a 4096-word BPE, 61 with the prompts 10 times in, GPT-2's 66)."""
    from tasks import BUILTIN_TASKS

    return [task.full_text(label) for task in BUILTIN_TASKS.values()
            for label in range(task.n_classes)] * repeats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", required=True, type=Path,
                        help="the new model folder (must not exist, or be empty)")
    parser.add_argument("--architecture", default="llama", choices=list(SUPPORTED_ARCHITECTURES),
                        help="model_type of the new model (default: %(default)s)")
    defaults = LMShape()
    for f in fields(LMShape):
        parser.add_argument(f"--{f.name}", type=int, default=getattr(defaults, f.name),
                            help=f"default: {getattr(defaults, f.name)}")
    parser.add_argument("--vocab_size", type=int, default=4096,
                        help="BPE vocabulary, end token included (default: %(default)s; fewer "
                             "when the texts run out of merges)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights")
    parser.add_argument("--input", nargs="+", metavar="PATH",
                        help="texts to train the tokenizer on, as text_dataset_maker/prepare.py "
                             "reads them (default: the offline Python-docs corpus)")
    parser.add_argument("--text_field", default="text", help="JSON field / column with the text")
    parser.add_argument("--task_prompts", type=int, default=0, metavar="N",
                        help="also train the tokenizer on the built-in tasks' prompts and "
                             "answers, N times each, so they take few tokens (default: 0)")
    args = parser.parse_args(argv)
    from text_dataset_maker.sources import CorpusSourceError

    shape = LMShape(**{f.name: getattr(args, f.name) for f in fields(LMShape)})
    try:
        if not 0 <= args.task_prompts <= 10_000:
            raise BackboneError(f"--task_prompts {args.task_prompts}: expected 0..10000")
        texts = itertools.chain(corpus_texts(args.input, args.text_field),
                                task_texts(args.task_prompts))
        n = write_random_lm(args.out_dir, args.architecture, shape, texts, args.vocab_size,
                            args.seed)
    except (BackboneError, CorpusSourceError, FileNotFoundError, ValueError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(f"a random {SUPPORTED_ARCHITECTURES[args.architecture]} model ({shape}) with a "
          f"{n}-token BPE tokenizer written to {args.out_dir.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
