"""Every error of API.md §6 against the real server over raw HTTP, with TGI's status, `error_type` and message,
before and after a stream opens; and how the official clients classify them (§6.4).
"""

from __future__ import annotations

import threading

import pytest
import requests
from compat_helpers import API_KEY, TIMEOUT, exact, post, sse, token_count

from serving.api.protocol import responses

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# (parameters, message after "Input validation error: ") on the shared server: MAX_TOTAL_TOKENS=256, defaults else.
VALIDATION = [
    ({"temperature": 0.0}, "`temperature` must be strictly positive"),
    ({"temperature": -0.5}, "`temperature` must be strictly positive"),
    ({"repetition_penalty": 0.0}, "`repetition_penalty` must be strictly positive"),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"top_p": 1.5}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"best_of": 2, "do_sample": True, "seed": 5}, "`seed` must not be set when `best_of` > 1"),
    ({"truncate": 0}, "`truncate` must be strictly positive and less than 255. Given: 0"),
    ({"truncate": 256}, "`truncate` must be strictly positive and less than 255. Given: 256"),
    ({"grammar": {"type": "json", "value": {"type": "objekt"}}}, "grammar is not valid: Invalid type: objekt"),
    ({"temperature": 0.0, "top_k": 0}, "`temperature` must be strictly positive"),  # TGI's order
]


@pytest.mark.parametrize("parameters, message", VALIDATION)
def test_validation_errors_on_generate_and_in_the_stream(server, parameters, message):
    expected = {"error": "Input validation error: " + message, "error_type": "validation"}
    body = {"inputs": "Hello", "parameters": {"max_new_tokens": 4, **parameters}}
    response = post(server.url + "/generate", body)
    assert (response.status_code, response.json()) == (422, expected)
    stream_body = {"inputs": "Hello", "parameters": {"max_new_tokens": 4, **parameters}}
    if parameters.get("best_of", 1) == 1:
        streamed = post(server.url + "/generate_stream", stream_body)
        assert streamed.status_code == 200
        assert sse(streamed) == [expected]


def test_empty_inputs(server):
    expected = {"error": "Input validation error: `inputs` cannot be empty", "error_type": "validation"}
    assert post(server.url + "/generate", {"inputs": "", "parameters": {}}).json() == expected
    assert sse(post(server.url + "/generate_stream", {"inputs": "", "parameters": {}})) == [expected]


def test_token_budget_is_checked_by_the_engine_before_and_after_the_stream_opens(server):
    inputs = "deep learning " * 40
    count = token_count(server.url, inputs)
    message = (f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= 256. Given: {count} "
               "`inputs` tokens and 200 `max_new_tokens`")
    body = {"inputs": inputs, "parameters": {"max_new_tokens": 200}}
    response = post(server.url + "/generate", body)
    assert (response.status_code, response.json()) == (422, {"error": message, "error_type": "validation"})
    streamed = post(server.url + "/generate_stream", body)
    assert (streamed.status_code, sse(streamed)) == (200, [{"error": message, "error_type": "validation"}])
    big = {"inputs": "Hi", "parameters": {"max_new_tokens": 5000}}  # only the first 1024 are checked, as in TGI
    given = f"Given: {token_count(server.url, 'Hi')} `inputs` tokens and 1024 `max_new_tokens`"
    assert given in post(server.url + "/generate", big).text


