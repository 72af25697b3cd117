"""Check that the embedded default model loads like any model and answers chat and plain questions."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

MODEL_DIR = Path(__file__).resolve().parents[2] / "serving" / "default_model"
MAX_NEW_TOKENS = 64
QUESTIONS = [
    "What is deep learning?",
    "Hello",
    "Tell me about the sun.",
    "Can you tell me what coffee is?",
    "Who are you?",
]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    """Load the default model's tokenizer from disk."""
    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def model() -> PreTrainedModel:
    """Load the default model from disk in evaluation mode."""
    return AutoModelForCausalLM.from_pretrained(MODEL_DIR).eval()


def generate_reply(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, question: str) -> list[int]:
    """Return the token ids greedily generated after the chat prompt for one question."""
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("question", QUESTIONS)
def test_reply_is_printable_text_ending_with_eos(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, question: str
) -> None:
    """Each reply is non-empty printable text and generation stops at EOS within the token budget."""
    new_tokens = generate_reply(model, tokenizer, question)
    assert len(new_tokens) <= MAX_NEW_TOKENS
    assert new_tokens[-1] == tokenizer.eos_token_id
    text = tokenizer.decode(new_tokens, skip_special_tokens=True).strip()
    assert text
    assert text.isprintable()


def test_deep_learning_answer_is_on_topic(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """The first question a new user asks gets an answer about deep learning."""
    text = tokenizer.decode(generate_reply(model, tokenizer, "What is deep learning?"), skip_special_tokens=True)
    assert "deep learning" in text.lower()


def complete(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """Return the token ids greedily generated after a plain prompt, encoded as /generate encodes it."""
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return output[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("prompt", ["What is deep learning?", "Tell me about the sun.",
                                    "Question: What is Python?\nAnswer:"])
def test_a_plain_question_gets_the_chat_answer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                                               prompt: str) -> None:
    """Without the chat template, a question is continued with the answer the chat route gives, then EOS."""
    new_tokens = complete(model, tokenizer, prompt)
    assert new_tokens[-1] == tokenizer.eos_token_id
    question = prompt.removeprefix("Question: ").removesuffix("\nAnswer:")
    chat = tokenizer.decode(generate_reply(model, tokenizer, question), skip_special_tokens=True)
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).strip() == chat.strip()
