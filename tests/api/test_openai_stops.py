"""OpenAI's stop strings on `/v1` and `/invocations`: the text ends before the stop, nothing sent is taken back."""

from __future__ import annotations

import pytest
from api_helpers import sse_events

from serving.api.protocol.stop_text import StopHoldback, without_stop
from serving.messages import FinishReason


def chat(http, words: str, path: str = "/v1/chat/completions", **fields):
    return http.post(path, json={"messages": [{"role": "user", "content": words}], **fields})


def chat_stream_texts(response) -> list[str]:
    events = sse_events(response.data)
    assert events[-1] == "[DONE]"
    return [event["choices"][0]["delta"]["content"] for event in events[:-1]]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/invocations"])
def test_chat_ends_before_the_stop_string_with_reason_stop(http, path):
    choice = chat(http, "x ab abc d", path, stop=["abc"]).get_json()["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == ("x ab ", "stop")


def test_chat_stream_holds_back_what_could_become_the_stop_string(http):
    texts = chat_stream_texts(chat(http, "x ab abc d", stream=True, stop=["abc"]))
    assert texts == ["x", " ", "ab "]  # " ab" could start "abc": "ab" waits, then the stop string is dropped
    events = sse_events(chat(http, "x ab abc d", stream=True, stop=["abc"]).data)
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_chat_stream_releases_held_text_that_did_not_become_a_stop_string(http):
    assert chat_stream_texts(chat(http, "x ab d", stream=True, stop=["abc"])) == ["x", " ", "ab d", ""]


def test_completions_end_before_the_stop_string_streamed_and_not(http):
    body = {"prompt": "Thought: go Observation: done", "stop": [" Observation:"]}
    choice = http.post("/v1/completions", json=body).get_json()["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == ("Thought: go", "stop")
    events = sse_events(http.post("/v1/completions", json={**body, "stream": True}).data)
    assert "".join(event["choices"][0]["text"] for event in events[:-1] if event["choices"]) == "Thought: go"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


def test_tgi_routes_keep_the_stop_string_and_tgis_reason(http):
    body = http.post("/generate", json={"inputs": "x ab abc d", "parameters": {"stop": ["abc"], "details": True}})
    assert body.get_json()["generated_text"] == "x ab abc"
    assert body.get_json()["details"]["finish_reason"] == "stop_sequence"


def test_without_stop_takes_off_the_longest_stop_the_text_ends_with():
    assert without_stop("a xab", FinishReason.STOP_SEQUENCE, ("b", "ab", "zz")) == "a x"
    assert without_stop("a xab", FinishReason.LENGTH, ("ab",)) == "a xab"


def test_holdback_sends_everything_once_the_sequence_ends_for_another_reason():
    holdback = StopHoldback(("\nObservation:",))
    sent = [holdback.release(piece, None) for piece in ("Thought", "\n", "Obs")]
    assert sent == ["Thought", "", ""]
    assert holdback.release("erve", FinishReason.LENGTH) == "\nObserve"