def test_input_length_error(server, options_server):
    inputs = "deep learning " * 20
    count = token_count(server.url, inputs)  # the same model: /tokenize of the options server needs the key
    assert 64 < count <= 118
    response = post(options_server.url + "/generate", {"inputs": inputs, "parameters": {"max_new_tokens": 10}},
                    headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status_code == 422
    assert response.json()["error"] == f"Input validation error: `inputs` must have less than 64 tokens. Given: {count}"


@pytest.mark.parametrize("parameters, message", [
    ({"best_of": 2, "do_sample": True}, "`best_of` != 1 is not supported when streaming tokens"),
    ({"best_of": 0}, "`best_of` != 1 is not supported when streaming tokens"),
    ({"decoder_input_details": True}, "`decoder_input_details` == true is not supported when streaming tokens"),
])
def test_stream_only_errors(server, parameters, message):
    response = post(server.url + "/generate_stream", {"inputs": "Hello", "parameters": parameters})
    assert response.status_code == 200
    assert sse(response) == [{"error": "Input validation error: " + message, "error_type": "validation"}]


def test_best_of_not_allowed_for_this_endpoint(options_server):
    response = post(options_server.url + "/generate", {"inputs": "Hi", "parameters": {"best_of": 2,
                                                                                     "do_sample": True}},
                    headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.json() == {"error": "Input validation error: `best_of` != 1 is not allowed for this endpoint",
                               "error_type": "validation"}


@pytest.mark.parametrize("fields, message", [
    ({"temperature": -1.0}, "`temperature` must be strictly positive"),
    ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"max_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"top_logprobs": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"frequency_penalty": -3.0}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"response_format": {"type": "json", "value": {"type": "objekt"}}}, "grammar is not valid: Invalid type: objekt"),
    ({"response_format": {"type": "json_object"}, "min_tokens": 2},
     "a grammar (`grammar`, `response_format` or `tools`) cannot be combined with `min_tokens` or `ignore_eos`: "
     "the grammar ends the text with EOS once it is complete"),
])
def test_chat_validation_errors_are_openai_400s_streamed_or_not(server, fields, message):
    body = {"messages": [{"role": "user", "content": "Hi"}], **fields}
    for stream in (False, True):
        response = post(server.url + "/v1/chat/completions", {**body, "stream": stream})
        assert response.status_code == 400
        error = exact(responses.OpenAIErrorResponse, response.json())
        assert error["error"]["message"] == "Input validation error: " + message
        assert (error["error"]["type"], error["error_type"]) == ("invalid_request_error", "validation")


def test_openai_client_raises_bad_request(server):
    import openai

    with openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="tgi", messages=[{"role": "user", "content": "Hi"}], top_p=0.0)
    assert "`top_p` must be > 0.0 and < 1.0" in caught.value.message
    assert caught.value.status_code == 400


def test_official_clients_classify_validation_errors(server):
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import ValidationError as HubValidationError
    from text_generation import Client
    from text_generation.errors import ValidationError

    with pytest.raises(ValidationError, match="`top_k` must be strictly positive"):
        Client(server.url).generate("Hi", top_k=0)
    with pytest.raises(ValidationError, match="`top_k` must be strictly positive"):
        list(Client(server.url).generate_stream("Hi", top_k=0))
    with InferenceClient(base_url=server.url) as client:
        with pytest.raises(HubValidationError, match="`temperature` must be strictly positive"):
            client.text_generation("Hi", temperature=-1.0)


def test_tool_errors(server):
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    body = {"messages": [{"role": "user", "content": "Hi"}], "tools": tools}
    regex = post(server.url + "/v1/chat/completions", {**body, "response_format": {"type": "regex", "value": "a"}})
    assert (regex.status_code, regex.json()["error"]["message"], regex.json()["error_type"]) == (
        400, "Tool error: with tools, `response_format` must be a JSON schema", "tool_error")
    unknown = post(server.url + "/v1/chat/completions", {**body, "tool_choice": "news"})
    assert unknown.json()["error"]["message"] == "Tool error: Tool with name news not found"
    assert post(server.url + "/v1/chat/completions", {**body, "tool_choice": "none", "max_tokens": 2}).ok


def test_completion_errors(server):
    suffix = post(server.url + "/v1/completions", {"prompt": "Hi", "suffix": "!"})
    assert (suffix.status_code, suffix.json()["error_type"], suffix.json()["error"]["message"]) == (
        400, "suffix not supported", "Suffix is not supported and can be achieved by preprocessing the prompt.")
    batch = post(server.url + "/v1/completions", {"prompt": ["a"] * 5})
    assert (batch.status_code, batch.json()["error_type"], batch.json()["error"]["message"]) == (
        400, "batch size exceeded", "Number of prompts exceeds the maximum allowed batch size of 4")


def test_overloaded(options_server):
    """MAX_CONCURRENT_REQUESTS=2: while two streams run, a third request is refused with TGI's 429, and a third
    stream gets the same error as its only event."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"inputs": "Hi", "parameters": {"max_new_tokens": 110}}

    def hold(started: threading.Event) -> None:
        with requests.post(options_server.url + "/generate_stream", json=body, headers=headers, stream=True,
                           timeout=TIMEOUT) as response:
            lines = response.iter_lines()
            next(lines)
            started.set()
            for _ in lines:
                pass

    expected = {"error": "Model is overloaded", "error_type": "overloaded"}
    for _ in range(5):  # both streams must still run when the third request arrives; retry if one finished
        events = [threading.Event(), threading.Event()]
        threads = [threading.Thread(target=hold, args=(event,)) for event in events]
        for thread in threads:
            thread.start()
        assert all(event.wait(TIMEOUT) for event in events)
        refused = post(options_server.url + "/generate", body, headers=headers)
        refused_stream = post(options_server.url + "/generate_stream", body, headers=headers)
        for thread in threads:
            thread.join()
        if refused.status_code == 429 and refused_stream.ok and sse(refused_stream) == [expected]:
            assert refused.json() == expected
            return
    raise AssertionError("no request was refused while two ran")


def test_framework_errors_are_plain_text(server):
    url = server.url + "/generate"
    wrong_type = requests.post(url, data='{"inputs": "a"}', headers={"Content-Type": "text/plain"}, timeout=10)
    assert (wrong_type.status_code, wrong_type.text) == (415, "Expected request with `Content-Type: application/json`")
    assert wrong_type.headers["content-type"].startswith("text/plain")
    bad_json = requests.post(url, data="{", headers={"Content-Type": "application/json"}, timeout=10)
    assert bad_json.status_code == 400 and bad_json.text.startswith("Failed to parse the request body as JSON: ")
    shape = post(url, {"inputs": "a", "parameters": {"max_new_tokens": -1}})
    assert shape.status_code == 422
    assert shape.text.startswith("Failed to deserialize the JSON body into the target type: parameters.max_new_tokens")
    missing = post(url, {})
    assert missing.text == "Failed to deserialize the JSON body into the target type: missing field `inputs`"
    null_bool = post(url, {"inputs": "a", "parameters": {"do_sample": None}})
    assert null_bool.status_code == 422 and "parameters.do_sample" in null_bool.text
    assert post(url, {"inputs": "a", "parameters": {"max_new_tokens": 1}, "unknown": 1}).status_code == 200
    assert requests.get(server.url + "/nope", timeout=10).status_code == 404
    not_allowed = requests.get(url, timeout=10)
    assert (not_allowed.status_code, not_allowed.content) == (405, b"")


def test_payload_limit(options_server):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    response = post(options_server.url + "/generate", {"inputs": "x" * 5000}, headers=headers)
    assert (response.status_code, response.text) == (413, "Failed to buffer the request body: length limit exceeded")
    under = {"inputs": "Hello", "parameters": {"max_new_tokens": 1}, "padding": "y" * 3900}
    assert post(options_server.url + "/generate", under, headers=headers).status_code == 200
