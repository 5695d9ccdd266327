"""`chaosgym reproduce stable-bptt` against the paper's update written in plain JAX
(`tests/stable_bptt_reference.py`), and its one-program grid against runs alone."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from chaosgym.agents import reproduce
from chaosgym.agents.optimizer import make_optimizer

TESTS = str(Path(__file__).resolve().parent)

# Loss and R, M, S, C gradients of chaosgym's grid program and of the reference, float64, on the
# paper's first training batch, at weights moved off the zeroed output kernel (where M = R trivially).
GRADIENT_CHECK = textwrap.dedent(f"""
    import json, sys
    sys.path.insert(0, {TESTS!r})
    import jax, jax.numpy as jnp, numpy as np
    import stable_bptt_reference as ref
    from chaosgym.agents import reproduce

    assert jax.config.jax_enable_x64
    poles, physics = int(sys.argv[1]), sys.argv[2]
    program = reproduce.make_program(poles, [(f, "NONE", 0) for f in "RMSC"], reproduce.Protocol(physics=physics))
    params, _ = program.init()
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)])
    grads, metrics = program.gradients(params, jax.tree.map(lambda x: x[0], program.batches))
    train, _ = reproduce.paper_states(poles)
    errors = {{}}
    for i, flow in enumerate("RMSC"):
        mine = jax.tree.map(lambda x: x[i], params)
        loss, want = ref.gradient(mine, jnp.asarray(train[:8], jnp.float64), flow)
        got = jnp.concatenate([jnp.ravel(x[i]) for x in jax.tree.leaves(grads)])
        want = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(want)])
        errors[flow] = {{"loss": abs(float(metrics["train_loss"][i] - loss)),
                        "grad": float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want))),
                        "zero_grad": bool(jnp.all(want == 0))}}
    print(json.dumps(errors))
""")


def _float64(script: str, *args: str) -> dict:
    env = {**os.environ, "JAX_ENABLE_X64": "1", "CHAOSGYM_TRACE_CACHE": "0"}
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                            timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("physics", ["equations", pytest.param("mjx", marks=pytest.mark.slow)])
def test_the_grid_programs_loss_and_gradients_equal_the_references(physics):
    """float64, 100 steps, 3 poles: every flow's loss and gradient equal the plain-JAX reference to 1e-9."""
    errors = _float64(GRADIENT_CHECK, "3", physics)
    assert set(errors) == set("RMSC")
    for flow, error in errors.items():
        assert not error["zero_grad"], flow
        assert error["loss"] < 1e-9 and error["grad"] < 1e-9, (flow, error)


EQUATIONS_CHECK = textwrap.dedent("""
    import json
    import jax, jax.numpy as jnp, numpy as np
    import chaosgym

    assert jax.config.jax_enable_x64
    rng = np.random.default_rng(0)
    errors = {}
    for n in (1, 2, 3, 4):
        # forces in newtons: moderate, then kicks near the 1000 N bound, then large noise
        forces = np.concatenate([rng.normal(0, 20, 40), rng.choice([-950.0, 950.0], 20), rng.normal(0, 200, 40)])
        obs = []
        for physics in ("mjx", "equations"):
            env = chaosgym.make("ChaosCartPole-v0", num_poles=n, physics=physics)
            def step(state, force):
                state = env.step(state, jnp.reshape(force / env.task.force_scale, (1,)))
                return state, state.obs
            run = jax.jit(lambda f: jax.lax.scan(step, env.reset(jax.random.key(n)), f)[1])
            obs.append(np.asarray(run(jnp.asarray(forces))))
        errors[n] = {"max_error": float(np.max(np.abs(obs[0] - obs[1]))), "largest": float(np.max(np.abs(obs[0])))}
    print(json.dumps(errors))
""")


def test_the_equations_physics_steps_as_mjx_does_in_float64():
    """100 steps under the same forces from the same state, N = 1..4: observations equal to 1e-9."""
    errors = _float64(EQUATIONS_CHECK)
    assert sorted(errors) == ["1", "2", "3", "4"]
    for n, error in errors.items():
        assert error["max_error"] < 1e-9 and error["largest"] > 10, (n, error)


