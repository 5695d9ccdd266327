"""What Schnell & Thuerey's protocol (`chaosgym reproduce stable-bptt`) costs, beside a reference.

The reference is the same update written from the paper's equations in plain JAX
(`tests/stable_bptt_reference.py`: 100 steps, batch 8, the paper's MLP, Adam, clipping).
chaosgym's is `reproduce`'s own program (`make_program`) on `ChaosCartPole-v0`, with MJX's step
(`--physics mjx`, the system under test) and with the paper's equations inside the same task
(`--physics equations`). In one process, alternating rounds (so a change in the machine's load
hits every column alike), it times:

* compile time (cold in this process: XLA's persistent cache is turned off here);
* one update for flows R and C with 1 run;
* one update of the whole grid of one pole count, 36 runs (4 flows x 3 clipping modes x 3 seeds):
  chaosgym's single program; the reference as 4 programs of 9 runs, one per flow, added up.

It prints ms per update and per run, the ratio to the reference, the machine's load, and the
full grid's cost (4 pole counts x 36 runs x 32,000 updates) at the measured 36-run speed.

Run: python benchmarks/stable_bptt_cost.py [--poles 3] [--rounds 3] [--physics mjx,equations]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("CHAOSGYM_COMPILATION_CACHE", "0")  # compile times cold, every time

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference oracle
import stable_bptt_reference as ref  # noqa: E402

from chaosgym.agents import reproduce  # noqa: E402

GRID_RUNS = 36


def reference_program(poles: int, flow: str, runs: int, protocol: reproduce.Protocol):
    """`(compile seconds, call)`: one update of `runs` vmapped reference runs of one flow."""
    train, _ = reproduce.paper_states(poles, protocol.states, protocol.data_seed)
    batch = jnp.asarray(train[:protocol.batch_size])
    params = jax.vmap(lambda k: ref.init_params(k, poles, protocol.hidden))(jax.random.split(jax.random.key(0), runs))
    opt = jax.vmap(ref.adam_init)(params)
    modes = jnp.arange(runs) % 3

    def update(params, opt, mode):
        _, grad = ref.gradient(params, batch, flow, protocol.horizon)
        return ref.adam(params, ref.clip(grad, mode), opt, keras=True)

    start = time.perf_counter()
    compiled = jax.jit(jax.vmap(update)).lower(params, opt, modes).compile()
    return time.perf_counter() - start, lambda: jax.block_until_ready(compiled(params, opt, modes))


def chaosgym_program(poles: int, runs: list, protocol: reproduce.Protocol):
    """`(compile seconds, call)`: one update of `reproduce`'s program of `runs`."""
    program = reproduce.make_program(poles, runs, protocol)
    state = program.init()
    batch = jax.tree.map(lambda x: x[0], program.batches)
    start = time.perf_counter()
    compiled = program.update.lower(state, batch).compile()
    return time.perf_counter() - start, lambda: jax.block_until_ready(compiled(state, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poles", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds (the best is kept)")
    parser.add_argument("--calls", type=int, default=5, help="updates timed per round")
    parser.add_argument("--physics", default="mjx,equations", help="chaosgym physics to time (comma-separated)")
    parser.add_argument("--horizon", type=int, default=reproduce.Protocol.horizon, help="steps per rollout")
    parser.add_argument("--no-grid", action="store_true", help="skip the 36-run grid rows")
    args = parser.parse_args()
    physics_list = [p for p in args.physics.split(",") if p]
    base = reproduce.Protocol(horizon=args.horizon)
    grid = reproduce.grid_runs("RMSC", reproduce.CLIPS, 3)
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), {args.poles} poles, batch "
          f"{base.batch_size}, {base.horizon} steps; load average at start {os.getloadavg()[0]:.1f}\n", flush=True)

    # (label, runs per update, [(compile s, call)]): each a list, as the reference's grid is 4 programs
    settings = []
    for flow in ("R", "C"):
        settings.append((f"reference {flow}", flow, 1, [reference_program(args.poles, flow, 1, base)]))
        for physics in physics_list:
            protocol = reproduce.Protocol(horizon=args.horizon, physics=physics)
            settings.append((f"chaosgym {physics} {flow}", flow, 1,
                             [chaosgym_program(args.poles, [(flow, "NONE", 0)], protocol)]))
    if not args.no_grid:
        settings.append(("reference grid", "grid", GRID_RUNS,
                         [reference_program(args.poles, f, GRID_RUNS // 4, base) for f in "RMSC"]))
        for physics in physics_list:
            protocol = reproduce.Protocol(horizon=args.horizon, physics=physics)
            settings.append((f"chaosgym {physics} grid", "grid", GRID_RUNS,
                             [chaosgym_program(args.poles, grid, protocol)]))
    best = {label: np.inf for label, *_ in settings}
    for _ in range(args.rounds):  # alternating: every setting once per round
        for label, _, _, programs in settings:
            start = time.perf_counter()
            for _ in range(args.calls):
                for _, call in programs:
                    call()
            best[label] = min(best[label], (time.perf_counter() - start) / args.calls)
    load = os.getloadavg()[0]

    print("| program | flow | runs | compile (s) | ms per update | ms per update and run | × reference |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for label, flow, runs, programs in settings:
        reference = best[f"reference {flow}"]
        print(f"| {label} | {flow} | {runs} | {sum(c for c, _ in programs):.1f} | {1000 * best[label]:.1f} | "
              f"{1000 * best[label] / runs:.2f} | {best[label] / reference:.2f} |")
    print(f"\nload average at the end: {load:.1f}")
    if not args.no_grid:
        for physics in physics_list:
            seconds = 4 * best[f"chaosgym {physics} grid"] * base.epochs * base.updates_per_epoch
            print(f"full grid (N = 1..4 x 36 runs x 32,000 updates) with --physics {physics}: about "
                  f"{seconds / 3600:.1f} h on this device at {args.poles} poles' speed", flush=True)


if __name__ == "__main__":
    main()
