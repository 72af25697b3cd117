"""Property tests against the real server: random valid and invalid parameter combinations (hypothesis).

Every answer must be either a success of the documented shape, or the documented 4xx: a framework error for a
body of the wrong shape, else exactly the validation message that TGI's rules (API.md §2.2-2.3, §3.1, in TGI's
order) give for that combination, which an oracle here computes independently. Nothing may be a 5xx, and the
server must keep serving afterwards.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from compat_helpers import exact, post, sse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.api.protocol import responses

pytestmark = pytest.mark.integration

MAX_TOTAL = 256  # the shared server's MAX_TOTAL_TOKENS; MAX_INPUT_TOKENS is one less
MAX_INPUT = MAX_TOTAL - 1
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, database=None,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DESERIALIZE = "Failed to deserialize the JSON body into the target type: "


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """`strategy` or None."""
    return st.one_of(st.none(), strategy)


def number(low: float, high: float, *specials: float) -> st.SearchStrategy:
    """A float in [low, high] with the boundaries that matter drawn often."""
    return st.one_of(st.sampled_from(specials), st.floats(low, high, allow_nan=False, allow_infinity=False))


INPUTS = st.one_of(st.just(""), st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                                        max_size=30).filter(lambda text: text.strip() != ""))
STOP = st.lists(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=4),
                max_size=6)
PARAMETERS = st.fixed_dictionaries({}, optional={
    "temperature": maybe(number(-1.0, 3.0, 0.0, 1.0, 0.5)),
    "repetition_penalty": maybe(number(-0.5, 3.0, 0.0, 1.2)),
    "frequency_penalty": maybe(number(-3.0, 3.0, -2.0, 2.0, 0.5)),
    "top_k": maybe(st.integers(-3, 60)),
    "top_p": maybe(number(-0.2, 1.2, 0.0, 1.0, 0.9)),
    "typical_p": maybe(number(-0.2, 1.2, 0.0, 1.0, 0.9)),
    "do_sample": st.booleans(),
    "max_new_tokens": st.one_of(st.integers(0, 12), st.integers(0, 12), st.just(500), st.none()),
    "return_full_text": maybe(st.booleans()),
    "stop": STOP,
    "truncate": maybe(st.one_of(st.integers(0, 8), st.just(MAX_TOTAL))),
    "watermark": st.booleans(),
    "details": st.booleans(),
    "decoder_input_details": st.booleans(),
    "seed": maybe(st.integers(0, 2**64 - 1)),
    "top_n_tokens": maybe(st.integers(0, 7)),
    "best_of": maybe(st.integers(0, 3)),
})
WRONG_TYPES = st.sampled_from([
    ("max_new_tokens", -1), ("max_new_tokens", 2.5), ("max_new_tokens", "ten"), ("temperature", "hot"),
    ("do_sample", None), ("details", None), ("stop", "x"), ("stop", None), ("top_k", 2**31), ("seed", -1),
    ("truncate", -3), ("best_of", -1), ("top_n_tokens", True), ("top_p", [0.5]), ("grammar", "json"),
])


def tokens(url: str, text: str) -> int:
    """Tokens of `text` as the server counts them."""
    return len(post(url + "/tokenize", {"inputs": text}).json()) if text else 0


def sampling(p: dict[str, Any]) -> bool:
    """TGI's effective sampling rule (API.md §2.2)."""
    return bool(p.get("do_sample")) or (p.get("temperature") or 1.0) != 1.0 or (p.get("top_k") or 0) > 0 \
        or (p.get("top_p") if p.get("top_p") is not None else 1.0) < 1.0 \
        or (p.get("typical_p") if p.get("typical_p") is not None else 1.0) < 1.0


