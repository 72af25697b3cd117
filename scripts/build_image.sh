#!/usr/bin/env bash
# Build the serving image and smoke-test it with docker (SAGEMAKER.md layer D), then print its size.
#
#   bash scripts/build_image.sh [cpu|gpu] [--no-smoke]
#
# Environment:
#   IMAGE       tag to build (default serving:<variant>)
#   BASE_IMAGE  base image; unset for cpu: a local Debian base made with debootstrap (scripts/build_base_image.sh),
#               so the build needs no image registry; unset for gpu: the Dockerfile's CUDA base image
#   TORCH_VERSION (default 2.13.0)
# The build and the smoke test use the host's network (`--network host`), so pip reaches PyPI as it does here.
# The smoke test runs the image as SageMaker does (`docker run IMAGE serve`) with a tiny model at /opt/ml/model and
# checks /ping, /invocations (inputs, messages, prompt, stream), /info, SIGTERM and a bad setting (tests/container).
set -euo pipefail
cd "$(dirname "$0")/.."
variant=${1:-cpu}
smoke=1
[ "${2:-}" = "--no-smoke" ] && smoke=0
case "$variant" in cpu|gpu) ;; *) echo "usage: $0 [cpu|gpu] [--no-smoke]" >&2; exit 2;; esac
image=${IMAGE:-serving:$variant}
torch_version=${TORCH_VERSION:-2.13.0}
docker info >/dev/null 2>&1 || { echo "no docker engine answers (docker info failed)" >&2; exit 1; }

build_args=(--build-arg "VARIANT=$variant" --build-arg "TORCH_VERSION=$torch_version")
base=${BASE_IMAGE:-}
if [ -z "$base" ] && [ "$variant" = cpu ]; then
    base=serving-base:bookworm
    bash scripts/build_base_image.sh "$base"
fi
[ -n "$base" ] && build_args+=(--build-arg "BASE_IMAGE=$base")

# The CPU wheel: stage it in container/wheels/ when pip can get it here (a local wheel, a mirror); the build then
# needs no access to download.pytorch.org. The wheel must match the base image's Python.
rm -rf container/wheels
if [ "$variant" = cpu ]; then
    python_tag=cp311
    if [ -n "$base" ]; then
        python_tag=$(docker run --rm --network none --entrypoint python3 "$base" \
            -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")' 2>/dev/null || echo cp311)
    fi
    pip=${PIP:-$( [ -x .venv/bin/pip ] && echo .venv/bin/pip || echo "python3 -m pip")}
    if $pip download --quiet --no-deps --only-binary=:all: --python-version "${python_tag#cp}" \
            --platform manylinux_2_28_x86_64 -d container/wheels "torch==${torch_version}+cpu" 2>/dev/null; then
        echo "staged $(ls container/wheels) for the build"
        build_args+=(--build-arg "TORCH_CPU_INDEX_URL=")
    else
        rm -rf container/wheels
        echo "no local torch ${torch_version}+cpu wheel: the build fetches it from download.pytorch.org"
    fi
fi

started=$(date +%s)
docker build --network host -f container/Dockerfile "${build_args[@]}" -t "$image" .
echo "built $image in $(( $(date +%s) - started )) s"
rm -rf container/wheels

if [ "$smoke" = 1 ]; then
    [ -x .venv/bin/python ] || bash scripts/setup.sh
    SERVING_IMAGE="$image" .venv/bin/python -m pytest -q -p no:cacheprovider tests/container -rs
fi

echo
docker image ls --format 'table {{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}' | grep -E "^(REPOSITORY|${image%%:*}|serving-base)" || true
size=$(docker image inspect -f '{{.Size}}' "$image")
echo "$image: $(( size / 1000000 )) MB"