@pytest.mark.slow  # three programs of the grid (33 s warm): the fast tier checks the grid against the reference
def test_one_run_inside_the_grid_program_follows_that_run_alone():
    """float32, 1 pole: the first 3 updates of a run inside the 24-run grid program (4 flows x 3
    clipping modes x 2 seeds) equal those of a program of that run alone, to 1e-6."""
    protocol = reproduce.Protocol(physics="equations", horizon=30)
    grid = reproduce.make_program(1, reproduce.grid_runs("RMSC", reproduce.CLIPS, 2), protocol)
    state = grid.init()
    batches = [jax.tree.map(lambda x: x[i], grid.batches) for i in range(3)]
    trajectory = []
    for batch in batches:
        state, _ = grid.update(state, batch)
        trajectory.append(state[0])
    for run in [("C", "NORM", 1), ("M", "VALUE", 0)]:  # a run of each flow's kind that a cut changes
        index = grid.runs.index(run)
        alone = reproduce.make_program(1, [run], protocol)
        single = alone.init()
        for step, batch in enumerate(batches):
            single, _ = alone.update(single, batch)
            for got, want in zip(jax.tree.leaves(single[0]), jax.tree.leaves(trajectory[step])):
                np.testing.assert_allclose(got[0], want[index], atol=1e-6, rtol=0, err_msg=f"{run} update {step}")
    # and the runs differ where they must: by seed, and S from R (at the zeroed output kernel R, M
    # and C coincide, and gradients this small are not clipped yet)
    final = {run: np.concatenate([np.ravel(x[i]) for x in jax.tree.leaves(trajectory[-1])])
             for i, run in enumerate(grid.runs)}
    assert not np.allclose(final["R", "NONE", 0], final["R", "NONE", 1])
    assert not np.allclose(final["R", "NONE", 0], final["S", "NONE", 0])


def test_keras_adam_is_keras_2s_update_by_hand():
    """lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps) with the raw moments, over 4 steps of
    gradients ~1e-6, where Keras' eps differs most from optax's; optax's form differs there."""
    lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-7
    grads = [np.array([1e-6, -2e-6, 3e-5]), np.array([-1e-6, 2e-6, 1e-5]), np.array([2e-6, 0.0, -1e-5]),
             np.array([1e-6, 1e-6, 1e-6])]
    want, m, v, p = [], np.zeros(3), np.zeros(3), np.zeros(3)
    for t, g in enumerate(grads, start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        p = p - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
        want.append(p.copy())
    for form, equal in (("keras", True), ("optax", False)):
        opt = make_optimizer(lr, eps=eps, adam=form)
        params = jnp.zeros(3, jnp.float32)
        state = opt.init(params)
        for g, expected in zip(grads, want):
            step, state = opt.update(jnp.asarray(g, jnp.float32), state, params)
            params = optax.apply_updates(params, step)
        close = np.allclose(params, want[-1], rtol=1e-5, atol=0)
        assert close == equal, (form, params, want[-1])


@pytest.mark.slow  # compiles MJX's 100-step gradient
def test_the_equations_physics_trains_as_mjx_does_over_the_first_epoch_in_float32():
    """One epoch of the protocol (32 updates, 3 poles, flows R and C) with each physics: the test
    losses after it agree to float32 rounding, which the chaotic dynamics amplify only a little yet."""
    losses = {}
    for physics in ("mjx", "equations"):
        program = reproduce.make_program(3, [("R", "NONE", 0), ("C", "NONE", 0)], reproduce.Protocol(physics=physics))
        _, metrics = program.epoch(program.init())
        losses[physics] = np.asarray(metrics["test_loss"])
    np.testing.assert_allclose(losses["equations"], losses["mjx"], rtol=1e-3)
    assert np.all(losses["mjx"] < 1.9)  # it trained: the hanging start's loss is about 2
