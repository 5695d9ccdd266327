"""Raw physics throughput of ChaosAnt-v0's model against Brax's own MJX Ant model, in one process.

Brax's Ant is its MJCF (`brax/envs/assets/ant.xml`) with the settings Brax's `Ant(backend="mjx")`
applies: Newton solver, 1 iteration, 4 line-search steps, Euler damping off. brax is not a
dependency: fetch that file yourself and pass its path. Both models run the same loop: a jitted
`lax.scan` of control steps, each `frame_skip` (5) vmapped `mjx.step` calls under one random action,
from each model's standing pose (ours: keyframe "home"; Brax's: its `init_qpos`), no resets.
The two loops run in alternating rounds and each reports its best round, so load from other
processes favours neither. Compilation is excluded.

    python benchmarks/ant_physics.py --brax-xml /tmp/brax_ant.xml            # batch 256
    python benchmarks/ant_physics.py --brax-xml /tmp/brax_ant.xml --batch 64 256
"""

from __future__ import annotations

import argparse
import time

import chaosgym  # enables the compilation cache
import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from chaosgym._mjx import mjx

FRAME_SKIP = 5


def brax_model(path: str) -> tuple[mujoco.MjModel, np.ndarray]:
    """Brax's Ant as its MJX backend sets it up, and its initial qpos (the `init_qpos` custom numeric)."""
    model = mujoco.MjModel.from_xml_path(path)
    model.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
    model.opt.iterations = 1
    model.opt.ls_iterations = 4
    model.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_EULERDAMP
    init = np.array(model.numeric("init_qpos").data)
    return model, init


def chaos_model() -> tuple[mujoco.MjModel, np.ndarray]:
    model = chaosgym.make("ChaosAnt-v0").mj_model
    return model, np.array(model.key("home").qpos)


def physics_loop(model: mujoco.MjModel, qpos0: np.ndarray, batch: int, steps: int):
    """A compiled round: `steps` control steps of `batch` envs; returns a function that runs one."""
    mx = mjx.put_model(model)
    data = mjx.make_data(mx).replace(qpos=jnp.asarray(qpos0, jnp.float32))
    data = jax.vmap(lambda _: mjx.forward(mx, data))(jnp.arange(batch))
    actions = jax.random.uniform(jax.random.key(0), (steps, batch, model.nu), minval=-1, maxval=1)

    def control_step(d, action):
        d = d.replace(ctrl=action)
        d, _ = jax.lax.scan(lambda d, _: (mjx.step(mx, d), None), d, None, length=FRAME_SKIP)
        return d, None

    run = jax.jit(lambda d: jax.lax.scan(jax.vmap(control_step), d, actions)[0])
    jax.block_until_ready(run(data))  # compile and warm up

    def round_() -> float:
        start = time.perf_counter()
        jax.block_until_ready(run(data))
        return time.perf_counter() - start

    return round_


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brax-xml", required=True, help="path of Brax's brax/envs/assets/ant.xml")
    parser.add_argument("--batch", type=int, nargs="+", default=[256])
    parser.add_argument("--steps", type=int, default=100, help="control steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    models = {"ChaosAnt-v0": chaos_model(), "Brax Ant (MJX)": brax_model(args.brax_xml)}
    for name, (model, _) in models.items():
        print(f"{name}: {model.ngeom} geoms, {_contacts(model)} contacts per physics step")
    print(f"\n{jax.devices()[0].platform}, {args.steps} control steps x {FRAME_SKIP} physics steps per round, "
          f"best of {args.rounds} alternating rounds\n")
    print("| batch | ChaosAnt-v0 env steps/s | Brax Ant env steps/s | ratio |")
    print("|---:|---:|---:|---:|")
    for batch in args.batch:
        loops = {name: physics_loop(model, q, batch, args.steps) for name, (model, q) in models.items()}
        best = {name: float("inf") for name in loops}
        for _ in range(args.rounds):
            for name, loop in loops.items():
                best[name] = min(best[name], loop())
        ours, theirs = (batch * args.steps / best[name] for name in loops)
        print(f"| {batch} | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} |")


def _contacts(model: mujoco.MjModel) -> int:
    """Contacts MJX computes every physics step (its fixed-size contact array)."""
    return int(mjx.make_data(model)._impl.contact.dist.shape[0])


if __name__ == "__main__":
    main()