def generate_error(inputs: str, p: dict[str, Any], streaming: bool, input_tokens: int) -> str | None:
    """The validation message (after TGI's prefix) that these parameters must get, or None: TGI's checks in order.

    Our one departure: `top_p` 1.0 is accepted (README).
    """
    best_of = p.get("best_of")
    if streaming and best_of not in (None, 1):
        return "`best_of` != 1 is not supported when streaming tokens"
    if streaming and p.get("decoder_input_details"):
        return "`decoder_input_details` == true is not supported when streaming tokens"
    best_of = best_of or 1
    if best_of > 1:
        if best_of > 2:
            return f"`best_of` must be > 0 and <= 2. Given: {best_of}"
        if not (p.get("do_sample") or any(p.get(k) is not None for k in ("temperature", "top_k", "top_p",
                                                                         "typical_p"))):
            return "you must use sampling when `best_of` is > 1"
    checks = [
        (p.get("temperature") is not None and p["temperature"] <= 0, "`temperature` must be strictly positive"),
        (p.get("repetition_penalty") is not None and p["repetition_penalty"] <= 0,
         "`repetition_penalty` must be strictly positive"),
        (p.get("frequency_penalty") is not None and not -2.0 <= p["frequency_penalty"] <= 2.0,
         "`frequency_penalty` must be >= -2.0 and <= 2.0"),
        (p.get("top_p") is not None and not 0.0 < p["top_p"] <= 1.0, "`top_p` must be > 0.0 and < 1.0"),
        (p.get("typical_p") is not None and not 0.0 < p["typical_p"] < 1.0, "`typical_p` must be > 0.0 and < 1.0"),
        (p.get("top_k") is not None and p["top_k"] <= 0, "`top_k` must be strictly positive"),
        (p.get("max_new_tokens") == 0, "`max_new_tokens` must be strictly positive"),
        (len(p.get("stop", [])) > 4, f"`stop` supports up to 4 stop sequences. Given: {len(p.get('stop', []))}"),
        (best_of > 1 and p.get("seed") is not None, "`seed` must not be set when `best_of` > 1"),
        ((p.get("top_n_tokens") or 0) > 5, f"`top_n_tokens` must be >= 0 and <= 5. Given: {p.get('top_n_tokens')}"),
        (inputs == "", "`inputs` cannot be empty"),
        (p.get("truncate") is not None and not 0 < p["truncate"] <= MAX_INPUT,
         f"`truncate` must be strictly positive and less than {MAX_INPUT}. Given: {p.get('truncate')}"),
    ]
    for failed, message in checks:
        if failed:
            return message
    length = min(input_tokens, p.get("truncate") or input_tokens)
    chunk = min(p.get("max_new_tokens") or max(MAX_TOTAL - length, 0), 1024)
    if length + chunk > MAX_TOTAL:
        return (f"`inputs` tokens + `max_new_tokens` must be <= {MAX_TOTAL}. Given: {length} `inputs` tokens and "
                f"{chunk} `max_new_tokens`")
    if length > MAX_INPUT:
        return f"`inputs` must have less than {MAX_INPUT} tokens. Given: {length}"
    return None


def check_generation(answer: dict[str, Any], inputs: str, p: dict[str, Any], prefix: bool, input_tokens: int) -> None:
    """The invariants of a successful `/generate` answer for these parameters."""
    exact(responses.GenerateResponse, answer)
    assert answer["generated_text"].startswith(inputs) or not prefix
    if not (p.get("details") or p.get("decoder_input_details")):
        assert "details" not in answer
        return
    details = answer["details"]
    assert details["generated_tokens"] == len(details["tokens"]) >= 1
    if p.get("max_new_tokens"):
        assert details["generated_tokens"] <= p["max_new_tokens"]
    if details["finish_reason"] == "eos_token":
        assert details["tokens"][-1]["special"]
    prefill = details["prefill"]
    if p.get("decoder_input_details"):
        assert len(prefill) == min(input_tokens, p.get("truncate") or input_tokens)
        assert prefill[0]["logprob"] is None and all(token["logprob"] <= 0 for token in prefill[1:])
    else:
        assert prefill == []
    if p.get("top_n_tokens"):
        assert len(details["top_tokens"]) == details["generated_tokens"]
        assert all(1 <= len(top) <= p["top_n_tokens"] for top in details["top_tokens"])
    else:
        assert "top_tokens" not in details
    best_of = p.get("best_of") or 1
    assert len(details.get("best_of_sequences", [])) == best_of - 1
    if sampling(p):
        assert details["seed"] is not None and (p.get("seed") is None or details["seed"] == p["seed"])
    else:
        assert details["seed"] is None


