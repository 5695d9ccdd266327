#!/usr/bin/env bash
# Fill .wheels/ (git-ignored) with the CPython 3.12 manylinux x86-64 wheels of everything chaosgym
# needs that the GPU machine lacks, for scripts/gpu/run.sh to install there without network.
# Run it where the package registry is reachable; it prints the wheels and their total size.
#
# The GPU machine has Python 3.12, jax with its CUDA plugin, numpy, PyTorch, optax, scipy,
# matplotlib, tqdm, imageio, rich, flatbuffers, flax and orbax-checkpoint, with their own
# dependencies (TARGET_HAS below; the device tool's KINDS.md lists them). pip's resolver finds what
# mujoco, mujoco-mjx and gymnasium need; those the target has are dropped. stable-baselines3 and
# brax come without their dependencies: torch, flax and orbax are the target's; brax's others that
# it lacks (jaxopt, ml-collections) are fetched by name. Versions are requirements-lock.txt's.
set -euo pipefail
cd "$(dirname "$0")/../.."

MAX_MIB=40
TARGET_HAS="jax jaxlib ml-dtypes opt-einsum numpy scipy optax absl-py torch filelock typing-extensions sympy
mpmath networkx jinja2 markupsafe fsspec setuptools matplotlib contourpy cycler fonttools kiwisolver
packaging pillow pyparsing python-dateutil six tqdm imageio rich markdown-it-py mdurl pygments flatbuffers
flax orbax-checkpoint etils msgpack tensorstore humanize simplejson pyyaml protobuf treescope chex toolz
nest-asyncio aiofiles zipp importlib-resources"
PIP=(${PIP:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 ) -m pip})
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
          --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64)

[ -f requirements-lock.txt ] || { echo "prepare.sh: requirements-lock.txt is missing (the tested versions)" >&2; exit 1; }
pin() {  # the locked version of a package, as name==version
    local line
    line=$(grep -i -E "^$1==" requirements-lock.txt) || { echo "prepare.sh: $1 is not in requirements-lock.txt" >&2; exit 1; }
    echo "$line"
}
constraints=$(mktemp) resolved=$(mktemp -d)
trap 'rm -rf "$constraints" "$resolved"' EXIT
grep -E '^[A-Za-z0-9._-]+==' requirements-lock.txt >"$constraints"

echo "prepare: resolving mujoco, mujoco-mjx and gymnasium for CPython 3.12 (downloads their whole tree once)..."
"${PIP[@]}" download --quiet --disable-pip-version-check "${PLATFORM[@]}" -c "$constraints" -d "$resolved" \
    "$(pin mujoco)" "$(pin mujoco-mjx)" "$(pin gymnasium)" 2> >(grep -v "is ignored: it is neither" >&2)
"${PIP[@]}" download --quiet --disable-pip-version-check "${PLATFORM[@]}" --no-deps -d "$resolved" \
    "$(pin stable[-_]baselines3)" "$(pin brax)" "$(pin jaxopt)" "$(pin ml[-_]collections)" \
    2> >(grep -v "is ignored: it is neither" >&2)

declare -A on_target
for name in $TARGET_HAS; do on_target[$name]=1; done
mkdir -p .wheels
rm -f .wheels/*.whl
for wheel in "$resolved"/*.whl; do
    # a wheel's distribution name, normalised as pip compares names (PEP 503)
    name=$(basename "$wheel" | cut -d- -f1 | tr 'A-Z_.' 'a-z--')
    [ -n "${on_target[$name]:-}" ] || cp "$wheel" .wheels/
done

ls -l .wheels/*.whl | awk '{printf "  %8.2f MiB  %s\n", $5 / 1048576, $9}'
total=$(du -cb .wheels/*.whl | tail -n 1 | cut -f1)
mib=$(awk -v b="$total" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "prepare: .wheels/ holds $(ls .wheels/*.whl | wc -l) wheels, $mib MiB in all (limit $MAX_MIB MiB)"
awk -v b="$total" -v m="$MAX_MIB" 'BEGIN { exit !(b <= m * 1048576) }' || {
    echo "prepare.sh: $mib MiB is over the $MAX_MIB MiB the GPU machine takes beside the source tree" >&2; exit 1; }
