#!/usr/bin/env bash
# Every GPU figure of chaosgym in one command, on a machine without network (docs/gpu.md):
#
#   scripts/gpu/run.sh OUT            # on the GPU machine, from the source tree, .wheels/ beside it
#   scripts/gpu/run.sh --dry-run OUT  # the same with tiny sizes and short boxes; JAX may be on CPU
#
# It installs .wheels/ (scripts/gpu/prepare.sh) offline into a scratch folder, runs chaosgym from this
# source tree, fails at once if JAX sees no GPU, then runs time-boxed steps, each under `timeout`:
# (a) throughput, gradient cost and compile times, (b) the Stable-BPTT grid of N = 3, (c) the Ant
# comparison, (d) OUT/summary.md with each GPU figure beside its CPU one. A step whose box runs out
# keeps what it wrote and says so in the summary. Everything together ends within TOTAL_S seconds.
# OUT gets at most 8 files, none over 16 MiB, nothing in subfolders: what a GPU machine gives back.
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

# Sizes and boxes (seconds). A step's box is what is left before the deadline less the planned
# boxes of the steps after it, so time a step leaves unused goes to the next one, the comparison last.
if [ $DRY_RUN = 1 ]; then
    # boxes for a 2-core CPU shared with other work, where XLA's compiles take most of the time: the
    # dry run used 4.3 min of CPU time, and 14-20 min of wall-clock at load averages of 5-11
    TOTAL_S=1800
    THROUGHPUT_S=120 GRADIENT_S=240 COMPILE_S=240 GRID_S=420 COMPARE_S=600 FINISH_S=60
    THROUGHPUT_ARGS=(--tasks ChaosCartPole-v0 --batches 4 --iterations 2 --rounds 1)
    # without the bare-MJX ratio: its two compiles took 100 s of a loaded CPU
    GRADIENT_ARGS=(--tasks ChaosCartPole-v0 --batch 4 --horizon 10 --repeats 1 --no-bare)
    COMPILE_ARGS=(--tasks ChaosCartPole-v0 --horizon 10)
    GRID_ARGS=(--flows R,C --clip NONE,NORM --seeds 1 --epochs 2 --states 16) UPDATES_PER_EPOCH=2
    COMPARE_ARGS=(--tasks ChaosCartPole-v0 --agents apg,ppo --seeds 1 --batch-size 8 --eval-episodes 2)
    COMPARE_RUNS=2 COMPARE_OVERHEAD_S=150 COMPARE_MAX_WALL_S=5
else
    TOTAL_S=470
    THROUGHPUT_S=60 GRADIENT_S=50 COMPILE_S=40 GRID_S=80 COMPARE_S=210 FINISH_S=15
    THROUGHPUT_ARGS=(--tasks ChaosAnt-v0,ChaosCartPole-v0 --batches 1024,4096,16384 --iterations 20 --rounds 3)
    GRADIENT_ARGS=(--tasks ChaosAnt-v0,ChaosCartPole-v0,ChaosCartPole-v0:num_poles=3 --batch 256 --horizon 100)
    # the cart pole first: its cold compile fits the box; the Ant's (63 s on the CPU) may not
    COMPILE_ARGS=(--tasks ChaosCartPole-v0,ChaosAnt-v0 --horizon 100)
    # 1000 epochs is the paper's protocol: the box, not the count, ends the grid
    GRID_ARGS=(--flows R,M,S,C --clip NONE,VALUE,NORM --seeds 3 --epochs 1000) UPDATES_PER_EPOCH=32
    # --batch-size is the gradient agents' env count; PPO keeps its preset (16 envs) and SB3 runs
    # its network on the CPU: compare sets neither. 4 evaluation episodes: the final evaluation steps
    # one env at a time, each step a device call.
    COMPARE_ARGS=(--tasks ChaosAnt-v0 --agents apg,shac,ppo --seeds 2 --batch-size 1024 --eval-episodes 4)
    # seconds of a comparison that are not training: compiling (first seed of each agent) and evaluating
    COMPARE_RUNS=6 COMPARE_OVERHEAD_S=120 COMPARE_MAX_WALL_S=600
fi
DEADLINE=$((START + TOTAL_S))

note() { echo "$*" | tee -a "$WORK/notes.txt"; }
box() { echo $((DEADLINE - SECONDS - $1)); }  # seconds left less those the later steps planned

