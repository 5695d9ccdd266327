"""The loop's carried agents against the agents' own functions, leaf by leaf, on any task.

    python experiments/restart_bits.py ChaosAnt-v0 apg shac [--updates 3]

`chaosgym.agents.loop.carried_core` draws the batches of fresh states in a program of their own
(`restart_program`); the agent's own `init` and update draw them inside their programs. This prints,
after the init and each update, whether the train states and the metrics are equal bit for bit and,
where they are not, which leaves differ and by how much (about 10 min of compiling per agent on the
Ant on a 2-core CPU).
"""

import argparse
import importlib

import jax
import numpy as np

from chaosgym.agents.config import for_task
from chaosgym.agents.loop import carried_core, make_env
from chaosgym.functional.compiling import jit


def differing(ours, theirs) -> list[str]:
    found = []
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(ours), jax.tree.leaves(theirs)):
        x, y = np.asarray(x), np.asarray(y)
        if not np.array_equal(x, y, equal_nan=True):
            found.append(f"{jax.tree_util.keystr(path)} {x.shape}: at most {np.max(np.abs(x.astype(float) - y.astype(float))):.3g}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task")
    parser.add_argument("agents", nargs="+")
    parser.add_argument("--updates", type=int, default=3)
    args = parser.parse_args()
    for agent in args.agents:
        config = for_task(args.task, agent)
        env, settings = make_env(config), config.settings
        module = importlib.import_module(f"chaosgym.agents.{agent}")
        core, step = carried_core(module.carried(settings), env, settings), module.make_update(env, settings)
        seed_key = jax.random.key(config.seed)
        params, ours = core.init(seed_key)
        theirs = jit(lambda key: module.init(env, settings, key))(seed_key)
        own_update = jit(lambda state, index: step(state, jax.random.fold_in(seed_key, index)))
        print(f"{agent} init: {differing(ours, theirs) or 'equal'}", flush=True)
        for index in range(args.updates):
            params, ours, our_metrics = core.update(params, ours, seed_key, index)
            theirs, their_metrics = own_update(theirs, index)
            print(f"{agent} update {index}: state {differing(ours, theirs) or 'equal'}; "
                  f"metrics {differing(our_metrics, their_metrics) or 'equal'}", flush=True)


if __name__ == "__main__":
    main()
