"""Ask a deployed endpoint a chat question with the SDK's predictor: `predictor.predict({"messages": [...]})`.

    python predict_messages.py --endpoint-name my-llm
    python predict_messages.py --endpoint-name any --local --port 8080    # a local-mode endpoint or container

Against the local runtime stand-in (no AWS account), set AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME (see README.md).
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import boto3  # noqa: E402
import sagemaker  # noqa: E402
from sagemaker.huggingface import HuggingFacePredictor  # noqa: E402
from sagemaker.local import LocalSession  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint-name", required=True)
    parser.add_argument("--local", action="store_true", help="talk to localhost:--port directly (local mode)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--question", default="What is deep learning?")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    if args.local:
        session = LocalSession(boto_session=boto3.Session(region_name=os.environ.get("AWS_DEFAULT_REGION",
                                                                                     "us-east-1")))
        session.config = {"local": {"serving_port": args.port}}
    else:
        session = sagemaker.Session()
    predictor = HuggingFacePredictor(args.endpoint_name, sagemaker_session=session)

    reply = predictor.predict({
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": args.question},
        ],
        "max_tokens": args.max_tokens,
    })
    print(reply["choices"][0]["message"]["content"])
    print(json.dumps(reply["usage"]))


if __name__ == "__main__":
    main()
