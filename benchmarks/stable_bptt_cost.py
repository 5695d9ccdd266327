"""What Schnell & Thuerey's protocol (`chaosgym reproduce stable-bptt`) costs on this machine.

Times one epoch of the protocol's own compiled program (32 updates of batch 8 per run, then the
test loss on 256 states) for flows R and C at a pole count, with 1, 3 and 9 runs vmapped (one run;
3 seeds; 3 seeds x 3 clipping modes), compile time apart; prints the cost of one update (ms) and of
the full grid: N = 1..4 x flows R, M, S, C x 3 clipping modes x --seeds seeds, 1000 epochs, where each
(N, flow) pair is one program of seeds x clips runs, M and S costed as R (one backward pass) and C as
measured. The grid estimate times N = --poles for every N (cost grows mildly with N).

Run: python benchmarks/stable_bptt_cost.py [--poles 3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from chaosgym.agents.reproduce import Protocol, make_group


def epoch_seconds(poles: int, flow: str, runs: int, epochs: int, protocol: Protocol) -> tuple[float, float]:
    """(compile seconds, best seconds per epoch) of `runs` vmapped runs."""
    init_runs, epoch, _ = make_group(poles, flow, protocol)
    state = init_runs(jnp.arange(runs) % 3)
    modes = jnp.asarray(np.arange(runs) // 3 % 3)
    start = time.perf_counter()
    compiled = epoch.lower(state, modes).compile()
    compile_time = time.perf_counter() - start
    best = np.inf
    for _ in range(epochs):
        start = time.perf_counter()
        state, metrics = compiled(state, modes)
        jax.block_until_ready(metrics)
        best = min(best, time.perf_counter() - start)
    return compile_time, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poles", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per setting (best is kept)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the full grid")
    args = parser.parse_args()
    protocol = Protocol()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), poles {args.poles}, "
          f"{protocol.updates_per_epoch} updates of batch {protocol.batch_size} + test on {protocol.states} states per epoch\n")
    print("| flow | runs vmapped | compile (s) | epoch (s) | per update and run (ms) | 1000 epochs (min) |")
    print("|---|---:|---:|---:|---:|---:|")
    grid_runs = args.seeds * 3
    per_epoch = {}
    for flow in ("R", "C"):
        for runs in sorted({1, args.seeds, grid_runs}):
            compile_time, seconds = epoch_seconds(args.poles, flow, runs, args.epochs, protocol)
            per_epoch[flow, runs] = seconds
            print(f"| {flow} | {runs} | {compile_time:.1f} | {seconds:.2f} | "
                  f"{1000 * seconds / protocol.updates_per_epoch / runs:.1f} | {seconds * 1000 / 60:.0f} |", flush=True)
    # 4 pole counts x (R, M, S as R) + C, each pair one program of seeds x 3 clips runs
    grid = 4 * (3 * per_epoch["R", grid_runs] + per_epoch["C", grid_runs]) * protocol.epochs
    print(f"\nfull grid (N = 1..4, R/M/S/C, 3 clipping modes, {args.seeds} seeds, {protocol.epochs} epochs): "
          f"about {grid / 3600:.1f} h on this device, one program at a time")


if __name__ == "__main__":
    main()
