"""AHAC's stiffness signal on ChaosAnt-v0, in MJX's units: what its contact threshold C is set from.

AHAC (Georgiev et al., ICML 2024) adapts its backpropagation horizon by a dual ascent on contact
stiffness against a threshold C, published as 500 in dflex's units. chaosgym's signal
(`chaosgym.agents.ahac.stiffness`: ||qfrc_constraint / max(|qacc|, 1)|| after each step) is smaller
on MJX's Ant, so C = 500 never binds. This measures the signal under three policies, `--envs` envs
for `--steps` control steps each, no resets:

* zero actions (the Ant standing);
* actions uniform in [-1, 1];
* AHAC's initial policy on the Ant preset: tanh of a Gaussian of std e^-1 (log_std_init -1) around a
  near-zero mean (its output layer starts at scale 0.01).

It prints, per policy, the distribution of the per-step stiffness averaged over the envs (the
quantity the dual ascent sees) and writes it as JSON (default docs/data/ahac_stiffness.json).

    python experiments/ahac_stiffness.py [--envs 64] [--steps 200] [--out docs/data/ahac_stiffness.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import chaosgym
from chaosgym.agents.ahac import stiffness

POLICIES = ("zero", "uniform", "ahac_initial")


def measure(envs: int, steps: int, seed: int = 0) -> dict:
    env = chaosgym.make("ChaosAnt-v0")

    @jax.jit
    def run(key, kind):
        states = jax.vmap(env.reset)(jax.random.split(key, envs))

        def body(states, step_key):
            eps = jax.random.normal(step_key, (envs, env.action_size))
            uniform = jax.random.uniform(step_key, (envs, env.action_size), minval=-1.0, maxval=1.0)
            actions = jnp.select([kind == 0, kind == 1], [jnp.zeros_like(eps), uniform], jnp.tanh(jnp.exp(-1.0) * eps))
            states = jax.vmap(env.step)(states, actions)
            return states, stiffness(states.data)

        return jax.lax.scan(body, states, jax.random.split(key, steps))[1]

    results = {}
    for kind, name in enumerate(POLICIES):
        per_env = np.asarray(run(jax.random.key(seed), kind))  # (steps, envs)
        per_step = per_env.mean(axis=1)
        q10, q25, q50, q75, q90 = np.percentile(per_step, [10, 25, 50, 75, 90])
        results[name] = {"per_step_mean": {"p10": q10, "p25": q25, "median": q50, "p75": q75, "p90": q90,
                                           "mean": float(per_step.mean())},
                         "per_env_step": {"median": float(np.median(per_env)), "p90": float(np.percentile(per_env, 90)),
                                          "max": float(per_env.max())}}
    return {"task": "ChaosAnt-v0", "envs": envs, "steps": steps, "seed": seed, "policies": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "data" /
                        "ahac_stiffness.json")
    args = parser.parse_args(argv)
    result = measure(args.envs, args.steps)
    print("| policy | per-step mean stiffness: p10 | p25 | median | p75 | p90 |", "|---|---:|---:|---:|---:|---:|",
          sep="\n")
    for name, r in result["policies"].items():
        q = r["per_step_mean"]
        print(f"| {name} | {q['p10']:.1f} | {q['p25']:.1f} | {q['median']:.1f} | {q['p75']:.1f} | {q['p90']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
