#!/usr/bin/env bash
# Every GPU figure of chaosgym in one command, on a machine without network (docs/gpu.md). Version 2.
#
#   scripts/gpu/run.sh OUT            # on the GPU machine, from the source tree, .wheels/ beside it
#   scripts/gpu/run.sh --dry-run OUT  # the same with tiny sizes; JAX may be on CPU
#
# It installs .wheels/ (scripts/gpu/prepare.sh) offline into a scratch folder, runs chaosgym from this
# source tree, fails at once if JAX sees no GPU, then runs time-boxed steps, the figures that matter
# most first, each under `timeout`, each saying what it compiles and timing that apart:
#   (a) throughput: make_vec, DeviceVectorEnv and Brax's own Ant against a raw vmapped mjx.step;
#   (b) the compile budget of the Ant comparison (apg, shac, ahac, ppo): every program, cold;
#   (c) Brax's PPO on ChaosAnt-v0 toward 50 M env steps: whether a standard agent walks on it;
#   (d) OUT/summary.md. A step whose box runs out keeps what it wrote and says so.
# Boxes: version 1 compiled the Ant's make_vec in 10.5 s, its raw step in 7.7 s and apg's training
# update in 59 s on an H200 (../shared/measurements/gpu-2026-12-04/); a step's box is what is left
# before the deadline less the planned boxes of the steps after it, so time a step leaves unused
# goes to the next. OUT gets at most 8 files, none over 16 MiB, nothing in subfolders.
set -euo pipefail

