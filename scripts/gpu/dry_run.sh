#!/usr/bin/env bash
# scripts/gpu/run.sh --dry-run OUT in a stand-in for the GPU machine's Python: a venv of CPython 3.12
# holding only what that machine has preinstalled, at its versions where the registry has them
# (TARGET below), and none of chaosgym's other dependencies, so run.sh must install them from
# .wheels/ as it will there. It proves the offline install, the code on those versions and the
# output limits, on the CPU. Needs .wheels/ (scripts/gpu/prepare.sh) and the registry the first
# time (the venv, ~5 GB with PyTorch's CUDA libraries, is kept in DRY_RUN_VENV and reused).
#
#   scripts/gpu/dry_run.sh OUT
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: scripts/gpu/dry_run.sh OUT" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON312=${PYTHON312:-/root/.pyenv/versions/3.12.1/bin/python3.12}
[ -x "$PYTHON312" ] || PYTHON312=$(command -v python3.12 || true)
VENV=${DRY_RUN_VENV:-$HOME/.cache/chaosgym/gpu-dry-run-venv}
# The GPU machine's packages: JAX 0.11.2 (its CUDA 13 plugin is useless without a GPU), numpy 2.5,
# PyTorch 2.11 (PyPI's build, with CUDA; it runs on the CPU too), and the newest of the others.
TARGET="jax==0.11.2 jaxlib==0.11.2 numpy==2.5.* torch==2.11.* optax scipy matplotlib tqdm imageio rich flatbuffers flax orbax-checkpoint pyyaml"

[ -x "$PYTHON312" ] || { echo "dry_run.sh: no CPython 3.12 at $PYTHON312 (set PYTHON312=...)" >&2; exit 1; }
if [ "$(cat "$VENV/.target" 2>/dev/null)" != "$TARGET" ]; then
    echo "dry_run.sh: building the stand-in venv $VENV (once; a few minutes)..."
    rm -rf "$VENV"
    "$PYTHON312" -m venv "$VENV"
    # shellcheck disable=SC2086  # TARGET is a list of requirements
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check $TARGET \
        2> >(grep -v "is ignored: it is neither" >&2)
    echo "$TARGET" >"$VENV/.target"
fi
PYTHON="$VENV/bin/python" exec "$ROOT/scripts/gpu/run.sh" --dry-run "$1"
