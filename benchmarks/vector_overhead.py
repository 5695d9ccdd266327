"""What a Gymnasium vector step costs beyond the physics: host time and device bytes, against raw MJX.

On a GPU the vector env (`gymnasium.make_vec(id, num_envs=N)`) once stepped at 0.44-0.70x a raw
`jax.vmap(mjx.step)` loop, while on a CPU the two ran alike: there the device's work is the CPU's
own, and the host's share of a step disappears beside it. This script measures, on any machine,
the two things that predict the gap, for the cart pole at 16,384 envs and the Ant at 1,024:

* host time per vector step: the CPU time of the calling thread in `env.step(actions)` (numpy in,
  numpy out), less its CPU time while waiting for the compiled programs (each call is followed by a
  `block_until_ready`; a GPU's wait may spin). What is left is Python, numpy, the transfers and
  the calls' dispatch; the column beside it leaves out the calls altogether, dispatch too. The raw
  loop's host time is its dispatch: the CPU time of a call of the jitted, vmapped, frame-skipped
  `mjx.step` (controls already on the device). CPU time, not wall time: on a machine shared with
  other work, wall time also counts the moments the thread was not running.
* bytes accessed per vector step: XLA's cost analysis (`lower(...).compile().cost_analysis()`) of
  every compiled program a step calls, averaged over the steps of a round (a step that resets
  environments calls more than one), against the raw step program's.

A second table gives what those predict, in wall time: env steps per second of a plain `make_vec`
step loop, of `chaosgym.faces.device_vector.DeviceVectorEnv` (actions already on the device) and of
the raw loop (its calls pipelined, as JAX dispatches them), with nothing timed inside the loops.

The loops take uniform random actions; the vector env resets finished episodes as Gymnasium says,
and is never reset between rounds: each round of 101 steps holds one wave of the cart pole's resets
(its 100-step episodes end together, and Gymnasium's next-step autoreset takes a step of its own).
Rounds alternate between the loops, and each reports its best round. The same script runs on any
version of chaosgym: it finds the programs a step calls by timing every `CachedJit` call.

    python benchmarks/vector_overhead.py            # cart pole 16,384 envs, Ant 1,024
    python benchmarks/vector_overhead.py --quick    # cart pole 64, Ant 8: a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import chaosgym  # noqa: F401  (registers the ids and enables the compilation cache)
import gymnasium
import jax
import numpy as np
from chaosgym._mjx import mjx
from chaosgym.functional import trace_cache

try:  # absent before chaosgym had it: its column then reads n/a
    from chaosgym.faces.device_vector import DeviceVectorEnv
except ImportError:
    DeviceVectorEnv = None

CASES = {"full": [("ChaosCartPole-v0", 16384), ("ChaosAnt-v0", 1024)],
         "quick": [("ChaosCartPole-v0", 64), ("ChaosAnt-v0", 8)]}


class DeviceCalls:
    """Every `CachedJit` call while active: the calling thread's CPU time in it (`inside`) and while
    waiting for its result (`waiting`), the wall time of that wait (`wait`), and (when `recording`)
    each call's program and argument shapes, for the cost analysis."""

    def __init__(self):
        self.inside = self.waiting = self.wait = 0.0
        self.recording, self.calls = False, []

    @contextlib.contextmanager
    def active(self):
        original = trace_cache.CachedJit.__call__

        def timed(program, *args):
            if self.recording:  # before the call: it may donate (delete) its arguments
                self.calls.append((program, jax.tree.map(_spec, args)))
            start = time.thread_time()
            out = original(program, *args)
            dispatched, waited = time.thread_time(), time.perf_counter()
            jax.block_until_ready(out)
            end = time.thread_time()
            self.inside += end - start
            self.waiting += end - dispatched
            self.wait += time.perf_counter() - waited
            return out

        trace_cache.CachedJit.__call__ = timed
        try:
            yield self
        finally:
            trace_cache.CachedJit.__call__ = original


def _spec(x):
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype) if hasattr(x, "dtype") else x


def _signature(args) -> str:
    return str(jax.tree.map(lambda s: (s.shape, s.dtype) if hasattr(s, "shape") else s, args))


def bytes_accessed(compiled) -> float:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis  # older JAX: one per device
    return float(analysis["bytes accessed"])


def measure(env_id: str, num_envs: int, steps: int, rounds: int) -> dict:
    """Both tables' figures of one task and batch size (see the module)."""
    env = gymnasium.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, *env.action_space.shape)).astype(np.float32)
    raw = RawLoop(env.unwrapped.env, num_envs, steps)
    on_device = DeviceLoop(env_id, num_envs, steps) if DeviceVectorEnv is not None else None
    calls = DeviceCalls()

    def run() -> tuple[float, float]:
        """A round: its wall seconds and the thread's CPU seconds."""
        wall, cpu = time.perf_counter(), time.thread_time()
        for batch in actions:
            env.step(batch)
        return time.perf_counter() - wall, time.thread_time() - cpu

    with calls.active():
        env.reset(seed=0)
        run()  # compiles the programs, resets included
        calls.recording = True  # one round: which programs a step calls, and how often
        run()
        calls.recording = False
        programs = {}
        for program, args in calls.calls:
            if (program, _signature(args)) not in programs:
                programs[program, _signature(args)] = bytes_accessed(program.lower(*args).compile())
        vector_bytes = sum(programs[program, _signature(args)] for program, args in calls.calls) / steps
        best = {"host": np.inf, "outside": np.inf, "device": np.inf, "raw_host": np.inf, "raw_device": np.inf}
        for _ in range(rounds):
            calls.inside = calls.waiting = calls.wait = 0.0
            _, cpu = run()
            figures = {"host": cpu - calls.waiting, "outside": cpu - calls.inside, "device": calls.wait,
                       **dict(zip(("raw_host", "raw_device"), raw.blocking()))}
            best = {k: min(best[k], figures[k] / steps) for k in best}
    rates = {"vector": 0.0, "raw": 0.0, "device": 0.0}
    for _ in range(rounds):  # as a user's loop runs: nothing timed inside, the raw loop's calls pipelined
        rates["vector"] = max(rates["vector"], num_envs * steps / run()[0])
        rates["raw"] = max(rates["raw"], num_envs * steps / raw.pipelined())
        if on_device is not None:
            rates["device"] = max(rates["device"], num_envs * steps / on_device.run())
    env.close()
    return {**best, "calls": len(calls.calls) / steps, "bytes": vector_bytes, "raw_bytes": raw.bytes, "rates": rates}


