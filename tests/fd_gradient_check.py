"""Compare the autodiff gradient of a short rollout loss with central finite differences, in float64.

The loss is the negative sum of rewards of `HORIZON` steps from a reset state; the gradient is taken
with respect to the actions and to the incoming state's qpos and qvel. Run as a script
(`python fd_gradient_check.py ENV_ID HORIZON [FRAME_SKIP]`) so that float64, which is global to a
JAX process, stays out of the float32 test suite. Prints one JSON line with the relative error.

With FRAME_SKIP (> 1), the task runs that many physics substeps per control step, each
rematerialised as `Env.physics_step` does for the Ant; the line then also gives the largest
difference from the same gradient through substeps that are not (`remat_difference`).
"""

import json
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import chaosgym  # noqa: E402
from chaosgym.functional.env import run_substeps  # noqa: E402


def main(env_id: str, horizon: int, frame_skip: int | None = None) -> None:
    env = chaosgym.make(env_id)
    if frame_skip is not None:
        env.task.frame_skip = frame_skip
        env = chaosgym.Env(env.task)
    start = env.jit_reset(jax.random.key(0))
    assert start.data.qpos.dtype == jnp.float64, "float64 did not reach the physics"

    def loss(inputs):
        state = start.replace(data=start.data.replace(qpos=inputs["qpos"], qvel=inputs["qvel"]))
        def body(state, action):
            state = env.step(state, action)
            return state, state.reward
        _, rewards = jax.lax.scan(body, state, inputs["actions"])
        return -jnp.sum(rewards)

    # Actions well inside [-1, 1], so no finite-difference probe crosses the action clip.
    actions = jax.random.uniform(jax.random.key(1), (horizon, env.action_size), jnp.float64, -0.5, 0.5)
    flat, unravel = ravel_pytree({"actions": actions, "qpos": start.data.qpos, "qvel": start.data.qvel})
    flat_loss = jax.jit(lambda x: loss(unravel(x)))
    grad = np.asarray(jax.jit(jax.grad(flat_loss))(flat))

    eps = 1e-6
    finite_diff = np.array([(flat_loss(flat + eps * e) - flat_loss(flat - eps * e)) / (2 * eps)
                            for e in np.eye(flat.size)])

    relative_error = float(np.linalg.norm(grad - finite_diff) / np.linalg.norm(finite_diff))
    report = {"env_id": env_id, "horizon": horizon, "frame_skip": env.frame_skip, "inputs": int(flat.size),
              "grad_norm": float(np.linalg.norm(grad)), "relative_error": relative_error}
    if env.frame_skip > 1:
        remat_in = lambda: "remat" in str(jax.make_jaxpr(jax.grad(flat_loss))(flat))  # noqa: E731
        report["rematerialised"] = remat_in()
        env.physics_step = lambda data, action: run_substeps(env.task, env.model, data.replace(ctrl=action),
                                                             env.frame_skip, remat=False)
        env.__dict__.pop("_safe_physics_step", None)  # a cached property over physics_step
        flat_loss = jax.jit(lambda x: loss(unravel(x)))
        report["plain_rematerialised"] = remat_in()
        plain = np.asarray(jax.jit(jax.grad(flat_loss))(flat))
        report["remat_difference"] = float(np.max(np.abs(grad - plain)))
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
