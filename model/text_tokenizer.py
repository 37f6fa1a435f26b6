"""The text side of a NeuroLM: its tokenizer and the ids it gives special meaning.

`GPT2_TEXT` is the paper's (the GPT-2 BPE of model/gpt2_bpe.py, end of text 50256, [SEP] 50257,
the row NeuroLM adds); `HFTextTokenizer(folder)` is the tokenizer saved in a Hugging Face model
folder, with the folder's end-of-sequence token as end of text and a "[SEP]" special token
added when the tokenizer has none (the backbone's embedding grows to `len(tokenizer)` rows, as
GPT-2's grew by one). Every prompt, answer, separator and end token of a run comes from one of
these, never from GPT-2 literals.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from model.backbone import BackboneError
from model.gpt2_bpe import EOT_TOKEN_ID, GPT2_VOCAB_SIZE, SEP_TOKEN_ID, decode, encode

SEP_TOKEN = "[SEP]"


@dataclass(frozen=True)
class GPT2Text:
    """The GPT-2 BPE as NeuroLM's paper uses it."""
    eot_id: int = EOT_TOKEN_ID
    sep_id: int = SEP_TOKEN_ID
    n_words: int = GPT2_VOCAB_SIZE      # ids decoding may produce (the [SEP] row is not one)
    name: str = "gpt2"

    def encode(self, text: str) -> list[int]:
        return encode(text)

    def decode(self, ids) -> str:
        return decode(ids)

    def identity(self) -> str:
        return self.name


GPT2_TEXT = GPT2Text()


class HFTextTokenizer:
    """A Hugging Face (fast) tokenizer: the files of a local folder (`from_folder`, never
    downloaded) or the state a checkpoint carries (`state`, `from_state`).

    eot_id: the tokenizer's eos token (one without is refused: answers could never end);
    sep_id: its "[SEP]" (added when absent); n_words: len(tokenizer), the rows of the backbone's
    embedding and of the text logits decoding reads.
    """

    def __init__(self, tokenizer, source: str):
        if tokenizer.eos_token_id is None:
            raise BackboneError(f"{source}: the tokenizer has no end-of-sequence token "
                                "(eos_token in tokenizer_config.json)")
        if not getattr(tokenizer, "is_fast", False):
            raise BackboneError(f"{source}: a slow (Python) tokenizer; NeuroLM needs the fast "
                                "one (tokenizer.json)")
        if SEP_TOKEN not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [SEP_TOKEN]})
        self.tokenizer, self.source = tokenizer, source
        self.eot_id = int(tokenizer.eos_token_id)
        self.sep_id = int(tokenizer.convert_tokens_to_ids(SEP_TOKEN))
        self.n_words = len(tokenizer)
        self._identity = None

    @classmethod
    def from_folder(cls, folder) -> "HFTextTokenizer":
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(Path(folder), local_files_only=True)
        except (OSError, ValueError) as err:
            raise BackboneError(f"{folder}: no usable tokenizer files "
                                f"({' '.join(str(err).split())[:200]})")
        return cls(tokenizer, str(folder))

    def state(self) -> dict:
        """Plain strings (a checkpoint loads them with weights_only=True)."""
        return {"tokenizer_json": self.tokenizer.backend_tokenizer.to_str(),
                "eos_token": str(self.tokenizer.eos_token), "source": self.source}

    @classmethod
    def from_state(cls, state: dict, source: str) -> "HFTextTokenizer":
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        if not isinstance(state, dict) or not all(
                isinstance(state.get(k), str) for k in ("tokenizer_json", "eos_token")):
            raise BackboneError(f"{source}: its text tokenizer state is not tokenizer_json + "
                                "eos_token strings")
        try:
            backend = Tokenizer.from_str(state["tokenizer_json"])
        except Exception as err:  # tokenizers raises its own exception types
            raise BackboneError(f"{source}: unreadable tokenizer ({' '.join(str(err).split())})")
        return cls(PreTrainedTokenizerFast(tokenizer_object=backend,
                                           eos_token=state["eos_token"]), source)

    def encode(self, text: str) -> list[int]:
        """Text -> ids, without the tokenizer's own BOS/EOS decorations (NeuroLM places [SEP]
        and the end token itself)."""
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids if 0 <= int(i) < self.n_words],
                                     skip_special_tokens=True)

    def identity(self) -> str:
        """A hash of the vocabulary and merges (with [SEP]): a corpus or checkpoint tokenised
        with another tokenizer is refused by comparing these. Computed once (a 150k-word
        vocabulary takes about a second); the tokenizer is not changed after __init__."""
        if self._identity is None:
            self._identity = self._hash()
        return self._identity

    def _hash(self) -> str:
        vocab = sorted(self.tokenizer.get_vocab().items())
        state = json.loads(self.tokenizer.backend_tokenizer.to_str()).get("model", {})
        blob = json.dumps([vocab, state.get("merges")], ensure_ascii=False).encode("utf-8")
        return "sha256:" + hashlib.sha256(blob).hexdigest()
