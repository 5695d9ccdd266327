#!/usr/bin/env bash
# Set up chaosgym on a fresh machine, in ./.venv:
#   * the system GL libraries MuJoCo's headless renderer needs (EGL with Mesa's software driver),
#   * PyTorch's CPU build first (for the Stable-Baselines3 baselines; a plain `torch` requirement
#     would pull several GB of CUDA packages),
#   * chaosgym itself (a regular, non-editable install) with its sb3 and test extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p | grep -q libEGL_mesa; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
    else
        echo "warning: install Mesa's EGL (Debian: libegl1 libegl-mesa0 libgl1-mesa-dri) for headless rendering" >&2
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
echo "install: pip, then PyTorch (CPU build), then chaosgym with JAX and MuJoCo (a few minutes in all)..."
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.13.0
echo "install: chaosgym and its dependencies..."
.venv/bin/pip install -q --force-reinstall --no-deps .
.venv/bin/pip install -q ".[sb3,test]"
echo "install: done (.venv); run the fast tests with .venv/bin/pytest, the slow ones with .venv/bin/pytest -m slow"
