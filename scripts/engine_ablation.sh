#!/usr/bin/env bash
# What each engine change bought: `python -m serving.bench.engine_loop` at several commits, one after another in
# rounds whose order alternates (the machine's speed drifts), each commit from its own git worktree.
# usage: scripts/engine_ablation.sh ROUNDS MODEL_DIR "ENGINE_LOOP_ARGUMENTS" COMMIT...
#   e.g. scripts/engine_ablation.sh 2 /tmp/bench-models/tiny "--concurrency 1,16,64" c9a2963 51445fe HEAD
# Prints one line per run: time, commit, tokens/s per level. Extra environment (TORCH_NUM_THREADS=2) passes through.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1 model=$2 arguments=$3
shift 3
python=$PWD/.venv/bin/python
trees=$(mktemp -d)
trap 'for tree in "$trees"/*; do git worktree remove --force "$tree"; done; rm -rf "$trees"' EXIT
for commit in "$@"; do
  git worktree add -q --detach "$trees/$commit" "$commit"
done
order=("$@")
for round in $(seq "$rounds"); do
  for commit in "${order[@]}"; do
    # shellcheck disable=SC2086
    result=$(cd "$trees/$commit" && "$python" -m serving.bench.engine_loop --model-dir "$model" $arguments 2>&1 \
      | sed -n 's/^\(c=[0-9]*\): .* \([0-9,]*\) tok\/s, .*/\1 \2/p' | tr '\n' ' ')
    echo "$(date -u +%H:%M:%S) round $round $commit: $result"
  done
  mapfile -t order < <(printf '%s\n' "${order[@]}" | tac)
done
