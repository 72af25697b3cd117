"""Incremental detokenization never yields a broken character and adds up to the full decode."""

from __future__ import annotations

import pytest

from serving.engine.detokenizer import MAX_HELD_TOKENS, DecodeState, Detokenizer
from serving.testing.tiny_model import TinyModelSpec, build_tokenizer

TEXT = "Hello café naïve 日本 🙂 über straße, résumé 42!"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(TinyModelSpec())


def stream(detokenizer: Detokenizer, prompt: list[int], generated: list[int]) -> list[str]:
    ids = list(prompt)
    state = DecodeState.start(len(prompt))
    deltas = []
    for token in generated:
        ids.append(token)
        deltas.extend(detokenizer.step([(ids, state)]))
    return deltas


@pytest.mark.parametrize("prompt", ["", "The model said:"])
def test_deltas_are_whole_characters_and_add_up(tokenizer, prompt):
    detokenizer = Detokenizer(tokenizer)
    generated = tokenizer.encode(TEXT, add_special_tokens=False)
    assert len(generated) > len(TEXT.split())
    deltas = stream(detokenizer, tokenizer.encode(prompt), generated)
    assert len(deltas) == len(generated)
    assert "\ufffd" not in "".join(deltas)
    assert "".join(deltas) == TEXT
    assert "" in deltas  # the emoji's first byte tokens are held back


def test_batched_step_equals_one_by_one(tokenizer):
    detokenizer = Detokenizer(tokenizer)
    texts = [TEXT, "🙂🙂 日本語", "plain words only"]
    encoded = [tokenizer.encode(t) for t in texts]
    alone = [stream(detokenizer, [], ids) for ids in encoded]
    states = [([], DecodeState.start(0)) for _ in texts]
    batched: list[list[str]] = [[] for _ in texts]
    for step in range(max(map(len, encoded))):
        rows = [i for i, ids in enumerate(encoded) if step < len(ids)]
        for i in rows:
            states[i][0].append(encoded[i][step])
        for i, text in zip(rows, detokenizer.step([states[i] for i in rows])):
            batched[i].append(text)
    assert batched == alone


def test_special_tokens_are_kept_in_deltas_and_skipped_in_the_final_text(tokenizer):
    detokenizer = Detokenizer(tokenizer)
    generated = tokenizer.encode("Hi there", add_special_tokens=False) + [tokenizer.eos_token_id]
    deltas = stream(detokenizer, tokenizer.encode("x"), generated)
    assert deltas[-1] == "</s>"
    assert detokenizer.final_text(generated) == "Hi there"
    assert tokenizer.eos_token_id in detokenizer.special_ids


def test_token_texts_decode_each_token_alone(tokenizer):
    detokenizer = Detokenizer(tokenizer)
    ids = tokenizer.encode("Hello world", add_special_tokens=False) + [tokenizer.bos_token_id]
    assert detokenizer.token_texts(ids) == [tokenizer.decode([i]) for i in ids]
    assert detokenizer.token_texts(ids[:1]) == [tokenizer.decode(ids[:1])]


def test_flush_releases_an_incomplete_character_at_the_end(tokenizer):
    detokenizer = Detokenizer(tokenizer)
    ids = tokenizer.encode("a🙂", add_special_tokens=False)[:-1]
    deltas = stream(detokenizer, [], ids)
    state = DecodeState.start(0)
    for i in range(len(ids)):
        detokenizer.step([(ids[: i + 1], state)])
    held = detokenizer.flush(ids, state)
    assert held.endswith("\ufffd")
    assert "".join(deltas) + held == tokenizer.decode(ids)


def test_bytes_that_never_form_a_character_go_out_after_a_bounded_hold(tokenizer):
    """A model emitting stray UTF-8 lead bytes: held at most MAX_HELD_TOKENS tokens, then emitted as they are."""
    detokenizer = Detokenizer(tokenizer)
    lead = tokenizer.encode("🙂", add_special_tokens=False)[0]  # a 4-byte character's first byte alone
    deltas = stream(detokenizer, [], [lead] * (3 * MAX_HELD_TOKENS))
    emitted = [i for i, delta in enumerate(deltas) if delta]
    assert emitted and emitted[0] == MAX_HELD_TOKENS - 1
    assert all(b - a == MAX_HELD_TOKENS for a, b in zip(emitted, emitted[1:]))
    assert "".join(deltas) == tokenizer.decode([lead] * (3 * MAX_HELD_TOKENS))


def test_the_step_decodes_on_the_calling_thread(tokenizer, tmp_path):
    """No rayon pool: its threads would compete with the forward's for the cores (counted in a fresh process,
    where encoding and decoding with parallelism left on start the pool)."""
    import os
    import subprocess
    import sys

    tokenizer.save_pretrained(tmp_path / "tokenizer")
    script = tmp_path / "threads.py"
    script.write_text(
        "import os, sys\n"
        "from transformers import AutoTokenizer\n"
        "from serving.engine.detokenizer import DecodeState, Detokenizer\n"
        "tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "detokenizer = Detokenizer(tokenizer) if sys.argv[2] == 'detokenizer' else None\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "ids = tokenizer.encode('a few words of text ' * 20)\n"
        "if detokenizer is not None:\n"
        "    detokenizer.step([(list(ids), DecodeState.start(len(ids) - 3)) for _ in range(64)])\n"
        "else:\n"
        "    tokenizer.backend_tokenizer.decode_batch([ids] * 64)\n"
        "print(len(os.listdir('/proc/self/task')) - before)\n")
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    started = {mode: int(subprocess.run([sys.executable, str(script), str(tmp_path / "tokenizer"), mode], env=env,
                                        capture_output=True, text=True, check=True).stdout.split()[-1])
               for mode in ("plain", "detokenizer")}
    assert started["plain"] > 0  # the check can see the pool
    assert started["detokenizer"] == 0