@PROPERTY_SETTINGS
@given(route=st.sampled_from(["/generate", "/", "/generate_stream"]), inputs=INPUTS, parameters=PARAMETERS,
       wrong=maybe(WRONG_TYPES))
def test_generate_parameters(server, route, inputs, parameters, wrong):
    if wrong is not None:
        parameters = {**parameters, wrong[0]: wrong[1]}
    response = post(server.url + route, {"inputs": inputs, "parameters": parameters})
    assert response.status_code < 500, response.text
    if wrong is not None:
        assert response.status_code == 422, response.text
        assert response.text.startswith(DESERIALIZE + "parameters." + wrong[0]), response.text
        return
    streaming = route == "/generate_stream"
    input_tokens = tokens(server.url, inputs)
    expected = generate_error(inputs, parameters, streaming, input_tokens)
    if streaming:
        assert response.status_code == 200, response.text
        events = sse(response)
        if expected is not None:
            assert events == [{"error": "Input validation error: " + expected, "error_type": "validation"}]
            return
        events = [exact(responses.StreamResponse, event) for event in events]
        assert [event["index"] for event in events] == list(range(1, len(events) + 1))
        assert events[-1]["generated_text"] is not None
        assert (events[-1]["details"] is not None) == bool(parameters.get("details"))
        return
    if expected is not None:
        assert (response.status_code, response.json()) == (
            422, {"error": "Input validation error: " + expected, "error_type": "validation"})
        return
    assert response.status_code == 200, response.text
    answer = response.json()
    full_text = parameters.get("return_full_text")
    if route == "/":
        assert isinstance(answer, list) and len(answer) == 1
        answer = answer[0]
        full_text = True if full_text is None else full_text
    check_generation(answer, inputs, parameters, bool(full_text), input_tokens)


CHAT_FIELDS = st.fixed_dictionaries({}, optional={
    "temperature": maybe(number(-1.0, 2.0, 0.0, 1.0)),
    "top_p": maybe(number(-0.2, 1.2, 0.0, 1.0, 0.5)),
    "frequency_penalty": maybe(number(-3.0, 3.0, 2.0)),
    "presence_penalty": maybe(number(-3.0, 3.0, -2.0)),
    "max_tokens": st.one_of(st.integers(0, 8), st.integers(0, 8), st.just(500), st.none()),
    "n": maybe(st.integers(0, 5)),
    "logprobs": maybe(st.booleans()),
    "top_logprobs": maybe(st.integers(0, 7)),
    "seed": maybe(st.integers(0, 2**64 - 1)),
    "stop": maybe(st.one_of(st.text(min_size=1, max_size=3), STOP)),
    "logit_bias": maybe(st.one_of(
        st.dictionaries(st.one_of(st.integers(0, 600).map(str), st.sampled_from(["x", "-1", "1.5"])),
                        number(-150.0, 150.0, 100.0, -100.0), max_size=3),
        st.lists(st.floats(-1, 1), max_size=3))),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
})


