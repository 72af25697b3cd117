"""Stream tokens from an endpoint as they are generated, two ways: boto3's `invoke_endpoint_with_response_stream`
and the SDK's `predictor.predict_stream`.

    python stream.py --endpoint-name my-llm

The container answers `"stream": true` with server-sent events (`data:{json}` lines); SageMaker forwards the bytes
in `PayloadPart` events whose boundaries need not fall on line ends, so lines are reassembled before parsing.
Against the local runtime stand-in (no AWS account), set AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME (see README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Iterable, Iterator

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import boto3  # noqa: E402
import sagemaker  # noqa: E402
from sagemaker.huggingface import HuggingFacePredictor  # noqa: E402
from sagemaker.iterators import LineIterator  # noqa: E402


def sse_lines(parts: Iterable[bytes]) -> Iterator[bytes]:
    """Whole lines out of byte chunks that may split them anywhere."""
    pending = b""
    for part in parts:
        pending += part
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending


def token_texts(lines: Iterable[bytes]) -> Iterator[str]:
    """The text of each token event: TGI generate events (`token.text`) or OpenAI chat chunks (`delta.content`)."""
    for line in lines:
        if not line.startswith(b"data:"):
            continue
        data = line[len(b"data:"):].strip()
        if data == b"[DONE]":
            return
        event = json.loads(data)
        if "error" in event:
            raise RuntimeError(f"the model failed mid-stream: {event['error']}")
        if "token" in event:
            if not event["token"].get("special"):
                yield event["token"]["text"]
        elif event.get("choices"):
            yield event["choices"][0].get("delta", {}).get("content") or ""


def with_boto3(endpoint: str, question: str, max_tokens: int) -> None:
    """boto3's sagemaker-runtime client: a TGI generate stream."""
    client = boto3.client("sagemaker-runtime")
    response = client.invoke_endpoint_with_response_stream(
        EndpointName=endpoint,
        ContentType="application/json",
        Body=json.dumps({"inputs": question, "parameters": {"max_new_tokens": max_tokens}, "stream": True}),
    )
    parts = (event["PayloadPart"]["Bytes"] for event in response["Body"] if "PayloadPart" in event)
    for text in token_texts(sse_lines(parts)):
        print(text, end="", flush=True)
    print()


def with_predictor(endpoint: str, question: str, max_tokens: int) -> None:
    """The SDK's predictor: a chat stream, lines reassembled by the SDK's LineIterator."""
    predictor = HuggingFacePredictor(endpoint, sagemaker_session=sagemaker.Session())
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens, "stream": True}
    for text in token_texts(predictor.predict_stream(body, iterator=LineIterator)):
        print(text, end="", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--question", default="What is deep learning?")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    print("boto3 invoke_endpoint_with_response_stream:", file=sys.stderr)
    with_boto3(args.endpoint_name, args.question, args.max_tokens)
    print("predictor.predict_stream:", file=sys.stderr)
    with_predictor(args.endpoint_name, args.question, args.max_tokens)


if __name__ == "__main__":
    main()
