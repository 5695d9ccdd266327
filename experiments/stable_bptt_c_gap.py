"""Does chaosgym's C training do what the paper's does? Curves of the same runs four ways.

Schnell & Thuerey's protocol at N poles (default 3), flows R and C, `--seeds` initialisations,
`--epochs` epochs (default 250 = 8,000 updates), every run from the same initial weights (the
paper's network as `chaosgym.functional.policies.paper_init` draws it) and the paper's data:

* `reference`: the update written from the paper's equations in plain JAX
  (`tests/stable_bptt_reference.py`), Keras 2's Adam, as the paper's TensorFlow code runs it;
* `chaosgym keras`: `chaosgym reproduce`'s program (`--physics equations`, `--adam keras`);
* `chaosgym optax`: the same with optax's Adam (what the earlier N = 3 runs used);
* the run's dtype: float32, or float64 with `JAX_ENABLE_X64=1` (run the script twice).

It writes `<out>/c_gap_<dtype>_<flows>_<seeds>seeds.csv` (one row per variant, flow, seed and epoch: the test loss) and
prints the 30-epoch smoothed test loss at a few epochs, median [min, max] over seeds.

With `--divergence`, it instead follows one initialisation update by update through chaosgym's
program and the reference and prints the largest parameter difference after 1, 10, ... updates.

Run: python experiments/stable_bptt_c_gap.py [--poles 3] [--seeds 6] [--epochs 250] [--flows RC]
     [--variants keras,optax,reference] [--out DIR]
     python experiments/stable_bptt_c_gap.py --divergence [--seed 1]   (JAX_ENABLE_X64=1 for float64)
     python experiments/stable_bptt_c_gap.py --per-seed CSV [CSV ...] [--below 0.07]

With `--per-seed`, it trains nothing: from CSVs this script wrote, it prints each seed's smoothed
test loss at the last epoch, per variant, dtype and flow, and how many seeds end below `--below`.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference oracle
import stable_bptt_reference as ref  # noqa: E402

from chaosgym.agents import reproduce  # noqa: E402


def chaosgym_curves(poles: int, seeds: int, epochs: int, adam: str, bar, flows="RC") -> tuple[dict, jax.Array]:
    """Test loss per epoch of chaosgym's program, {(flow, seed): [loss per epoch]}, and its initial params."""
    protocol = reproduce.Protocol(physics="equations", adam=adam)
    runs = reproduce.grid_runs(flows, ["NONE"], seeds)
    program = reproduce.make_program(poles, runs, protocol)
    state = program.init()
    params0 = state[0]
    epoch = program.epoch.lower(state).compile()
    curves = {(flow, seed): [] for flow, _, seed in runs}
    for _ in range(epochs):
        state, metrics = epoch(state)
        for (flow, _, seed), loss in zip(runs, np.asarray(metrics["test_loss"])):
            curves[flow, seed].append(float(loss))
        bar.update()
    return curves, params0


def reference_curves(poles: int, seeds: int, epochs: int, params0, bar, flows="RC") -> dict:
    """The reference's test loss per epoch from chaosgym's initial weights (runs R0.., then C0..)."""
    protocol = reproduce.Protocol()
    train, test = reproduce.paper_states(poles, protocol.states, protocol.data_seed)
    dtype = jnp.zeros(()).dtype
    batches = jnp.asarray(train, dtype).reshape(protocol.updates_per_epoch, protocol.batch_size, *train.shape[1:])
    curves = {}
    for index, flow in enumerate(flows):
        params = jax.tree.map(lambda x: x[index * seeds:(index + 1) * seeds], params0)
        opt = jax.vmap(ref.adam_init)(params)
        epoch = jax.jit(jax.vmap(ref.make_epoch(flow, batches, jnp.asarray(test, dtype), keras=True)))
        modes = jnp.zeros(seeds, jnp.int32)
        for seed in range(seeds):
            curves[flow, seed] = []
        for _ in range(epochs):
            params, opt, loss = epoch(params, opt, modes)
            for seed, value in enumerate(np.asarray(loss)):
                curves[flow, seed].append(float(value))
            bar.update(1 / len(flows))
    return curves


def divergence(poles: int, seed: int, marks=(1, 10, 32, 64, 128, 200, 320)) -> None:
    """Largest |chaosgym - reference| over the parameters after each of `marks` updates, R and C."""
    train, _ = reproduce.paper_states(poles)
    batches = jnp.asarray(train, jnp.zeros(()).dtype).reshape(32, 8, poles + 1, 2)
    print(f"| flow | dtype | " + " | ".join(f"after {m}" for m in marks) + " |")
    print("|---|---|" + "---:|" * len(marks))
    for flow in "RC":
        program = reproduce.make_program(poles, [(flow, "NONE", seed)], reproduce.Protocol(physics="equations"))
        state = program.init()
        params = jax.tree.map(lambda x: x[0], state[0])
        opt = ref.adam_init(params)

        @jax.jit
        def reference_update(params, opt, batch):
            return ref.adam(params, ref.gradient(params, batch, flow)[1], opt, keras=True)

        cells = []
        for update in range(1, max(marks) + 1):
            i = (update - 1) % len(batches)
            state, _ = program.update(state, jax.tree.map(lambda x: x[i], program.batches))
            params, opt = reference_update(params, opt, batches[i])
            if update in marks:
                cells.append(max(float(jnp.max(jnp.abs(a[0] - b)))
                                 for a, b in zip(jax.tree.leaves(state[0]), jax.tree.leaves(params))))
        print(f"| {flow} | {jnp.zeros(()).dtype} | " + " | ".join(f"{c:.0e}" for c in cells) + " |", flush=True)