usage="usage: scripts/gpu/run.sh [--dry-run] OUT"
DRY_RUN=0
if [ "${1:-}" = --dry-run ]; then DRY_RUN=1; shift; fi
[ $# -eq 1 ] || { echo "$usage" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
[ -z "$(ls -A "$OUT")" ] || { echo "run.sh: OUT ($OUT) must be empty: all it holds goes back" >&2; exit 2; }
PYTHON=${PYTHON:-python3}
WORK=${CHAOSGYM_GPU_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/chaosgym-gpu.XXXXXX")}
mkdir -p "$WORK/logs"
START=$SECONDS

if [ $DRY_RUN = 1 ]; then
    # a 2-core CPU shared with other work, where XLA's compiles take most of the time
    TOTAL_S=${TOTAL_S:-2400}
    THROUGHPUT_S=600 COMPILE_S=900 TRAIN_S=600 FINISH_S=60
    THROUGHPUT_ARGS=(--cases ChaosAnt-v0:4,ChaosCartPole-v0:8 --steps 3 --rounds 1)
    COMPILE_ARGS=(--agents apg,ppo)
    TRAIN_ARGS=(--agent brax-ppo --env-steps 2048 -- --num-envs 8 --batch-size 8 --num-minibatches 2
                --unroll-length 4 --num-evals 2 --policy-hidden-layer-sizes 8 --value-hidden-layer-sizes 8
                --eval-episodes 2)
else
    TOTAL_S=${TOTAL_S:-560}
    THROUGHPUT_S=150 COMPILE_S=200 TRAIN_S=150 FINISH_S=15
    THROUGHPUT_ARGS=(--cases ChaosAnt-v0:4096,ChaosAnt-v0:16384,ChaosCartPole-v0:16384 --steps 101 --rounds 3)
    COMPILE_ARGS=(--agents apg,shac,ahac,ppo)
    # Brax's training notebook's Ant settings (agents/brax_config.py), toward its 50 M steps
    TRAIN_ARGS=(--agent brax-ppo --env-steps 50000000)
fi
DEADLINE=$((START + TOTAL_S))

note() { echo "$*" | tee -a "$WORK/notes.txt"; }
box() { echo $((DEADLINE - SECONDS - $1)); }  # seconds left less those the later steps planned

# run NAME BOX COMMAND...: the command under its box; its output into logs/NAME.log (and the console)
run() {
    local name=$1 seconds=$2 started=$SECONDS rc=0
    shift 2
    if [ "$seconds" -lt 5 ]; then note "$name: skipped, no time left in the ${TOTAL_S} s of the run"; return; fi
    timeout -k 10 "$seconds" "$@" 2>&1 | tee "$WORK/logs/$name.log" || rc=${PIPESTATUS[0]}
    if [ $rc = 0 ]; then
        note "$name: done in $((SECONDS - started)) s (box ${seconds} s)"
    elif [ $rc = 124 ] || [ $rc = 137 ]; then
        note "$name: ran out of its ${seconds} s box after $((SECONDS - started)) s; what it wrote before is kept"
    else
        note "$name: failed (exit $rc) after $((SECONDS - started)) s; logs.txt holds its output"
    fi
}

# ---- offline install, then the checks that fail at once ------------------------------------------
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' || {
    echo "run.sh: the wheels in .wheels/ are for CPython 3.12; $PYTHON is $("$PYTHON" -V 2>&1) (set PYTHON=...)" >&2
    exit 1; }
shopt -s nullglob
wheels=("$ROOT"/.wheels/*.whl)
[ ${#wheels[@]} -gt 0 ] || {
    echo "run.sh: $ROOT/.wheels/ holds no wheels: run scripts/gpu/prepare.sh where the package registry is reachable" >&2
    exit 1; }
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --target "$WORK/site" "${wheels[@]}"
# chaosgym itself runs from this source tree (its __init__ maps chaosgym.agents to agents/)
export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export CHAOSGYM_CACHE_DIR="$WORK/cache" MPLBACKEND=Agg TQDM_DISABLE=1 PYTHONUNBUFFERED=1
"$PYTHON" - <<'EOF' || { echo "run.sh: a package chaosgym needs is missing (above); .wheels/ and this machine's own packages must cover them" >&2; exit 1; }
import importlib
for name in ("chaosgym", "chaosgym.agents.cli", "chaosgym.faces.device_vector", "mujoco", "mujoco.mjx", "gymnasium",
             "stable_baselines3", "torch", "jax", "numpy", "optax", "scipy", "matplotlib", "tqdm", "imageio", "rich",
             "flatbuffers", "brax", "brax.training.agents.ppo.train", "chaosgym.brax"):
    importlib.import_module(name)
EOF
backend=$("$PYTHON" -c 'import jax; print(jax.default_backend(), jax.devices())')
if [ "${backend%% *}" != gpu ] && [ $DRY_RUN = 0 ]; then
    echo "run.sh: JAX sees no GPU (backend and devices: $backend); this needs jax with its CUDA plugin and a visible GPU (scripts/gpu/run.sh --dry-run runs on CPU)" >&2
    exit 1
fi
versions=$("$PYTHON" -c 'import chaosgym._mjx, sys, jax, numpy, torch, mujoco, gymnasium, brax, stable_baselines3 as sb3
print(f"Python {sys.version.split()[0]}, jax {jax.__version__}, numpy {numpy.__version__}, torch {torch.__version__}, "
      f"mujoco {mujoco.__version__}, gymnasium {gymnasium.__version__}, brax {brax.__version__}, stable-baselines3 {sb3.__version__}")')
note "set-up: $versions; JAX: $backend; installed ${#wheels[@]} wheels in $((SECONDS - START)) s"

STEPS=("$PYTHON" "$ROOT/scripts/gpu/steps.py")
run "(a) throughput" "$(box $((COMPILE_S + TRAIN_S + FINISH_S)))" \
    "${STEPS[@]}" throughput "$OUT/throughput.csv" "${THROUGHPUT_ARGS[@]}"
run "(b) compile budget" "$(box $((TRAIN_S + FINISH_S)))" \
    "${STEPS[@]}" compile "$OUT/compile.csv" --work "$WORK/compile" "${COMPILE_ARGS[@]}"
run "(c) brax-ppo on the Ant" "$(box "$FINISH_S")" "${STEPS[@]}" train "$WORK/train" "${TRAIN_ARGS[@]}"

note "total before the summary: $((SECONDS - START)) s of ${TOTAL_S} s"
finish_args=(--train-agent "${TRAIN_ARGS[1]}")
[ $DRY_RUN = 1 ] && finish_args+=(--dry-run)
timeout -k 5 $((FINISH_S + 30)) "${STEPS[@]}" finish "$WORK" "$OUT" "${finish_args[@]}"
echo "run.sh: done in $((SECONDS - START)) s; $OUT/summary.md; work folder $WORK"
