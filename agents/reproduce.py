"""`chaosgym reproduce stable-bptt`: Schnell & Thuerey's (ICLR 2024) multi-pole cart-pole protocol.

What their published code runs (`tum-pbs/StableBPTT`, `CartPole/Runs/01`), on `ChaosCartPole-v0`
(the paper's system, see `chaosgym.tasks.cartpole`):

* data: 256 training and 256 test initial states drawn once (numpy seed 42, float32, the paper's
  distribution and draw order, so the very same states);
* network: the ``paper`` policy (raw state in, 2 x 100 tanh, linear force output in newtons,
  Glorot-uniform kernels, zero biases, zeroed output kernel);
* training: the final-state loss 1 - mean cos theta after 100 steps, averaged over a batch of 8;
  the 32 training batches in a fixed order, 1000 epochs (32,000 updates); Adam(1e-3, eps 1e-7) in
  Keras 2's form (`--adam keras`, the default; `--adam optax` for optax's); clipping NONE, VALUE
  (each element to +-1) or NORM (global norm 1) after the flows are combined
  (`chaosgym.agents.optimizer`, the builder every agent uses);
* flows: R (full), M (modified), S (stopped), C (combined: M where its sign agrees with R);
* metric: the loss on all 256 test states after every epoch.

Differences, each stated in docs/stable_bptt.md: several seeds of the network's initialisation
(the paper ran one, with TensorFlow's generator); the physics is MJX's step by default, or with
`--physics equations` the paper's closed form inside the same task (equal to MJX's step to 1e-13
in float64 over 100 steps, 27x cheaper per update on a CPU); every table names the physics.

Every run of one pole count (flows x clipping modes x seeds, 36 for the full grid) is one vmapped
program: R, M and S take one backward pass each and C two (R's and M's), all in one batch of
passes (`chaosgym.functional.rollout.Cuts`). Each pole count's group is a run folder (`chaosgym.agents.run`):
`<out>/poles3-RMSC/` holds `config.json`, `metrics.csv` (one row per run and epoch) and a
checkpoint (with the previous one as fallback) every `--checkpoint-every` epochs, under a lock: an
interrupted reproduction resumes from there and finished groups are read back, not redone.
`results.md` (the tables) and `stable_bptt.png` (the paper's figure) are drawn from
every finished epoch.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import optax
from tqdm.auto import tqdm

matplotlib.use("Agg")  # files only, never a window: before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402

import chaosgym  # noqa: E402
from chaosgym.agents.optimizer import make_optimizer  # noqa: E402
# the protocol and the command line's arguments, JAX-free; re-exported
from chaosgym.agents.reproduce_config import (CLIPS, FLOWS, GRID_COST, Protocol, add_arguments,  # noqa: E402,F401
                                              from_args)
from chaosgym.agents import checkpoints  # noqa: E402
from chaosgym.agents.commands import ClusterOptions  # noqa: E402
from chaosgym.agents.run import CheckpointError, RunFolder  # noqa: E402
from chaosgym.functional.gradients import COMBINATIONS, highest_precision  # noqa: E402
from chaosgym.functional.settings import ESTIMATOR_SPECS  # noqa: E402
from chaosgym.functional.policies import policy_functions  # noqa: E402
from chaosgym.functional.rollout import Cuts, rollout  # noqa: E402
from chaosgym.validation import UserError

COLUMNS = ["poles", "flow", "clip", "seed", "epoch", "test_loss", "train_loss", "grad_norm",
           "cosine_modified_full", "fraction_zeroed", "max_abs_force", "wall_time"]
TEXT_COLUMNS, INT_COLUMNS = ("flow", "clip"), ("poles", "seed", "epoch")


def describe(protocol: Protocol) -> str:
    """The physics, Adam's form and the float type: every table and figure names them."""
    physics = ("the paper's closed-form equations (--physics equations)" if protocol.physics == "equations"
               else "MJX's step (--physics mjx)")
    return (f"physics: {physics}; Adam: {protocol.adam}'s form (eps {protocol.adam_eps:g}); "
            f"{jnp.zeros(()).dtype}")


