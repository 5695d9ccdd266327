"""Batches spread over all devices give the results of one device, up to float reassociation.

The same computations run in two fresh processes, one with a single CPU device and one with two
host CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=2`): a vector env's steps (4 envs: split; 3
envs: not a multiple of 2, replicated), an ES gradient (its population split) and a BPTT update
(its batch of initial states split). The second also reports that the work really was split:
the vector env's state lives on both devices, and the compiled gradients reduce across devices.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # two subprocesses compile every program, on 1 and on 2 host devices

DEVICES = 2
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute")


def compute() -> dict[str, np.ndarray]:
    import gymnasium
    import jax
    from jax.flatten_util import ravel_pytree

    import chaosgym
    from chaosgym.functional.gradients import EstimatorConfig, make_estimator
    from chaosgym.functional.policies import init_policy, mlp_policy
    from chaosgym.agents.train import compiled_update

    out = {}
    for num_envs in (4, 3):
        env = gymnasium.make_vec("ChaosCartPole-v0", num_envs=num_envs, vectorization_mode="vector_entry_point",
                                 max_episode_steps=5)
        rows = [env.reset(seed=0)[0]]
        for actions in np.random.default_rng(0).uniform(-1, 1, (8, num_envs, 1)).astype(np.float32):
            obs, reward, terminated, truncated, _ = env.step(actions)  # resets after 5 steps
            rows += [obs, reward[:, None], terminated[:, None], truncated[:, None]]
        out[f"vector{num_envs}"] = np.concatenate(rows, axis=1)
        sharding = env.unwrapped.state.data.qpos.sharding
        out[f"vector{num_envs}_devices"] = np.array(len(sharding.device_set))
        out[f"vector{num_envs}_split"] = np.array(not sharding.is_fully_replicated)

    env = chaosgym.make("ChaosCartPole-v0")
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size, (16,))
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(1), 2))
    es = jax.jit(make_estimator(env, mlp_policy, EstimatorConfig("es", horizon=5, es_pairs=2)))
    optimizer, update = compiled_update(env, EstimatorConfig("full", horizon=5), 4, 1e-2)
    for name, fn, args in [("es", es, (params, states, jax.random.key(2))),
                           ("bptt", update, (params, optimizer.init(params), jax.random.key(3), 0))]:
        compiled = fn.lower(*args).compile()
        outputs = compiled(*args)  # the update returns (params, opt_state, diagnostics)
        result, diagnostics = (outputs[0], outputs[2]) if name == "bptt" else outputs
        out[name], out[f"{name}_loss"] = ravel_pytree(result)[0], diagnostics["loss"]
        out[f"{name}_collectives"] = np.array(any(c in compiled.as_text() for c in COLLECTIVES))
    return {k: np.asarray(v) for k, v in out.items()}


def run_on_cpu(devices: int, path) -> subprocess.Popen:
    """`compute` in a fresh process with `devices` host CPU devices, results saved to `path`."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags,
           "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, __file__, str(path)], env=env, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The results of `compute` on one CPU device and on two, each in its own process (in parallel)."""
    folder = tmp_path_factory.mktemp("sharding")
    workers = {n: run_on_cpu(n, folder / f"{n}.npz") for n in (1, DEVICES)}
    results = []
    for n, worker in workers.items():
        _, stderr = worker.communicate(timeout=600)
        assert worker.returncode == 0, stderr[-3000:]
        with np.load(folder / f"{n}.npz") as saved:
            assert int(saved["device_count"]) == n
            results.append(dict(saved))
    return results


def test_vector_env_steps_are_identical(both):
    single, two = both
    for n in (4, 3):
        np.testing.assert_allclose(two[f"vector{n}"], single[f"vector{n}"], rtol=1e-6, atol=1e-6)
    assert int(two["vector4_devices"]) == DEVICES and bool(two["vector4_split"])
    assert not bool(two["vector3_split"])  # 3 envs on 2 devices: replicated, still correct
    assert int(single["vector4_devices"]) == 1


def test_es_gradient_is_identical_up_to_reassociation(both):
    single, two = both
    np.testing.assert_allclose(two["es"], single["es"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(two["es_loss"], single["es_loss"], rtol=1e-5)
    assert bool(two["es_collectives"]) and not bool(single["es_collectives"])


def test_bptt_update_is_identical_up_to_reassociation(both):
    single, two = both
    np.testing.assert_allclose(two["bptt"], single["bptt"], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(two["bptt_loss"], single["bptt_loss"], rtol=1e-5)
    assert bool(two["bptt_collectives"]) and not bool(single["bptt_collectives"])


if __name__ == "__main__":  # a worker of `run_on_cpu`
    import jax

    results = compute()
    np.savez(sys.argv[1], device_count=np.array(jax.device_count()), **results)
