#!/usr/bin/env bash
# Set up chaosgym on a fresh machine, in ./.venv:
#   * the system GL libraries MuJoCo's headless renderer needs (EGL with Mesa's software driver),
#   * PyTorch's CPU build first (for the Stable-Baselines3 baselines; a plain `torch` requirement
#     would pull several GB of CUDA packages),
#   * chaosgym itself (a regular, non-editable install) with every extra: sb3, brax, tensorboard,
#     cluster (Ray) and test,
#   every package at the version requirements-lock.txt pins.
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
if ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "error: requirements-lock.txt needs Python >= 3.11 (jax 0.10.2); .venv has $(.venv/bin/python -V)" >&2
    exit 1
fi
pip=(.venv/bin/pip install -q -c requirements-lock.txt)
echo "install: pip, then PyTorch (CPU build), then chaosgym with JAX and MuJoCo (a few minutes in all)..."
.venv/bin/pip install -q --upgrade pip
# PyTorch's CPU index as an extra index, for torch alone (its dependencies come with chaosgym's below):
# its 2.13.0+cpu ranks above PyPI's 2.13.0 (the CUDA build, several GB), and where that index cannot
# be reached pip warns and falls through to PyPI in about a second (the short retries and timeout).
"${pip[@]}" --no-deps --retries 2 --timeout 20 --extra-index-url https://download.pytorch.org/whl/cpu torch
echo "install: chaosgym and its dependencies (versions from requirements-lock.txt)..."
.venv/bin/pip install -q --force-reinstall --no-deps .
# pip is quiet (-q): a line every 15 s says the install is still going, so no stretch is silent
"${pip[@]}" ".[sb3,brax,tensorboard,cluster,test]" &
pip_pid=$!
started=$SECONDS
while kill -0 "$pip_pid" 2>/dev/null; do
    sleep 1
    if (( (SECONDS - started) % 15 == 0 )) && kill -0 "$pip_pid" 2>/dev/null; then
        echo "install: still installing ($((SECONDS - started)) s)..."
    fi
done
wait "$pip_pid"
.venv/bin/python -c 'import torch; print(f"install: torch {torch.__version__}, the",
                    f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU build")'
echo "install: done (.venv); run the fast tests with .venv/bin/pytest, the slow ones with .venv/bin/pytest -m slow"