def per_seed(paths: list[Path], below: float) -> None:
    """Each seed's smoothed test loss at the last epoch of the CSVs, and the count below `below`.

    One row per CSV, variant, dtype and flow: the same variant in two CSVs is two programs (a CSV
    of flows RC ran both flows in one program), whose float rounding can differ."""
    curves: dict[tuple[str, str, str, str], dict[int, list[float]]] = {}
    for path in paths:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                key = (row["flow"], row["variant"], row["dtype"], path.name)
                curves.setdefault(key, {}).setdefault(int(row["seed"]), []).append(float(row["test_loss"]))
    print(f"| flow | variant | dtype | CSV | epochs | each seed's smoothed test loss at the last epoch | below {below:g} |")
    print("|---|---|---|---|---:|---|---:|")
    for (flow, variant, dtype, name), seeds in sorted(curves.items()):
        last = [float(reproduce.smoothed(np.array(seeds[s]))[-1]) for s in sorted(seeds)]
        epochs = len(next(iter(seeds.values())))
        print(f"| {flow} | {variant} | {dtype} | `{name}` | {epochs} | {', '.join(f'{x:.3g}' for x in last)} | "
              f"{sum(x < below for x in last)} of {len(last)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--poles", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=250)
    parser.add_argument("--flows", default="RC", help="flows to run (letters of R, C)")
    parser.add_argument("--variants", default="keras,optax,reference",
                        help="which of: keras (chaosgym, Keras' Adam), optax (chaosgym, optax's Adam), reference")
    parser.add_argument("--out", type=Path, default=Path("docs/data/stable_bptt_c_gap"))
    parser.add_argument("--divergence", action="store_true",
                        help="follow one initialisation update by update (chaosgym vs reference) instead")
    parser.add_argument("--seed", type=int, default=1, help="the initialisation --divergence follows")
    parser.add_argument("--per-seed", type=Path, nargs="+", metavar="CSV",
                        help="train nothing: each seed's final smoothed loss from CSVs this script wrote")
    parser.add_argument("--below", type=float, default=0.07, help="the success threshold of --per-seed")
    args = parser.parse_args()
    if args.per_seed:
        per_seed(args.per_seed, args.below)
        return
    if args.divergence:
        divergence(args.poles, args.seed)
        return
    chosen = args.variants.split(",")
    flows = args.flows
    dtype = str(jnp.zeros(()).dtype)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with tqdm(total=len(chosen) * args.epochs, unit="epoch") as bar:
        variants = {}
        # the keras program runs first in any case: its initial weights are every variant's
        keras, params0 = chaosgym_curves(args.poles, args.seeds, args.epochs, "keras", bar, flows)
        if "keras" in chosen:
            variants["chaosgym keras"] = keras
        if "optax" in chosen:
            variants["chaosgym optax"], _ = chaosgym_curves(args.poles, args.seeds, args.epochs, "optax", bar, flows)
        if "reference" in chosen:
            variants["reference"] = reference_curves(args.poles, args.seeds, args.epochs, params0, bar, flows)
    path = args.out / f"c_gap_{dtype}_{flows}_{args.seeds}seeds.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "dtype", "flow", "seed", "epoch", "test_loss"])
        for variant, curves in variants.items():
            for (flow, seed), losses in curves.items():
                writer.writerows([variant, dtype, flow, seed, e + 1, loss] for e, loss in enumerate(losses))
    marks = [m for m in (25, 50, 100, 150, 250, 500, 1000) if m <= args.epochs]
    print(f"\n{args.poles} poles, {dtype}, {args.seeds} initialisations (the same for every variant), "
          f"{time.perf_counter() - start:.0f} s; smoothed test loss, median [min, max]:\n")
    print("| variant | flow | " + " | ".join(f"epoch {m}" for m in marks) + " |")
    print("|---|---|" + "---:|" * len(marks))
    for variant, curves in variants.items():
        for flow in flows:
            smooth = np.array([reproduce.smoothed(np.array(curves[flow, s])) for s in range(args.seeds)])
            cells = [f"{np.median(smooth[:, m - 1]):.3g} [{smooth[:, m - 1].min():.3g}, {smooth[:, m - 1].max():.3g}]"
                     for m in marks]
            print(f"| {variant} | {flow} | " + " | ".join(cells) + " |")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