class RawLoop:
    """The ceiling: a jitted, vmapped, frame-skipped `mjx.step` on the same model and batch, nothing
    else, under random controls already on the device."""

    def __init__(self, functional: chaosgym.Env, num_envs: int, steps: int):
        model, frame_skip = functional.model, functional.frame_skip

        def control_step(data, ctrl):
            data = data.replace(ctrl=ctrl)
            return jax.lax.scan(lambda d, _: (mjx.step(model, d), None), data, None, length=frame_skip)[0]

        self.step = jax.jit(jax.vmap(control_step), donate_argnums=0)
        keys = jax.random.split(jax.random.key(0), num_envs)
        self.data = jax.jit(jax.vmap(lambda key: functional.reset(key).data))(keys)
        rng = np.random.default_rng(0)
        self.ctrls = [jax.device_put(c) for c in rng.uniform(-1, 1, (steps, num_envs, functional.action_size))
                      .astype(np.float32)]
        self.bytes = bytes_accessed(self.step.lower(self.data, self.ctrls[0]).compile())
        self.data = jax.block_until_ready(self.step(self.data, self.ctrls[0]))  # compiled and warm

    def blocking(self) -> tuple[float, float]:
        """The CPU seconds of the calls' dispatch and the wall seconds of their waits, each call waited for."""
        host = wait = 0.0
        for ctrl in self.ctrls:
            start = time.thread_time()
            self.data = self.step(self.data, ctrl)
            host += time.thread_time() - start
            waited = time.perf_counter()
            jax.block_until_ready(self.data)
            wait += time.perf_counter() - waited
        return host, wait

    def pipelined(self) -> float:
        """Wall seconds of a round, waiting only at its end."""
        start = time.perf_counter()
        for ctrl in self.ctrls:
            self.data = self.step(self.data, ctrl)
        jax.block_until_ready(self.data)
        return time.perf_counter() - start


class DeviceLoop:
    """`DeviceVectorEnv` under random actions already on the device, waiting only at a round's end."""

    def __init__(self, env_id: str, num_envs: int, steps: int):
        self.env = DeviceVectorEnv(env_id, num_envs)
        rng = np.random.default_rng(0)
        self.actions = [jax.device_put(a) for a in rng.uniform(-1, 1, (steps, num_envs, self.env.env.action_size))
                        .astype(np.float32)]
        self.env.reset(seed=0)
        self.run()  # compiled and warm

    def run(self) -> float:
        start = time.perf_counter()
        for action in self.actions:
            out = self.env.step(action)
        jax.block_until_ready(out)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=101, help="vector steps per round (default: 101, one "
                        "cart-pole episode and the step that resets it)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per loop (default: 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: cart pole 64 envs, Ant 8")
    args = parser.parse_args()
    device = jax.devices()[0]
    print(f"Machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; jax {jax.__version__} on "
          f"{device.platform} ({device.device_kind}); {args.steps} steps per round, best of {args.rounds}\n",
          flush=True)
    results = []
    for env_id, num_envs in CASES["quick" if args.quick else "full"]:
        results.append((env_id, num_envs, measure(env_id, num_envs, args.steps, args.rounds)))
        print(f"measured {env_id} at {num_envs:,} envs: {results[-1][2]}", file=sys.stderr, flush=True)
    print("| task | envs | host CPU µs/step: vector env | raw `mjx.step` | ratio | vector env outside its calls "
          "(µs) | MB accessed/step: vector env | raw | ratio | device ms/step: vector env | raw | programs "
          "called/step |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for env_id, num_envs, r in results:
        print(f"| {env_id} | {num_envs:,} | {r['host'] * 1e6:,.0f} | {r['raw_host'] * 1e6:,.0f} | "
              f"{r['host'] / r['raw_host']:.2f} | {r['outside'] * 1e6:,.0f} | {r['bytes'] / 1e6:,.2f} | "
              f"{r['raw_bytes'] / 1e6:,.2f} | {r['bytes'] / r['raw_bytes']:.2f} | {r['device'] * 1e3:,.2f} | "
              f"{r['raw_device'] * 1e3:,.2f} | {r['calls']:.2f} |")
    print("\n| task | envs | env steps/s: `make_vec` | `DeviceVectorEnv` | raw `mjx.step` | make_vec / raw | "
          "DeviceVectorEnv / raw |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for env_id, num_envs, r in results:
        rates = r["rates"]
        on_device = ((f"{rates['device']:,.0f}", f"{rates['device'] / rates['raw']:.2f}") if rates["device"]
                     else ("n/a", "n/a"))
        print(f"| {env_id} | {num_envs:,} | {rates['vector']:,.0f} | {on_device[0]} | {rates['raw']:,.0f} | "
              f"{rates['vector'] / rates['raw']:.2f} | {on_device[1]} |")
    print(f"\nLoad average at the end: {os.getloadavg()[0]:.1f} (other processes share these cores).")


if __name__ == "__main__":
    main()