def paper_states(num_poles: int, count: int = 256, seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """The paper's training and test initial states, `(count, 1 + N, 2)` float32 each.

    Row 0 of each state is the cart (x, x'), row i the pole i (theta, theta'); drawn as the paper's
    data script draws them after `np.random.seed(seed)`: uniform in [-1, 1], then
    theta = pi + u pi / 6; the training set first.
    """
    rng = np.random.RandomState(seed)

    def draw():
        states = rng.rand(count, num_poles + 1, 2).astype(np.float32) * 2 - 1
        states[:, 1:, 0] = np.pi + states[:, 1:, 0] * np.pi / 6
        return states

    train = draw()
    return train, draw()


def env_states(env: chaosgym.Env, states: np.ndarray) -> chaosgym.State:
    """A batch of `chaosgym.State`s at the paper's states `(batch, 1 + N, 2)`."""
    task = env.task

    def one(s):
        return env.reset_to(*task.qpos_qvel(s[0, 0], s[0, 1], s[1:, 0], s[1:, 1]))

    return jax.vmap(one)(jnp.asarray(states, jnp.zeros(()).dtype))


def grid_runs(flows, clips, seeds: int) -> list[tuple[str, str, int]]:
    """The runs of one pole count's group, `(flow, clip, seed)`, in the order of the program's batch."""
    return [(flow, clip, seed) for flow in flows for seed in range(seeds) for clip in clips]


@dataclass
class Program:
    """The jitted functions of one group of runs: `init()`, `gradients(params, batch)` (every run's
    gradient and metrics), `update(state, batch)` (one update of every run), `epoch(state)` (every
    run through the epoch's batches, then the test loss) and `test(params)`. The state is
    `(params, opt_states)`, stacked over runs."""

    runs: list[tuple[str, str, int]]
    init: object
    gradients: object
    update: object
    epoch: object
    test: object
    batches: chaosgym.State


def make_program(num_poles: int, runs: list[tuple[str, str, int]], protocol: Protocol) -> Program:
    """One vmapped program for `runs` (flow, clip, seed) at `num_poles` poles.

    Each run's gradient comes from one backward pass of the rollout with its flow's cuts (`Cuts`),
    C's from two (M's and R's, combined by `chaosgym.functional.gradients.combine`); all passes of all runs are
    one vmapped batch. Runs of the same seed start from the same weights.
    """
    env = chaosgym.make("ChaosCartPole-v0", num_poles=num_poles, physics=protocol.physics)
    init_params, policy = policy_functions("paper", env.task)
    train_np, test_np = paper_states(num_poles, protocol.states, protocol.data_seed)
    # the training states in the paper's fixed batch order: (updates per epoch, batch, ...)
    batches = jax.tree.map(lambda x: x.reshape(protocol.updates_per_epoch, protocol.batch_size, *x.shape[1:]),
                           env_states(env, train_np))
    test_states = env_states(env, test_np)

    # every run's backward passes: its estimator's flows (`ESTIMATOR_SPECS`), one or two
    passes, first, second = [], [], []  # (run, flow of the pass); each run's first and last pass
    for index, (flow, _, _) in enumerate(runs):
        first.append(len(passes))
        passes += [(index, pass_flow) for pass_flow in ESTIMATOR_SPECS[FLOWS[flow]].flows]
        second.append(len(passes) - 1)
    pass_run = jnp.asarray([run for run, _ in passes])
    cuts = Cuts(*(jnp.stack(c) for c in zip(*(Cuts.of(flow) for _, flow in passes))))
    first, second = jnp.asarray(first), jnp.asarray(second)
    # the estimator of the runs with two passes, whose function combines them (the grid's C)
    two = sorted({FLOWS[flow] for flow, _, _ in runs if len(ESTIMATOR_SPECS[FLOWS[flow]].flows) == 2}) or ["combined"]
    if len(two) > 1:
        raise ValueError(f"one grid program combines one estimator's two passes, not several: {two}")
    combination = COMBINATIONS[two[0]]
    is_combined = jnp.asarray([FLOWS[flow] == two[0] for flow, _, _ in runs])
    modes = jnp.asarray([CLIPS.index(clip) for _, clip, _ in runs])
    seeds = jnp.asarray([seed for _, _, seed in runs])
    # one optimiser per clipping mode, all of one state layout, so each run switches to its own
    optimizers = [make_optimizer(protocol.learning_rate, eps=protocol.adam_eps, adam=protocol.adam,
                                 clip_value=protocol.clip_number if clip == "VALUE" else None,
                                 clip_norm=protocol.clip_number if clip == "NORM" else None) for clip in CLIPS]

    def loss(params, cut, batch):
        return rollout(env, policy, params, batch, protocol.horizon, flow=cut, objective="final_state")[0]

    def init():
        params = jax.vmap(lambda seed: init_params(jax.random.key(seed), env.observation_size, env.action_size,
                                                   protocol.hidden))(seeds)
        return params, jax.vmap(optimizers[0].init)(params)

    def optimize(grad, opt_state, params, mode):
        step, opt_state = jax.lax.switch(mode, [o.update for o in optimizers], grad, opt_state, params)
        return optax.apply_updates(params, step), opt_state

    def gradients(params, batch):
        """Every run's gradient (C's combined) and its metrics on one batch."""
        losses, grads = jax.vmap(highest_precision(jax.value_and_grad(loss)), in_axes=(0, 0, None))(
            jax.tree.map(lambda x: x[pass_run], params), cuts, batch)
        g_first, g_second = (jax.tree.map(lambda g: g[i], grads) for i in (first, second))
        combined, diagnostics = jax.vmap(lambda a, b: combination([a, b]))(g_first, g_second)
        per_run = lambda c, g: jnp.where(is_combined.reshape((-1,) + (1,) * (g.ndim - 1)), c, g)
        grad = jax.tree.map(per_run, combined, g_first)
        nan = jnp.full(is_combined.shape, jnp.nan, losses.dtype)
        return grad, {"train_loss": losses[second], "grad_norm": jax.vmap(optax.tree.norm)(grad),
                      **{k: jnp.where(is_combined, v.astype(losses.dtype), nan) for k, v in diagnostics.items()}}

    def update(state, batch):
        params, opt_states = state
        grad, metrics = gradients(params, batch)
        return jax.vmap(optimize)(grad, opt_states, params, modes), metrics

    def test(params):
        """Final-state loss on the test states, and the largest |force| any test episode used."""
        value, trajectory = rollout(env, policy, params, test_states, protocol.horizon, objective="final_state")
        return value, jnp.max(jnp.abs(trajectory.actions)) * env.task.force_scale

    def epoch(state):
        state, metrics = jax.lax.scan(update, state, batches)
        test_loss, max_force = jax.vmap(test)(state[0])
        return state, {**{k: jnp.mean(v, axis=0) for k, v in metrics.items()}, "test_loss": test_loss,
                       "max_abs_force": max_force}

    return Program(runs, jax.jit(init), jax.jit(gradients), jax.jit(update), jax.jit(epoch),
                   jax.jit(jax.vmap(test)), batches)


class GroupRun(RunFolder):
    """The run folder of one pole count's group: its settings as config.json (a resumed group may
    only run more epochs), one metrics row per run and epoch, the program's state as checkpoint."""

    columns = COLUMNS
    required = ("poles", "flow", "clip", "seed", "epoch", "test_loss", "wall_time")
    budget_fields = ("epochs",)


def group_config(num_poles: int, flows, clips, seeds: int, protocol: Protocol) -> dict:
    return {"experiment": "stable-bptt", "poles": num_poles, "flows": list(flows), "clips": list(clips),
            "seeds": seeds, "dtype": str(jnp.zeros(()).dtype),
            **{k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(protocol).items()}}


def group_folder(out: Path, num_poles: int, flows) -> Path:
    return out / f"poles{num_poles}-{''.join(flows)}"


def typed(row: dict) -> dict:
    """A metrics row as read back (text) with its numbers as numbers. The metrics are float32 (the
    program's); read through float32, a value written with 9 significant digits (an archived
    group's metrics.csv.gz) is the very value the program gave."""
    def number(key: str, text: str):
        if key in INT_COLUMNS:
            return int(text)
        if text == "":
            return math.nan
        return float(text) if key == "wall_time" else float(np.float32(text))
    return {k: v if k in TEXT_COLUMNS else number(k, v) for k, v in row.items() if k in COLUMNS}


def encode_checkpoint(epoch: int, state, compile_time: float) -> bytes:
    return checkpoints.encode(state, {"epoch": epoch, "compile_time": compile_time})


def decode_checkpoint(payload: bytes, program: Program) -> dict:
    """The program's state at a checkpoint (arrays that must fill its init's shapes exactly)."""
    state, meta = checkpoints.decode(payload, jax.eval_shape(program.init))
    if not isinstance(meta.get("epoch"), int):
        raise CheckpointError("not a checkpoint of chaosgym reproduce")
    return {"epoch": meta["epoch"], "state": state, "compile_time": meta.get("compile_time", 0.0)}


def run_group(out: Path, num_poles: int, flows, clips, seeds: int, protocol: Protocol, bar: tqdm,
              checkpoint_every: int = 10) -> list[dict]:
    """Train (or resume, or read back) every flow x clipping x seed run of one pole count."""
    runs = grid_runs(flows, clips, seeds)
    config = group_config(num_poles, flows, clips, seeds, protocol)
    program = make_program(num_poles, runs, protocol)  # traced only when it runs: its init's shapes decode
    group, checkpoint = GroupRun.open(group_folder(out, num_poles, flows), config, resume=True,
                                      decode=lambda payload: decode_checkpoint(payload, program))
    with group:
        done = checkpoint["epoch"] if checkpoint else 0
        bar.update(min(done, protocol.epochs))
        if done >= protocol.epochs:  # finished: read back, nothing written
            return [r for r in map(typed, group.metrics()) if r["epoch"] <= protocol.epochs]
        if checkpoint is None:
            group.start()
        else:
            group.resume_at(lambda row: int(row["epoch"]) <= done)  # drop epochs after the checkpoint
        rows = [typed(r) for r in group.metrics()]
        bar.set_description(f"compiling {num_poles} pole(s), {len(runs)} runs")
        state = checkpoint["state"] if checkpoint else program.init()
        start = time.perf_counter()
        compiled = program.epoch.lower(state).compile()
        compile_time = time.perf_counter() - start
        wall = rows[-1]["wall_time"] if rows else 0.0
        bar.set_description(f"{num_poles} pole(s), {len(runs)} runs")
        for index in range(done, protocol.epochs):
            start = time.perf_counter()
            state, metrics = compiled(state)
            metrics = jax.device_get(metrics)
            wall += time.perf_counter() - start
            new = [{"poles": num_poles, "flow": flow, "clip": clip, "seed": seed, "epoch": index + 1,
                    "wall_time": wall, **{k: float(v[i]) for k, v in metrics.items()}}
                   for i, (flow, clip, seed) in enumerate(runs)]
            group.append_metrics(new)
            rows.extend(new)
            if (index + 1) % checkpoint_every == 0 or index + 1 == protocol.epochs:
                group.save_checkpoint(encode_checkpoint(index + 1, state, compile_time))
            bar.update()
            bar.set_postfix(test_loss=f"{np.median(metrics['test_loss']):.3g}")
    return rows



def train_group(out: Path, num_poles: int, flows, clips, seeds: int, protocol: Protocol, checkpoint_every: int) -> None:
    """A pole count's group as a Ray task's unit (`--workers`, `chaosgym.agents.cluster`): `run_group`
    without a bar (the driver shows the units' progress)."""
    with tqdm(disable=True) as bar:
        run_group(out, num_poles, flows, clips, seeds, protocol, bar, checkpoint_every)

def read_group(out: Path, num_poles: int, flows) -> list[dict]:
    """The rows of a group's finished epochs, read from its metrics (none if it has not started):
    an epoch is finished when every run of the group has its row (they are written together)."""
    folder = group_folder(out, num_poles, flows)
    if not (folder / "config.json").exists():
        return []
    group = GroupRun(folder)
    config = group.config
    runs = len(grid_runs(config["flows"], config["clips"], config["seeds"]))
    rows = [typed(r) for r in group.metrics()]
    counts = Counter(r["epoch"] for r in rows)
    done = 0
    while counts.get(done + 1) == runs:
        done += 1
    return [r for r in rows if r["epoch"] <= done]


def smoothed(values: np.ndarray, window: int = 30) -> np.ndarray:
    """The paper's moving average: the mean of the last `window` epochs, the first epoch's value
    standing in for the epochs before it."""
    padded = np.concatenate([np.full(window - 1, values[0]), values])
    return np.convolve(padded, np.ones(window) / window, mode="valid")


def curves(rows: list[dict], poles: int, flow: str, clip: str, window: int = 30) -> np.ndarray:
    """Smoothed test-loss curves `(seeds, epochs)` of one setting (seeds with every epoch only)."""
    mine = [r for r in rows if r["poles"] == poles and r["flow"] == flow and r["clip"] == clip]
    seeds = sorted({r["seed"] for r in mine})
    per_seed = [np.array([r["test_loss"] for r in sorted(mine, key=lambda r: r["epoch"]) if r["seed"] == s])
                for s in seeds]
    epochs = min((len(c) for c in per_seed), default=0)
    return np.array([smoothed(c[:epochs], window) for c in per_seed]) if epochs else np.zeros((0, 0))


def results_table(rows: list[dict], poles_list, flows, clips, window: int = 30) -> str:
    """Final smoothed test loss per poles x flow x clipping: median over seeds [min, max]."""
    lines = ["| poles | clipping | " + " | ".join(flows) + " |", "|---|---|" + "---|" * len(flows)]
    for poles in poles_list:
        for clip in clips:
            cells = []
            for flow in flows:
                c = curves(rows, poles, flow, clip, window)
                cells.append("—" if not c.size else
                             f"{np.median(c[:, -1]):.2e} [{c[:, -1].min():.1e}, {c[:, -1].max():.1e}] ({c.shape[1]} ep)")
            lines.append(f"| {poles} | {clip} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


MILESTONES = (25, 50, 100, 180, 250, 380, 500, 750, 1000)


def milestones_table(rows: list[dict], poles_list, flows, clips, updates_per_epoch: int, window: int = 30,
                     milestones=MILESTONES) -> str:
    """The smoothed test loss along training: median over seeds [min, max] at the given epochs,
    one row per epoch that some setting has reached, one column per flow."""
    lines = []
    for poles in poles_list:
        for clip in clips:
            found = {flow: curves(rows, poles, flow, clip, window) for flow in flows}
            longest = max((c.shape[1] for c in found.values() if c.size), default=0)
            if not longest:
                continue
            lines += [f"\n{poles} pole(s), clipping {clip}:\n", "| epoch | updates | " + " | ".join(flows) + " |",
                      "|---:|---:|" + "---|" * len(flows)]
            for epoch in [m for m in milestones if m <= longest]:
                cells = ["—" if c.ndim < 2 or c.shape[1] < epoch else
                         f"{np.median(c[:, epoch - 1]):.3g} [{c[:, epoch - 1].min():.3g}, {c[:, epoch - 1].max():.3g}]"
                         for c in (found[flow] for flow in flows)]
                lines.append(f"| {epoch} | {epoch * updates_per_epoch:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], poles_list, flows, clips, path: Path, window: int = 30, title: str = "") -> None:
    """The paper's figure: one panel per pole count, smoothed test loss, log axis, the median over
    seeds (the tables' statistic) with the seeds' range as a band; one colour per flow, one line
    style per clipping mode."""
    colours = dict(zip(FLOWS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    styles = dict(zip(CLIPS, ("-", "--", ":")))
    fig, axes = plt.subplots(1, len(poles_list), figsize=(max(4.2 * len(poles_list), 8.0), 4.2), squeeze=False, sharey=True)
    handles = {}
    for ax, poles in zip(axes[0], poles_list):
        for flow in flows:
            for clip in clips:
                c = curves(rows, poles, flow, clip, window)
                if not c.size:
                    continue
                epochs = np.arange(1, c.shape[1] + 1)
                line, = ax.plot(epochs, np.median(c, axis=0), color=colours[flow], linestyle=styles[clip], lw=1.2)
                ax.fill_between(epochs, c.min(axis=0), c.max(axis=0), color=colours[flow], alpha=0.12, lw=0)
                handles[f"{flow} {clip}"] = line
        ax.set(title=f"{poles} pole{'s' if poles > 1 else ''}", xlabel="epoch (32 updates)", yscale="log",
               ylim=(1e-6, 3))
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel(f"test loss ({window}-epoch moving average),\nmedian over seeds, band: min-max")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, 0.07 + 0.04 * (len(handles) > 6), 1, 0.94 if title else 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reproduce(out: Path, poles_list: list[int], flows: list[str], clips: list[str], seeds: int,
              protocol: Protocol, progress: bool = True, checkpoint_every: int = 10,
              report_only: bool = False, cluster: ClusterOptions | None = None) -> list[dict]:
    """Run (or resume, or read back) every pole count's group, then write the tables
    and the figure. With `report_only`, nothing is trained: the report shows the epochs the groups
    have so far (and nothing is written when they have none). With `cluster`, the groups train as
    Ray tasks (`chaosgym.agents.cluster`) and are read back here."""
    rows = []
    if report_only:
        for poles in poles_list:
            rows += [r for r in read_group(out, poles, flows) if r["clip"] in clips and r["seed"] < seeds]
        if not rows:
            raise UserError(f"{out} holds no finished epoch of {', '.join(flows)} at {poles_list} pole(s) "
                             f"(folders {group_folder(out, poles_list[0], flows).name}, ...); nothing to report")
    else:
        out.mkdir(parents=True, exist_ok=True)
        if cluster is not None:  # the groups on Ray first; the loop below reads each one back
            from chaosgym.agents.cluster import Unit, run_units

            # the largest group first: the smaller ones fill in beside it
            units = [Unit(f"{poles} pole(s)", train_group, (out, poles, flows, clips, seeds, protocol, checkpoint_every))
                     for poles in sorted(poles_list, reverse=True)
                     if max((r["epoch"] for r in read_group(out, poles, flows)), default=0) < protocol.epochs]
            run_units(units, cluster, "reproduce")
        with tqdm(total=len(poles_list) * protocol.epochs, unit="epoch", disable=not progress,
                  smoothing=0.05) as bar:
            for poles in poles_list:
                rows += run_group(out, poles, flows, clips, seeds, protocol, bar, checkpoint_every)
    table = results_table(rows, poles_list, flows, clips)
    header = (f"Test loss (1 - mean cos theta after {protocol.horizon} steps, on the {protocol.states} test "
              f"states), 30-epoch moving average at the last epoch: median over {seeds} seed(s) "
              f"[min, max] (epochs run). {describe(protocol)}.\n\n")
    along = milestones_table(rows, poles_list, flows, clips, protocol.updates_per_epoch)
    (out / "results.md").write_text(header + table + "\n\nAlong training (same statistic):\n" + along + "\n")
    plot(rows, poles_list, flows, clips, out / "stable_bptt.png", title=describe(protocol))
    print(header + table)
    print(f"\nwrote {out}/results.md and stable_bptt.png (the data: each group's metrics.csv)")
    return rows


def run(args) -> int:
    poles, flows, clips, seeds, protocol = from_args(args)
    reproduce(args.out, poles, flows, clips, seeds, protocol, not args.no_progress, args.checkpoint_every,
              args.report_only, args.cluster)
    return 0
