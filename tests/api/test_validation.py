"""TGI's validation messages (API.md §2.2, §2.3, §6.2) for the checks the API layer owns, and engine failures."""

from __future__ import annotations

import pytest
from api_helpers import make_config, sse_events

from serving.api.app import create_app
from serving.messages import ErrorKind

PREFIX = "Input validation error: "

CASES = [
    ({"temperature": 0.0}, "`temperature` must be strictly positive"),
    ({"temperature": -1.0}, "`temperature` must be strictly positive"),
    ({"repetition_penalty": 0.0}, "`repetition_penalty` must be strictly positive"),
    ({"frequency_penalty": 2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"frequency_penalty": -2.5}, "`frequency_penalty` must be >= -2.0 and <= 2.0"),
    ({"top_p": 0.0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"top_p": 1.5}, "`top_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 1.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"typical_p": 0.0}, "`typical_p` must be > 0.0 and < 1.0"),
    ({"top_k": 0}, "`top_k` must be strictly positive"),
    ({"top_k": -3}, "`top_k` must be strictly positive"),
    ({"max_new_tokens": 0}, "`max_new_tokens` must be strictly positive"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "`stop` supports up to 4 stop sequences. Given: 5"),
    ({"top_n_tokens": 6}, "`top_n_tokens` must be >= 0 and <= 5. Given: 6"),
    ({"best_of": 3, "do_sample": True}, "`best_of` must be > 0 and <= 2. Given: 3"),
    ({"best_of": 2}, "you must use sampling when `best_of` is > 1"),
    ({"best_of": 2, "do_sample": True, "seed": 1}, "`seed` must not be set when `best_of` > 1"),
    ({"truncate": 0}, "`truncate` must be strictly positive and less than 100. Given: 0"),
    ({"truncate": 101}, "`truncate` must be strictly positive and less than 100. Given: 101"),
    ({"grammar": {"type": "json", "value": {"type": "objekt"}}}, "grammar is not valid: Invalid type: objekt"),
    ({"grammar": {"type": "json", "value": "{"}}, "grammar is not valid: Expecting property name enclosed in double "
                                                  "quotes at line 1 column 2"),
    ({"grammar": {"type": "json", "value": 3}}, "grammar is not supported"),
    ({"grammar": {"type": "regex", "value": "(ab"}}, "grammar is not valid: at 1(8): invalid regex \"(ab\" (in regex): "
                                                      "regex parse error: (ab error: unclosed group"),
    ({"grammar": {"type": "ebnf", "value": "x"}}, "grammar is not valid: unknown grammar type 'ebnf': expected json, "
                                                  "json_object, json_schema or regex"),
    # TGI's order: the first failing check wins.
    ({"temperature": 0.0, "top_p": 2.0, "top_k": 0}, "`temperature` must be strictly positive"),
    ({"top_p": 2.0, "top_k": 0}, "`top_p` must be > 0.0 and < 1.0"),
    ({"stop": ["a"] * 5, "top_n_tokens": 9}, "`stop` supports up to 4 stop sequences. Given: 5"),
]


@pytest.mark.parametrize("parameters, message", CASES)
def test_validation_errors(http, engine, parameters, message):
    response = http.post("/generate", json={"inputs": "a", "parameters": parameters})
    assert response.status_code == 422
    assert response.get_json() == {"error": PREFIX + message, "error_type": "validation"}
    assert engine.requests == []


@pytest.mark.parametrize("parameters, message", CASES[:6])
def test_validation_errors_on_a_stream_are_its_only_event(http, parameters, message):
    response = http.post("/generate_stream", json={"inputs": "a", "parameters": parameters})
    assert response.status_code == 200
    assert sse_events(response.data) == [{"error": PREFIX + message, "error_type": "validation"}]


def test_empty_inputs(http):
    response = http.post("/generate", json={"inputs": "", "parameters": {"top_n_tokens": 1}})
    assert response.get_json()["error"] == PREFIX + "`inputs` cannot be empty"


@pytest.mark.parametrize("parameters, message", [
    ({"best_of": 2, "do_sample": True}, "`best_of` != 1 is not supported when streaming tokens"),
    ({"best_of": 0}, "`best_of` != 1 is not supported when streaming tokens"),
    ({"decoder_input_details": True}, "`decoder_input_details` == true is not supported when streaming tokens"),
])
def test_streaming_only_checks(http, parameters, message):
    events = sse_events(http.post("/generate_stream", json={"inputs": "a", "parameters": parameters}).data)
    assert events == [{"error": PREFIX + message, "error_type": "validation"}]


def test_best_of_zero_is_one_without_streaming(http, engine):
    assert http.post("/generate", json={"inputs": "a", "parameters": {"best_of": 0}}).status_code == 200
    assert len(engine.requests) == 1


def test_best_of_disabled(engine):
    http = create_app(make_config(max_best_of=1), engine).test_client()
    response = http.post("/generate", json={"inputs": "a", "parameters": {"best_of": 2, "do_sample": True}})
    assert response.get_json()["error"] == PREFIX + "`best_of` != 1 is not allowed for this endpoint"


@pytest.mark.parametrize("kind, status", [
    (ErrorKind.VALIDATION, 422), (ErrorKind.OVERLOADED, 429), (ErrorKind.GENERATION, 424),
    (ErrorKind.INCOMPLETE, 500), (ErrorKind.UNAVAILABLE, 503),
])
def test_engine_failures_map_to_statuses(http, engine, kind, status):
    engine.fail_at_admission, engine.fail_kind, engine.fail_message = True, kind, "scripted"
    response = http.post("/generate", json={"inputs": "a"})
    assert response.status_code == status
    assert response.get_json() == {"error": "scripted", "error_type": kind.value}
    response = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}]})
    assert response.status_code == (400 if kind is ErrorKind.VALIDATION else status)
    assert response.get_json()["error"]["message"] == "scripted"


def test_engine_failure_mid_generation(http, engine):
    engine.fail_after, engine.fail_kind = 1, ErrorKind.GENERATION
    engine.fail_message = "Request failed during generation: boom"
    response = http.post("/generate", json={"inputs": "a b c"})
    assert response.status_code == 424
    assert response.get_json() == {"error": "Request failed during generation: boom", "error_type": "generation"}