def chat_error(fields: dict[str, Any], prompt_tokens: int) -> str | None:
    """The validation message for these chat fields (ours follow OpenAI where README says so), or None."""
    bias = fields.get("logit_bias")
    if isinstance(bias, dict):
        for key, value in bias.items():
            if not key.isdigit():
                return f"`logit_bias` keys must be token ids. Given: {key!r}"
            if not -100.0 <= value <= 100.0:
                return f"`logit_bias` values must be >= -100 and <= 100. Given: {value}"
    stop = fields.get("stop")
    stop = [stop] if isinstance(stop, str) else stop or []
    top = fields.get("top_logprobs") or 0
    n = 1 if fields.get("n") is None else fields["n"]
    checks = [
        (fields.get("temperature") is not None and fields["temperature"] < 0,
         "`temperature` must be strictly positive"),
        (fields.get("frequency_penalty") is not None and not -2.0 <= fields["frequency_penalty"] <= 2.0,
         "`frequency_penalty` must be >= -2.0 and <= 2.0"),
        (fields.get("presence_penalty") is not None and not -2.0 <= fields["presence_penalty"] <= 2.0,
         "`presence_penalty` must be >= -2.0 and <= 2.0"),
        (fields.get("top_p") is not None and not 0.0 < fields["top_p"] <= 1.0, "`top_p` must be > 0.0 and < 1.0"),
        (fields.get("max_tokens") == 0, "`max_new_tokens` must be strictly positive"),
        (len(stop) > 4, f"`stop` supports up to 4 stop sequences. Given: {len(stop)}"),
        (top > 5, f"`top_n_tokens` must be >= 0 and <= 5. Given: {top}"),
        (not 1 <= n <= 4, f"`n` must be >= 1 and <= 4. Given: {n}"),
    ]
    for failed, message in checks:
        if failed:
            return message
    chunk = min(fields.get("max_tokens") or max(MAX_TOTAL - prompt_tokens, 0), 1024)
    if prompt_tokens + chunk > MAX_TOTAL:
        return (f"`inputs` tokens + `max_new_tokens` must be <= {MAX_TOTAL}. Given: {prompt_tokens} `inputs` "
                f"tokens and {chunk} `max_new_tokens`")
    return None


@PROPERTY_SETTINGS
@given(fields=CHAT_FIELDS, content=st.text(min_size=1, max_size=20))
def test_chat_parameters(server, fields, content):
    body = {"messages": [{"role": "user", "content": content}], **fields}
    response = post(server.url + "/v1/chat/completions", body)
    assert response.status_code < 500, response.text
    prompt_tokens = len(post(server.url + "/chat_tokenize", body).json()["tokenize_response"])
    expected = chat_error(fields, prompt_tokens)
    n = fields.get("n") or 1
    if expected is not None:  # streamed or not: OpenAI's 400, before any stream opens
        assert response.status_code == 400, response.text
        error = exact(responses.OpenAIErrorResponse, response.json())
        assert error["error"]["message"] == "Input validation error: " + expected
        return
    if fields.get("stream"):
        assert response.status_code == 200, response.text
        events = sse(response)
        assert events[-1] == "[DONE]"
        chunks = [exact(responses.ChatCompletionChunk, event) for event in events[:-1]]
        if fields.get("stream_options", {}).get("include_usage"):
            assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] is not None
            chunks = chunks[:-1]
        assert all(len(chunk["choices"]) == 1 and chunk["usage"] is None for chunk in chunks)
        finals = [chunk for chunk in chunks if chunk["choices"][0]["finish_reason"] is not None]
        assert sorted(chunk["choices"][0]["index"] for chunk in finals) == list(range(n))
        return
    assert response.status_code == 200, response.text
    completion = exact(responses.ChatCompletion, response.json())
    assert [choice["index"] for choice in completion["choices"]] == list(range(n))
    assert completion["usage"]["prompt_tokens"] == prompt_tokens
    for choice in completion["choices"]:
        if fields.get("logprobs"):
            entries = choice["logprobs"]["content"]
            assert all(len(entry["top_logprobs"]) == min(fields.get("top_logprobs") or 0, 5) for entry in entries)
            assert all(entry["logprob"] is None or entry["logprob"] <= 0 for entry in entries)
        else:
            assert choice["logprobs"] is None


def test_the_server_keeps_serving(server):
    """Runs after the properties (file order): still healthy, still generating, no 5xx in the log."""
    assert requests.get(server.url + "/health", timeout=10).status_code == 200
    answer = post(server.url + "/generate", {"inputs": "Still there?", "parameters": {"max_new_tokens": 2}})
    assert answer.status_code == 200 and server.process.poll() is None
    assert "Traceback" not in server.log()
