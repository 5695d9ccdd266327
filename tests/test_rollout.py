"""`chaosgym.rollout`: what it expects of a policy and its states, and a policy that gives NaN."""

import jax
import pytest
import jax.numpy as jnp
import numpy as np

import chaosgym
from chaosgym.functional.rollout import rollout

CARTPOLE = "ChaosCartPole-v0"


def test_rollout_names_what_it_expects(cartpole, cartpole_start):
    states = jax.tree.map(lambda x: jnp.stack([x, x]), cartpole_start)  # a batch of two, nothing compiled
    with pytest.raises(ValueError, match=r"one action of shape \(1,\); it returned shape \(\)"):
        rollout(cartpole, lambda params, obs: jnp.sum(obs), None, states, 3)
    with pytest.raises(ValueError, match=r"one action of shape \(1,\); it returned shape \(3,\)"):
        rollout(cartpole, lambda params, obs: jnp.zeros(3), None, states, 3)
    with pytest.raises(ValueError, match="batch of states"):
        rollout(cartpole, lambda params, obs: jnp.zeros(1), None, cartpole_start, 3)
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        rollout(cartpole, lambda params, obs: jnp.zeros(1), None, states, 0)

# ---- a policy that gives NaN never scores best -------------------------------------------------------

def test_a_non_finite_action_makes_the_rollout_loss_and_gradient_nan():
    """The env ends an episode whose state is non-finite with reward 0; a NaN action must not turn
    that rule into the best loss (it was 0.0, against 4.65 for the zero policy on the cart pole)."""
    env = chaosgym.make(CARTPOLE, physics="equations")  # compiles in seconds; the rule is rollout's
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 2))
    middle = jnp.mean(states.obs[:, 0])
    policies = {"zero": lambda w, obs: w * jnp.zeros(1),
                "nan": lambda w, obs: w * jnp.full(1, jnp.nan),
                "nan on the right": lambda w, obs: w * jnp.where(obs[0] > middle, jnp.nan, 0.0) * jnp.ones(1)}
    results = {}
    for name, policy in policies.items():
        def loss(w, policy=policy):
            value, trajectory = rollout(env, policy, w, states, 5)
            return value, trajectory.failed
        (value, failed), grad = jax.jit(jax.value_and_grad(loss, has_aux=True))(1.0)
        results[name] = float(value), float(grad), failed.tolist()
    assert np.isfinite(results["zero"][:2]).all() and results["zero"][2] == [False, False]
    assert np.isnan(results["nan"][:2]).all() and results["nan"][2] == [True, True]
    assert np.isnan(results["nan on the right"][:2]).all() and sorted(results["nan on the right"][2]) == [False, True]
