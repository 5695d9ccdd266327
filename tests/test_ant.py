"""ChaosAnt-v0 is Brax's MJX Ant: foot spheres are the only contacts, it starts standing, it runs and differentiates."""

import jax
import mujoco
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym
from chaosgym.functional.env import run_substeps
from chaosgym.functional.rollout import rollout
from chaosgym.functional.policies import init_policy, mlp_policy

# Brax's brax/envs/assets/ant.xml, custom numeric init_qpos
BRAX_INIT_QPOS = [0.0, 0.0, 0.55, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0]


@pytest.fixture(scope="module")
def ant() -> chaosgym.Env:
    return chaosgym.make("ChaosAnt-v0")


def test_only_foot_spheres_touch_only_the_floor(ant):
    model = ant.mj_model
    # MJX computes a fixed set of contacts every step: exactly one per foot sphere against the floor
    data = ant.jit_reset(jax.random.key(0)).data
    pairs = sorted(tuple(sorted(model.geom(int(g)).name for g in pair)) for pair in np.asarray(data._impl.contact.geom))
    assert pairs == [("floor", f"foot_{i}") for i in range(1, 5)]
    for i in range(1, 5):
        foot, leg = model.geom(f"foot_{i}"), model.geom(f"lower_leg_{i}")
        assert foot.type == 2 and foot.size[0] == pytest.approx(0.08)  # mjGEOM_SPHERE
        # the sphere's centre is the lower leg's far end: half the capsule's length along its axis
        offset = np.asarray(data.geom_xpos[foot.id]) - np.asarray(data.geom_xpos[leg.id])
        axis = np.asarray(data.geom_xmat[leg.id]).reshape(3, 3)[:, 2]
        assert np.linalg.norm(offset) == pytest.approx(leg.size[1], abs=1e-5)
        assert np.linalg.norm(np.cross(offset, axis)) < 1e-5
        torso = np.asarray(data.xpos[model.body("torso").id])
        assert np.linalg.norm(data.geom_xpos[foot.id] - torso) > np.linalg.norm(data.geom_xpos[leg.id] - torso)

def test_reset_is_brax_standing_pose(ant):
    sample = jax.vmap(lambda key: ant.task.initial_state(key, ant.mj_model))
    qpos = np.asarray(sample(jax.random.split(jax.random.key(1), 64))[0])
    np.testing.assert_array_equal(ant.mj_model.key("home").qpos, BRAX_INIT_QPOS)
    assert np.all(np.abs(qpos - BRAX_INIT_QPOS) <= 0.1 + 1e-6)
    assert np.ptp(qpos[:, 2]) > 0.15  # noise over the whole interval, not a point
    # every ankle starts inside its joint range (qpos0, all zeros, put the ankles on their limits)
    low, high = ant.mj_model.jnt_range[1:].T
    assert np.all((qpos[:, 7:] >= low - 0.1) & (qpos[:, 7:] <= high + 0.1))
    # feet on the floor: each sphere's bottom within a few cm of z = 0 in the noiseless pose
    data = mujoco.MjData(ant.mj_model)
    mujoco.mj_resetDataKeyframe(ant.mj_model, data, ant.mj_model.key("home").id)
    mujoco.mj_forward(ant.mj_model, data)
    feet = [ant.mj_model.geom(f"foot_{i}").id for i in range(1, 5)]
    bottoms = data.geom_xpos[feet, 2] - 0.08
    assert np.all(np.abs(bottoms) < 0.03), bottoms

def test_episode_runs_and_zero_action_stands(ant):
    # the env's own jitted step (compiled once per machine, then cached), one env at a time
    rng = np.random.default_rng(0)
    for key, scale in [(2, 0.0), (3, 1.0)]:
        state = ant.jit_reset(jax.random.key(key))
        rewards = []
        for _ in range(60):
            state = ant.jit_step(state, jnp.asarray(scale * rng.uniform(-1, 1, 8), jnp.float32))
            rewards.append(float(state.reward))
            if state.terminated:
                break
        assert np.all(np.isfinite(rewards)) and np.all(np.isfinite(np.asarray(state.obs)))
        if scale == 0.0:  # it just stands: alive all along, near its 0.55 m start, barely moving
            assert int(state.steps) == 60 and not bool(state.terminated)
            assert 0.4 < float(state.data.qpos[2]) < 0.8
            assert np.mean(rewards) == pytest.approx(1.0, abs=0.2)
    # standing still earns ~1 per step: compare's threshold asks for more than a whole episode of it
    assert chaosgym.presets.presets("ChaosAnt-v0").threshold >= 1.5 * ant.episode_length

@pytest.mark.slow  # a cold compile of an Ant gradient: minutes on a busy 2-core CPU
def test_short_horizon_gradient_is_finite(ant):
    params = init_policy(jax.random.key(0), ant.observation_size, ant.action_size, (32,))
    states = jax.vmap(ant.reset)(jax.random.split(jax.random.key(4), 2))
    loss_fn = lambda p: rollout(ant, mlp_policy, p, states, 8)[0]
    loss, grad = jax.jit(jax.value_and_grad(loss_fn))(params)
    flat = np.concatenate([np.ravel(g) for g in jax.tree.leaves(grad)])
    assert np.isfinite(float(loss)) and np.all(np.isfinite(flat))
    assert np.linalg.norm(flat) > 0


@pytest.mark.slow  # two Ant step programs compiled cold
def test_rematerialised_substeps_leave_a_step_unchanged_bit_for_bit(ant):
    """`Env.physics_step` checkpoints each of the Ant's 5 substeps, for its gradients' sake; a step
    without a gradient is the same computation, equal to plain substeps in every bit."""
    def plain(data, action):
        return run_substeps(ant.task, ant.model, data.replace(ctrl=action), ant.frame_skip, remat=False)

    assert ant.frame_skip > 1 and "remat" in str(jax.make_jaxpr(ant.physics_step)(ant.empty_data,
                                                                                   jnp.zeros(ant.action_size)))
    data = jax.vmap(ant.reset)(jax.random.split(jax.random.key(1), 4)).data
    actions = jax.random.uniform(jax.random.key(2), (4, ant.action_size), minval=-1, maxval=1)
    ours, theirs = (jax.jit(jax.vmap(f))(data, actions) for f in (ant.physics_step, plain))
    for name, a, b in zip(("qpos", "qvel", "qacc", "xpos"), *((d.qpos, d.qvel, d.qacc, d.xpos) for d in (ours, theirs))):
        np.testing.assert_array_equal(a, b, err_msg=name)
