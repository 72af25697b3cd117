"""Check that the shipped default-model tokenizer round-trips the shipped training corpus."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_FILE = ROOT / "serving" / "default_model" / "tokenizer.json"
CORPUS_FILE = ROOT / "scripts" / "default_model" / "corpus.jsonl"
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]


def corpus_texts() -> list[str]:
    """Return every distinct message text of the corpus, sorted."""
    with CORPUS_FILE.open(encoding="utf-8") as f:
        return sorted({m["content"] for line in f if line.strip() for m in json.loads(line)["messages"]})


def test_tokenizer_round_trips_every_corpus_message() -> None:
    """Encoding then decoding each message text gives it back unchanged."""
    tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
    texts = corpus_texts()
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    decoded = tokenizer.decode_batch([e.ids for e in encodings], skip_special_tokens=False)
    assert [t for t, d in zip(texts, decoded) if t != d] == []


def test_special_tokens_are_single_tokens() -> None:
    """Each chat special token exists in the vocabulary and encodes to exactly its own id."""
    tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
    for token in SPECIAL_TOKENS:
        token_id = tokenizer.token_to_id(token)
        assert token_id is not None
        assert tokenizer.encode(token, add_special_tokens=False).ids == [token_id]
