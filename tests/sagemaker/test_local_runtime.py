"""Layer C: boto3 and the SageMaker SDK, unchanged, against the local runtime stand-in in front of our server."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError

from sagemaker_helpers import RuntimeProcess
from serving.sagemaker_local import event_frame, model_stream_error, payload_part

pytestmark = pytest.mark.integration


def runtime_client(runtime):
    """boto3's sagemaker-runtime client, pointed at the stand-in the way users do it: by environment."""
    return boto3.client("sagemaker-runtime")


@pytest.fixture
def endpoint_env(runtime, monkeypatch):
    """AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME, as a user without AWS access sets it."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
    return runtime


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an SSE text."""
    return [line[len("data:"):].strip() for line in text.split("\n") if line.startswith("data:")]


def test_frames_decode_with_botocore():
    buffer = EventStreamBuffer()
    buffer.add_data(payload_part(b"data:{}\n\n") + model_stream_error("broken"))
    first, second = list(buffer)
    assert first.headers == {":event-type": "PayloadPart", ":content-type": "application/octet-stream",
                             ":message-type": "event"}
    assert first.payload == b"data:{}\n\n"
    assert second.headers[":message-type"] == "exception"
    assert json.loads(second.payload) == {"Message": "broken", "ErrorCode": "StreamBroken"}
    assert len(event_frame({}, b"")) == 16


def test_invoke_endpoint_with_messages(endpoint_env):
    response = runtime_client(endpoint_env).invoke_endpoint(
        EndpointName="my-llm", ContentType="application/json", Accept="application/json",
        CustomAttributes="trace=1",
        Body=json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}))
    body = json.loads(response["Body"].read())
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"


def test_invoke_endpoint_with_inputs_returns_a_list(endpoint_env):
    response = runtime_client(endpoint_env).invoke_endpoint(
        EndpointName="my-llm", ContentType="application/json",
        Body=json.dumps({"inputs": "The model", "parameters": {"max_new_tokens": 4}}))
    body = json.loads(response["Body"].read())
    assert isinstance(body, list) and body[0]["generated_text"].startswith("The model")


def test_a_container_error_is_a_model_error_424(endpoint_env):
    with pytest.raises(ClientError) as raised:
        runtime_client(endpoint_env).invoke_endpoint(
            EndpointName="my-llm", ContentType="application/json",
            Body=json.dumps({"inputs": "hi", "parameters": {"max_new_tokens": 1, "top_p": 7}}))
    error = raised.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert error["OriginalStatusCode"] == 422
    assert json.loads(error["OriginalMessage"])["error_type"] == "validation"
    assert "Received client error (422) from primary with message" in error["Error"]["Message"]


def test_invoke_endpoint_with_response_stream_yields_tokens_as_payload_parts(endpoint_env):
    response = runtime_client(endpoint_env).invoke_endpoint_with_response_stream(
        EndpointName="my-llm", ContentType="application/json",
        Body=json.dumps({"inputs": "The model", "parameters": {"max_new_tokens": 12, "details": True},
                         "stream": True}))
    assert response["ContentType"] == "text/event-stream"
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]
    assert len(parts) > 1, "tokens arrive as separate parts, not one body"
    events = [json.loads(data) for data in sse_data(b"".join(parts).decode())]
    assert [event["index"] for event in events] == list(range(1, len(events) + 1))
    assert events[-1]["details"]["generated_tokens"] == len(events)


def test_chat_stream_ends_with_done(endpoint_env):
    response = runtime_client(endpoint_env).invoke_endpoint_with_response_stream(
        EndpointName="my-llm", ContentType="application/json", Accept="application/json",
        Body=json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6, "stream": True}))
    data = sse_data(b"".join(event["PayloadPart"]["Bytes"] for event in response["Body"]).decode())
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)


def test_a_stream_request_the_container_rejects_is_a_model_error(endpoint_env):
    with pytest.raises(ClientError) as raised:
        runtime_client(endpoint_env).invoke_endpoint_with_response_stream(
            EndpointName="my-llm", ContentType="application/json", Body=b'{"nothing": 1}')
    assert raised.value.response["Error"]["Code"] == "ModelError"
    assert raised.value.response["OriginalStatusCode"] == 422


def test_the_sdk_predictor_predicts_and_streams(endpoint_env):
    import sagemaker
    from sagemaker.huggingface import HuggingFacePredictor
    from sagemaker.iterators import LineIterator

    predictor = HuggingFacePredictor("my-llm", sagemaker_session=sagemaker.Session())
    reply = predictor.predict({"messages": [{"role": "user", "content": "What is deep learning?"}],
                               "max_tokens": 5})
    assert reply["choices"][0]["message"]["role"] == "assistant"
    lines = list(predictor.predict_stream(
        {"inputs": "What is deep learning?", "parameters": {"max_new_tokens": 6}, "stream": True},
        iterator=LineIterator))
    tokens = [json.loads(line[len(b"data:"):])["token"]["text"] for line in lines if line.startswith(b"data:")]
    assert len(tokens) == 6


def test_named_endpoints_reject_unknown_names(server, tmp_path, monkeypatch):
    proc = RuntimeProcess(server.url, tmp_path, "--endpoint", f"known={server.url}")
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", proc.url)
        client = boto3.client("sagemaker-runtime")
        with pytest.raises(ClientError) as raised:
            client.invoke_endpoint(EndpointName="unknown", ContentType="application/json", Body=b"{}")
        assert raised.value.response["Error"]["Code"] == "ValidationError"
        response = client.invoke_endpoint(EndpointName="known", ContentType="application/json",
                                          Body=json.dumps({"prompt": "The", "max_tokens": 2}))
        assert json.loads(response["Body"].read())["object"] == "text_completion"
    finally:
        proc.stop()
