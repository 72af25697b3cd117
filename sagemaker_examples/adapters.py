"""LoRA adapters as SageMaker adapter inference components: one endpoint, a base component running this image, and
one component per adapter (its PEFT `tar.gz` in S3), each invoked with `InferenceComponentName`.

    # On AWS, with boto3's control plane (add --sdk to create the adapter components with the SageMaker SDK)
    python adapters.py deploy --image-uri <account>.dkr.ecr.<region>.amazonaws.com/serving:gpu \
        --model-id meta-llama/Llama-3.2-1B-Instruct --endpoint-name my-llm \
        --adapter sql=s3://bucket/adapters/sql.tar.gz --instance-type ml.g5.2xlarge
    python adapters.py invoke --endpoint-name my-llm --component my-llm-sql     # the adapter
    python adapters.py invoke --endpoint-name my-llm --component my-llm-base    # the base model

    # Without AWS: a running container and the local runtime stand-in (see README.md)
    python -m serving.sagemaker_local --container http://127.0.0.1:8080 --adapter-component my-llm-sql=sql &
    python adapters.py register --container http://127.0.0.1:8080 --adapter sql=/path/to/adapter
    python adapters.py invoke --endpoint-name my-llm --component my-llm-sql

SageMaker extracts an adapter component's artifact and registers it with the container's `POST /adapters`
(`register` does that by hand); its invocations then reach the container with the adapter header.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

import boto3  # noqa: E402


def adapter_pairs(items: list[str]) -> dict[str, str]:
    """`NAME=SOURCE` options as a mapping."""
    pairs = {}
    for item in items:
        name, sep, source = item.partition("=")
        if not sep or not name or not source:
            raise SystemExit(f"--adapter takes NAME=SOURCE, not {item!r}")
        pairs[name] = source
    return pairs


def deploy(args: argparse.Namespace) -> None:
    """Create the model, an inference-component endpoint, the base component and one component per adapter."""
    client = boto3.client("sagemaker")
    env = {"HF_MODEL_ID": args.model_id, "SM_NUM_GPUS": json.dumps(args.num_gpus)}
    if args.hf_token:
        env["HF_TOKEN"] = args.hf_token
    model = f"{args.endpoint_name}-model"
    client.create_model(ModelName=model, ExecutionRoleArn=args.role,
                        PrimaryContainer={"Image": args.image_uri, "Environment": env})
    client.create_endpoint_config(
        EndpointConfigName=args.endpoint_name, ExecutionRoleArn=args.role,
        ProductionVariants=[{"VariantName": "AllTraffic", "InstanceType": args.instance_type,
                             "InitialInstanceCount": 1, "ContainerStartupHealthCheckTimeoutInSeconds": 600,
                             "RoutingConfig": {"RoutingStrategy": "LEAST_OUTSTANDING_REQUESTS"}}])
    client.create_endpoint(EndpointName=args.endpoint_name, EndpointConfigName=args.endpoint_name)
    client.get_waiter("endpoint_in_service").wait(EndpointName=args.endpoint_name)
    base = f"{args.endpoint_name}-base"
    client.create_inference_component(
        InferenceComponentName=base, EndpointName=args.endpoint_name, VariantName="AllTraffic",
        Specification={"ModelName": model, "ComputeResourceRequirements": {
            "NumberOfAcceleratorDevicesRequired": args.num_gpus, "MinMemoryRequiredInMb": 1024}},
        RuntimeConfig={"CopyCount": 1})
    wait_for_component(client, base)
    for name, artifact in adapter_pairs(args.adapter).items():
        component = f"{args.endpoint_name}-{name}"
        specification = {"BaseInferenceComponentName": base, "Container": {"ArtifactUrl": artifact}}
        if args.sdk:
            import sagemaker

            sagemaker.Session().create_inference_component(component, args.endpoint_name, "AllTraffic",
                                                           specification, wait=False)
        else:
            client.create_inference_component(InferenceComponentName=component, EndpointName=args.endpoint_name,
                                              VariantName="AllTraffic", Specification=specification)
        wait_for_component(client, component)
        print(f"adapter {name}: inference component {component}")
    print(f"endpoint {args.endpoint_name} is in service with base component {base}")


def wait_for_component(client, name: str) -> None:
    """Wait until an inference component is in service (boto3 has no waiter for it)."""
    while True:
        status = client.describe_inference_component(InferenceComponentName=name)["InferenceComponentStatus"]
        if status == "InService":
            return
        if status == "Failed":
            raise SystemExit(f"inference component {name} failed")
        time.sleep(15)


def register(args: argparse.Namespace) -> None:
    """What SageMaker does when it creates an adapter component: `POST /adapters` on the container."""
    for name, source in adapter_pairs(args.adapter).items():
        body = json.dumps({"name": name, "src": source}).encode()
        request = urllib.request.Request(args.container.rstrip("/") + "/adapters", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=900) as response:
            print(response.read().decode())


def invoke(args: argparse.Namespace) -> None:
    """Ask one inference component a chat question, with boto3 and, with --sdk, the SDK's predictor."""
    body = {"messages": [{"role": "user", "content": args.question}], "max_tokens": args.max_tokens}
    if args.sdk:
        from sagemaker.deserializers import JSONDeserializer
        from sagemaker.predictor import Predictor
        from sagemaker.serializers import JSONSerializer

        predictor = Predictor(args.endpoint_name, component_name=args.component, serializer=JSONSerializer(),
                              deserializer=JSONDeserializer())
        reply = predictor.predict(body)
    else:
        response = boto3.client("sagemaker-runtime").invoke_endpoint(
            EndpointName=args.endpoint_name, InferenceComponentName=args.component,
            ContentType="application/json", Body=json.dumps(body))
        reply = json.loads(response["Body"].read())
    print(reply["choices"][0]["message"]["content"])
    print(json.dumps(reply["usage"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    deploying = commands.add_parser("deploy", help="create the endpoint and its inference components on AWS")
    deploying.add_argument("--image-uri", required=True)
    deploying.add_argument("--model-id", required=True, help="HF_MODEL_ID of the base model")
    deploying.add_argument("--endpoint-name", required=True)
    deploying.add_argument("--role", required=True, help="IAM role ARN SageMaker runs the endpoint with")
    deploying.add_argument("--instance-type", default="ml.g5.2xlarge")
    deploying.add_argument("--num-gpus", type=int, default=1)
    deploying.add_argument("--hf-token", default=os.environ.get("HF_TOKEN"))
    deploying.add_argument("--adapter", action="append", default=[], metavar="NAME=S3_URL")
    deploying.add_argument("--sdk", action="store_true", help="create the adapter components with the SDK")
    registering = commands.add_parser("register", help="register adapters with a container, as SageMaker does")
    registering.add_argument("--container", default="http://127.0.0.1:8080")
    registering.add_argument("--adapter", action="append", default=[], metavar="NAME=SOURCE")
    invoking = commands.add_parser("invoke", help="ask one inference component a question")
    invoking.add_argument("--endpoint-name", required=True)
    invoking.add_argument("--component", required=True, help="the inference component (adapter or base)")
    invoking.add_argument("--question", default="What is deep learning?")
    invoking.add_argument("--max-tokens", type=int, default=64)
    invoking.add_argument("--sdk", action="store_true", help="use the SDK's Predictor(component_name=...)")
    args = parser.parse_args()
    {"deploy": deploy, "register": register, "invoke": invoke}[args.command](args)


if __name__ == "__main__":
    main()
