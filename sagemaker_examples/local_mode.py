"""The whole SageMaker flow on this machine with SDK local mode (docker): deploy, predict, delete.

    python local_mode.py --image-uri serving:cpu --model-dir /path/to/model       # a local model directory
    python local_mode.py --image-uri serving:gpu --model-id org/model --gpu       # a hub id, on local GPUs

The model directory is the endpoint's model data: local mode mounts it at /opt/ml/model, as SageMaker unpacks
`model_data` there. Needs docker with compose, an AWS region, and no AWS credentials (nothing is uploaded).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import boto3  # noqa: E402
from sagemaker.huggingface import HuggingFaceModel  # noqa: E402
from sagemaker.local import LocalSession  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-uri", default="serving:cpu")
    parser.add_argument("--model-dir", help="a model directory (save_pretrained); mounted at /opt/ml/model")
    parser.add_argument("--model-id", help="a hub id instead of --model-dir (downloaded by the container)")
    parser.add_argument("--gpu", action="store_true", help="instance_type local_gpu (all local GPUs)")
    parser.add_argument("--num-gpus", type=int, default=1)
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    if not (args.model_dir or args.model_id):
        parser.error("give --model-dir or --model-id")

    session = LocalSession(boto_session=boto3.Session(region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1")))
    session.config = {"local": {"local_code": True, "serving_port": args.port}}
    model_dir = os.path.abspath(args.model_dir) if args.model_dir else tempfile.mkdtemp(prefix="model-data-")
    model = HuggingFaceModel(
        image_uri=args.image_uri,
        env={"HF_MODEL_ID": args.model_id or "/opt/ml/model", "SM_NUM_GPUS": json.dumps(args.num_gpus),
             **({"HF_TOKEN": os.environ["HF_TOKEN"]} if os.environ.get("HF_TOKEN") else {})},
        role="arn:aws:iam::111111111111:role/local-mode",  # not checked in local mode
        model_data=f"file://{model_dir}",
        code_location="s3://unused-bucket/code",  # keeps the SDK from looking for a default S3 bucket
        sagemaker_session=session,
    )
    predictor = model.deploy(initial_instance_count=1, instance_type="local_gpu" if args.gpu else "local",
                             wait=False)
    try:
        reply = predictor.predict({"messages": [{"role": "user", "content": "What is deep learning?"}],
                                   "max_tokens": 64})
        print(reply["choices"][0]["message"]["content"])
        generated = predictor.predict({"inputs": "What is deep learning?", "parameters": {"max_new_tokens": 32}})
        print(generated[0]["generated_text"])
    finally:
        predictor.delete_endpoint()


if __name__ == "__main__":
    main()