# run NAME BOX COMMAND...: the command under its box; its output into logs/NAME.log
run() {
    local name=$1 seconds=$2 started=$SECONDS rc=0
    shift 2
    if [ "$seconds" -lt 5 ]; then note "$name: skipped, no time left in the ${TOTAL_S} s of the run"; return; fi
    timeout -k 10 "$seconds" "$@" >"$WORK/logs/$name.log" 2>&1 || rc=$?
    if [ $rc = 0 ]; then
        note "$name: done in $((SECONDS - started)) s (box ${seconds} s)"
    elif [ $rc = 124 ] || [ $rc = 137 ]; then
        note "$name: ran out of its ${seconds} s box; what it wrote before is kept"
    else
        note "$name: failed (exit $rc) after $((SECONDS - started)) s; logs/$name.log in runs.tar.gz ends:"
        tail -n 5 "$WORK/logs/$name.log" | sed 's/^/    /' | tee -a "$WORK/notes.txt"
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
"$PYTHON" -m pip install --quiet --no-index --no-deps --target "$WORK/site" "${wheels[@]}"
# chaosgym itself runs from this source tree (its __init__ maps chaosgym.agents to agents/)
export PYTHONPATH="$ROOT:$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
export CHAOSGYM_CACHE_DIR="$WORK/cache" MPLBACKEND=Agg TQDM_DISABLE=1
CHAOSGYM=("$PYTHON" -m chaosgym.agents.cli)
"$PYTHON" - <<'EOF' || { echo "run.sh: a package chaosgym needs is missing (above); .wheels/ and this machine's own packages must cover them" >&2; exit 1; }
import importlib
for name in ("chaosgym", "chaosgym.agents.cli", "mujoco", "mujoco.mjx", "gymnasium", "stable_baselines3",
             "torch", "jax", "numpy", "optax", "scipy", "matplotlib", "tqdm", "imageio", "rich", "flatbuffers"):
    importlib.import_module(name)
EOF
backend=$("$PYTHON" -c 'import jax; print(jax.default_backend(), jax.devices())')
if [ "${backend%% *}" != gpu ] && [ $DRY_RUN = 0 ]; then
    echo "run.sh: JAX sees no GPU (backend and devices: $backend); this needs jax with its CUDA plugin and a visible GPU (scripts/gpu/run.sh --dry-run runs on CPU)" >&2
    exit 1
fi
versions=$("$PYTHON" -c 'import sys, jax, numpy, torch, mujoco, gymnasium, stable_baselines3 as sb3
print(f"Python {sys.version.split()[0]}, jax {jax.__version__}, numpy {numpy.__version__}, torch {torch.__version__}, "
      f"mujoco {mujoco.__version__}, gymnasium {gymnasium.__version__}, stable-baselines3 {sb3.__version__}")')
note "set-up: $versions; JAX: $backend; installed ${#wheels[@]} wheels in $((SECONDS - START)) s"

# ---- (a) throughput, gradient cost, compile times --------------------------------------------------
STEPS=("$PYTHON" "$ROOT/scripts/gpu/steps.py")
run "(a) throughput" "$(box $((GRADIENT_S + COMPILE_S + GRID_S + COMPARE_S + FINISH_S)))" \
    "${STEPS[@]}" throughput "$OUT/throughput.csv" "${THROUGHPUT_ARGS[@]}"
run "(a) gradient" "$(box $((COMPILE_S + GRID_S + COMPARE_S + FINISH_S)))" \
    "${STEPS[@]}" gradient "$OUT/gradient.csv" "${GRADIENT_ARGS[@]}"
run "(a) compile" "$(box $((GRID_S + COMPARE_S + FINISH_S)))" \
    "${STEPS[@]}" compile "$OUT/compile.csv" "${COMPILE_ARGS[@]}"

# ---- (b) the Stable-BPTT grid of N = 3 ---------------------------------------------------------------
# All its runs (flows x clipping x seeds) are one vmapped program whose epochs advance together, so
# the box, however short, ends every flow at the same epoch; a checkpoint every epoch keeps them all.
# MJX's physics, reproduce's default: the GPU run measures MJX (--physics equations is the closed form).
run "(b) grid" "$(box $((COMPARE_S + FINISH_S + 30)))" "${CHAOSGYM[@]}" reproduce stable-bptt --poles 3 \
    "${GRID_ARGS[@]}" --checkpoint-every 1 --no-progress --out "$WORK/grid"
# the table and figure from the epochs the box allowed (reproduce writes them only when it finishes)
run "(b) grid report" 30 "${CHAOSGYM[@]}" reproduce stable-bptt --poles 3 "${GRID_ARGS[@]}" --no-progress \
    --out "$WORK/grid" --report-only

# ---- (c) the Ant comparison, equal wall-clock per run --------------------------------------------
compare_box=$(box "$FINISH_S")
wall_clock=$(((compare_box - COMPARE_OVERHEAD_S) / COMPARE_RUNS))
[ $wall_clock -ge 2 ] || wall_clock=2
[ $wall_clock -le $COMPARE_MAX_WALL_S ] || wall_clock=$COMPARE_MAX_WALL_S
note "(c) compare: ${wall_clock} s of training per run, ${COMPARE_RUNS} runs, in a ${compare_box} s box"
run "(c) compare" "$compare_box" "${CHAOSGYM[@]}" compare "${COMPARE_ARGS[@]}" --wall-clock "$wall_clock" \
    --out "$WORK/compare"

# ---- (d) summary.md, figures, runs.tar.gz; the return limits ------------------------------------
note "total before the summary: $((SECONDS - START)) s of ${TOTAL_S} s"
finish_args=(--updates-per-epoch "$UPDATES_PER_EPOCH")
[ $DRY_RUN = 1 ] && finish_args+=(--dry-run)
timeout -k 5 $((FINISH_S + 30)) "${STEPS[@]}" finish "$WORK" "$OUT" "${finish_args[@]}"
echo "run.sh: done in $((SECONDS - START)) s; $OUT/summary.md; work folder $WORK"
