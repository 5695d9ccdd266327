"""The trace cache: a second process reads the traced program back instead of tracing again."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from chaosgym.functional.trace_cache import cached_jit

# Runs in a fresh process: steps the cart pole through `Env.jit_step` and a pytree function, and
# reports how often the Python functions were traced, what they returned and the cached files.
WORKER = textwrap.dedent("""
    import json, os, sys
    import jax, jax.numpy as jnp
    import chaosgym
    from chaosgym.functional.trace_cache import cached_jit

    traced = []
    def f(tree, scale):
        traced.append(1)
        return {"sum": tree["a"] * scale + jnp.sum(tree["b"]), "pair": (tree["a"], -tree["b"])}

    g = cached_jit(f, key=("test", sys.argv[1]), donate_argnums=(0,))
    out = g({"a": jnp.ones(3), "b": jnp.arange(2.0)}, 2.0)
    env = chaosgym.make("ChaosCartPole-v0")
    state = env.jit_step(env.jit_reset(jax.random.key(0)), jnp.ones(1))
    folder = os.path.join(os.environ["CHAOSGYM_CACHE_DIR"], "traces")
    print(json.dumps({"traced": len(traced), "sum": out["sum"].tolist(), "pair1": out["pair"][1].tolist(),
                      "qpos": state.data.qpos.tolist(), "dtype": str(state.data.qpos.dtype),
                      "files": sorted(os.listdir(folder)) if os.path.isdir(folder) else []}))
""")


def run_worker(cache_dir, key="k", trace_cache="1", x64=False):
    env = {**os.environ, "CHAOSGYM_CACHE_DIR": str(cache_dir), "CHAOSGYM_COMPILATION_CACHE": "1",
           "CHAOSGYM_TRACE_CACHE": trace_cache, "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "1" if x64 else "0"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", WORKER, key], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_second_process_reads_the_trace_back(tmp_path):
    cold = run_worker(tmp_path)
    assert cold["traced"] == 1 and len(cold["files"]) >= 3  # f, and the cart pole's reset and step
    warm = run_worker(tmp_path)
    assert warm["traced"] == 0, "the warm process traced the function again"
    assert warm["files"] == cold["files"]
    assert warm["sum"] == cold["sum"] == [3.0, 3.0, 3.0] and warm["pair1"] == [-0.0, -1.0]
    assert warm["qpos"] == cold["qpos"]


@pytest.mark.slow  # three subprocesses that trace and compile
def test_another_key_float64_or_the_cache_turned_off_traces_again(tmp_path):
    cold = run_worker(tmp_path)
    other = run_worker(tmp_path, key="another")
    assert other["traced"] == 1 and len(other["files"]) == len(cold["files"]) + 1
    off = run_worker(tmp_path, trace_cache="0")
    assert off["traced"] == 1 and off["files"] == other["files"]
    x64 = run_worker(tmp_path, x64=True)  # float64 traces other programs from the same arguments
    assert x64["traced"] == 1 and x64["dtype"] == "float64" and cold["dtype"] == "float32"
    assert len(x64["files"]) > len(other["files"])


def test_cached_jit_matches_jax_jit_in_process():
    def f(x, n):
        return jnp.cumsum(x) * n, {"max": jnp.max(x)}

    g = cached_jit(f, key="in-process")
    x = jnp.linspace(-1.0, 1.0, 7)
    for n in (1.5, 3):  # a float and an int: two signatures
        ours, reference = g(x, n), jax.jit(f)(x, n)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    compiled = g.compile(jax.ShapeDtypeStruct((7,), jnp.float32), 2.0)
    assert compiled is not None
    with pytest.raises(TypeError):
        g(x)  # a wrong call fails as jax.jit's would
