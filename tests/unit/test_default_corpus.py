"""Check that the shipped default-model tokenizer round-trips the shipped training corpus."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER_FILE = ROOT / "serving" / "default_model" / "tokenizer.json"
CORPUS_FILE = ROOT / "scripts" / "default_model" / "corpus.jsonl"
SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]


def record_texts(record: dict) -> list[str]:
    """The texts of one record: a chat's messages, or a plain-text prompt and its completion."""
    if "messages" in record:
        return [m["content"] for m in record["messages"]]
    return [record["prompt"], record["completion"]]


def corpus_texts() -> list[str]:
    """Return every distinct text of the corpus, sorted."""
    with CORPUS_FILE.open(encoding="utf-8") as f:
        return sorted({text for line in f if line.strip() for text in record_texts(json.loads(line))})


def test_corpus_teaches_plain_questions_too() -> None:
    """A share of the records are plain-text prompts (no chat template) whose completion is an answer."""
    with CORPUS_FILE.open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    plain = [r for r in records if "prompt" in r]
    assert len(records) * 0.15 < len(plain) < len(records) * 0.5
    assert any(r["prompt"].startswith("What is ") and r["prompt"].endswith("?") for r in plain)
    assert any(r["prompt"].startswith("Question: ") and r["prompt"].endswith("\nAnswer:") for r in plain)


def test_tokenizer_round_trips_every_corpus_message() -> None:
    """Encoding then decoding each text gives it back unchanged."""
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
