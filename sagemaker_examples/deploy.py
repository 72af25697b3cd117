"""Deploy an LLM with the SageMaker Python SDK v2, the Hugging Face docs' code with only `image_uri` changed.

    python deploy.py --image-uri <account>.dkr.ecr.<region>.amazonaws.com/serving:gpu \
        --model-id meta-llama/Llama-3.2-1B-Instruct --instance-type ml.g5.2xlarge --endpoint-name my-llm

`--instance-type local` (or `local_gpu`) runs the image on this machine with docker instead (SDK local mode); the
endpoint then lives as long as this process: it serves on localhost:--port until Ctrl-C, then is deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import boto3  # noqa: E402
import sagemaker  # noqa: E402
from sagemaker.huggingface import HuggingFaceModel  # noqa: E402
from sagemaker.local import LocalSession  # noqa: E402


def execution_role(role: str | None) -> str:
    """--role, else the notebook's execution role, else the IAM role named sagemaker_execution_role."""
    if role:
        return role
    try:
        return sagemaker.get_execution_role()
    except ValueError:
        return boto3.client("iam").get_role(RoleName="sagemaker_execution_role")["Role"]["Arn"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-uri", required=True, help="the serving image (ECR for real endpoints)")
    parser.add_argument("--model-id", default="/opt/ml/model", help="HF_MODEL_ID: a hub id, or /opt/ml/model")
    parser.add_argument("--model-data", help="S3 (or file:// for local) model artifacts, mounted at /opt/ml/model")
    parser.add_argument("--instance-type", default="ml.g5.2xlarge", help="ml.* instance, or local / local_gpu")
    parser.add_argument("--num-gpus", type=int, default=1, help="SM_NUM_GPUS: GPUs to spread the model over")
    parser.add_argument("--endpoint-name", default=None)
    parser.add_argument("--role", default=None, help="IAM role ARN (default: the execution role)")
    parser.add_argument("--hf-token", default=os.environ.get("HF_TOKEN"), help="for gated hub models")
    parser.add_argument("--port", type=int, default=8080, help="local mode: the port on localhost")
    args = parser.parse_args()

    # Hub model configuration, as on a model page's "Deploy > Amazon SageMaker".
    hub = {"HF_MODEL_ID": args.model_id, "SM_NUM_GPUS": json.dumps(args.num_gpus)}
    if args.hf_token:
        hub["HUGGING_FACE_HUB_TOKEN"] = args.hf_token

    local = args.instance_type in ("local", "local_gpu")
    extra = {}
    if local:
        session = LocalSession(boto_session=boto3.Session(region_name=os.environ.get("AWS_DEFAULT_REGION",
                                                                                     "us-east-1")))
        session.config = {"local": {"local_code": True, "serving_port": args.port}}
        # Local mode needs model data (it is mounted at /opt/ml/model); an empty directory will do for a hub id.
        extra = {"sagemaker_session": session, "code_location": "s3://unused-bucket/code",
                 "model_data": args.model_data or f"file://{tempfile.mkdtemp(prefix='model-data-')}"}
        role = args.role or "arn:aws:iam::111111111111:role/local-mode"
    else:
        role = execution_role(args.role)
        if args.model_data:
            extra["model_data"] = args.model_data

    huggingface_model = HuggingFaceModel(image_uri=args.image_uri, env=hub, role=role, **extra)
    predictor = huggingface_model.deploy(
        initial_instance_count=1,
        instance_type=args.instance_type,
        endpoint_name=args.endpoint_name,
        container_startup_health_check_timeout=600,
        wait=not local,
    )
    print(f"endpoint {predictor.endpoint_name} is in service")
    if local:
        print(f"serving on http://localhost:{args.port} (/ping, /invocations); Ctrl-C deletes the endpoint")
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            predictor.delete_endpoint()


if __name__ == "__main__":
    main()
