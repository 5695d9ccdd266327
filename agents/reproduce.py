"""`chaosgym reproduce stable-bptt`: Schnell & Thuerey's (ICLR 2024) multi-pole cart-pole protocol.

What their published code runs (`tum-pbs/StableBPTT`, `CartPole/Runs/01`), on `ChaosCartPole-v0`
(the paper's system, see `chaosgym.tasks.cartpole`):

* data: 256 training and 256 test initial states drawn once (numpy seed 42, float32, the paper's
  distribution and draw order, so the very same states);
* network: the ``paper`` policy (raw state in, 2 x 100 tanh, linear force output in newtons,
  Glorot-uniform kernels, zero biases, zeroed output kernel);
* training: the final-state loss 1 - mean cos theta after 100 steps, averaged over a batch of 8;
  the 32 training batches in a fixed order, 1000 epochs (32,000 updates); Adam(1e-3, eps 1e-7);
  clipping NONE, VALUE (each element to +-1) or NORM (global norm 1) after the flows are combined;
* flows: R (full), M (modified), S (stopped), C (combined: M where its sign agrees with R);
* metric: the loss on all 256 test states after every epoch.

Differences, each stated in docs/stable_bptt.md: several seeds of the network's initialisation
(the paper ran one, with TensorFlow's generator); optax's Adam puts eps after the bias correction
(Keras before it, which makes Keras' eps up to 32x larger in the first updates and the same after a
few thousand); MJX physics instead of the paper's closed-form equations (equal to 1e-9 in float64,
tests/test_cartpole_paper.py).

Runs of one (poles, flow) pair share one compiled program: its seeds and clipping modes are one
vmapped batch. Each pair's folder (`<out>/poles3-C/`) holds `config.json`, `epochs.csv` (one row
per run and epoch) and a checkpoint written every `--checkpoint-every` epochs: an interrupted
reproduction resumes from there, and finished pairs are read back, not redone. `results.md` (the
table) and `stable_bptt.png` (the paper's figure) are drawn from every finished epoch.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import chaosgym
from chaosgym.gradients import EstimatorConfig, make_estimator
from chaosgym.policies import policy_functions
from chaosgym.rollout import rollout
from chaosgym.trace_cache import write_atomic

FLOWS = {"R": "full", "M": "modified", "S": "stopped", "C": "combined"}
CLIPS = ("NONE", "VALUE", "NORM")
COLUMNS = ["poles", "flow", "clip", "seed", "epoch", "test_loss", "train_loss", "grad_norm",
           "cosine_modified_full", "fraction_zeroed", "max_abs_force", "wall_time"]


@dataclass(frozen=True)
class Protocol:
    """The paper's settings (its run script's values are the defaults)."""

    states: int = 256
    batch_size: int = 8
    epochs: int = 1000
    learning_rate: float = 1e-3
    adam_eps: float = 1e-7
    clip_number: float = 1.0
    horizon: int = 100
    hidden: tuple[int, ...] = (100, 100)
    data_seed: int = 42

    @property
    def updates_per_epoch(self) -> int:
        return self.states // self.batch_size


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


def _clipper(mode: jax.Array, clip_number: float):
    """Clip a gradient by the run's mode (0 NONE, 1 VALUE, 2 NORM): optax's transforms, per run."""
    transforms = [optax.identity(), optax.clip(clip_number), optax.clip_by_global_norm(clip_number)]
    branches = [lambda g, t=t: t.update(g, t.init(g))[0] for t in transforms]
    return lambda grad: jax.lax.switch(mode, branches, grad)


def make_group(num_poles: int, flow: str, protocol: Protocol):
    """The jitted programs of one (poles, flow) pair: `init(seeds)`, `epoch(runs, modes)` and `test`.

    `epoch` trains every run (a seed with a clipping mode) for one epoch, vmapped; it returns the
    new runs and per-run metrics (mean over the epoch's updates) and the test loss after the epoch.
    """
    env = chaosgym.make("ChaosCartPole-v0", num_poles=num_poles)
    init, policy = policy_functions("paper", env.task)
    estimator = make_estimator(env, policy, EstimatorConfig(name=FLOWS[flow], horizon=protocol.horizon,
                                                            objective="final_state"))
    optimizer = optax.adam(protocol.learning_rate, eps=protocol.adam_eps)
    train_np, test_np = paper_states(num_poles, protocol.states, protocol.data_seed)
    # the training states in the paper's fixed batch order: (updates per epoch, batch, ...)
    batches = jax.tree.map(lambda x: x.reshape(protocol.updates_per_epoch, protocol.batch_size, *x.shape[1:]),
                           env_states(env, train_np))
    test_states = env_states(env, test_np)
    obs_size = env.observation_size

    def init_run(seed):
        params = init(jax.random.key(seed), obs_size, env.action_size, protocol.hidden)
        return params, optimizer.init(params)

    def test(params):
        """Final-state loss on the test states, and the largest |force| any test episode used."""
        loss, trajectory = rollout(env, policy, params, test_states, protocol.horizon, objective="final_state")
        return loss, jnp.max(jnp.abs(trajectory.actions)) * env.task.force_scale

    def run_epoch(run, mode):
        clip = _clipper(mode, protocol.clip_number)

        def update(run, batch):
            params, opt_state = run
            grad, diagnostics = estimator(params, batch, jax.random.key(0))
            step, opt_state = optimizer.update(clip(grad), opt_state, params)
            metrics = {k: diagnostics.get(k, jnp.nan) for k in ("loss", "grad_norm", "cosine_modified_full",
                                                                  "fraction_zeroed")}
            return (optax.apply_updates(params, step), opt_state), metrics

        run, metrics = jax.lax.scan(update, run, batches)
        test_loss, max_force = test(run[0])
        metrics = {k: jnp.mean(v) for k, v in metrics.items()}
        return run, {**metrics, "test_loss": test_loss, "max_abs_force": max_force}

    init_runs = jax.jit(jax.vmap(init_run))
    epoch = jax.jit(jax.vmap(run_epoch))
    return init_runs, epoch, jax.jit(jax.vmap(test))


def group_folder(out: Path, num_poles: int, flow: str) -> Path:
    return out / f"poles{num_poles}-{flow}"


def run_group(out: Path, num_poles: int, flow: str, clips: list[str], seeds: int, protocol: Protocol,
              bar: tqdm, checkpoint_every: int = 10) -> list[dict]:
    """Train (or resume, or read back) every seed x clipping run of one (poles, flow) pair."""
    folder = group_folder(out, num_poles, flow)
    folder.mkdir(parents=True, exist_ok=True)
    config = {"poles": num_poles, "flow": flow, "clips": clips, "seeds": seeds,
              "protocol": dataclasses.asdict(protocol)}
    config_path, rows_path, checkpoint_path = folder / "config.json", folder / "epochs.csv", folder / "checkpoint.pkl"
    if config_path.exists() and json.loads(config_path.read_text()) != json.loads(json.dumps(config)):
        raise ValueError(f"{folder} holds runs of another configuration ({config_path}); "
                         "choose another --out or the same settings")
    done_epochs, runs = 0, None
    if checkpoint_path.exists():
        saved = pickle.loads(checkpoint_path.read_bytes())
        done_epochs, runs = saved["epoch"], saved["runs"]
    rows = read_rows(rows_path, max_epoch=done_epochs)
    bar.update(done_epochs)
    if done_epochs >= protocol.epochs:
        return rows
    write_atomic(config_path, json.dumps(config, indent=2).encode())
    write_rows(rows_path, rows)  # drop epochs written after the last checkpoint
    seed_of = np.repeat(np.arange(seeds), len(clips))
    modes = jnp.asarray(np.tile([CLIPS.index(c) for c in clips], seeds))
    init_runs, epoch, _ = make_group(num_poles, flow, protocol)
    if runs is None:
        runs = init_runs(jnp.asarray(seed_of))
    bar.set_description(f"compiling {num_poles} pole(s), flow {flow}")
    start = time.perf_counter()
    compiled = epoch.lower(runs, modes).compile()
    compile_time = time.perf_counter() - start
    wall = rows[-1]["wall_time"] if rows else 0.0
    bar.set_description(f"{num_poles} pole(s), flow {flow} ({len(seed_of)} runs)")
    with open(rows_path, "a", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        for index in range(done_epochs, protocol.epochs):
            start = time.perf_counter()
            runs, metrics = compiled(runs, modes)
            metrics = jax.device_get(metrics)
            wall += time.perf_counter() - start
            new = [{"poles": num_poles, "flow": flow, "clip": clips[i % len(clips)], "seed": int(seed_of[i]),
                    "epoch": index + 1, "test_loss": float(metrics["test_loss"][i]),
                    "train_loss": float(metrics["loss"][i]), "grad_norm": float(metrics["grad_norm"][i]),
                    "cosine_modified_full": float(metrics["cosine_modified_full"][i]),
                    "fraction_zeroed": float(metrics["fraction_zeroed"][i]),
                    "max_abs_force": float(metrics["max_abs_force"][i]), "wall_time": wall}
                   for i in range(len(seed_of))]
            writer.writerows(new)
            rows.extend(new)
            if (index + 1) % checkpoint_every == 0 or index + 1 == protocol.epochs:
                f.flush()
                write_atomic(checkpoint_path, pickle.dumps({"epoch": index + 1, "runs": jax.device_get(runs),
                                                            "compile_time": compile_time}))
            bar.update()
            bar.set_postfix(test_loss=f"{np.median(metrics['test_loss']):.3g}")
    return rows


def read_rows(path: Path, max_epoch: int | None = None) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        rows = [{k: (v if k in ("flow", "clip") else float(v) if k not in ("poles", "seed", "epoch") else int(v))
                 for k, v in r.items()} for r in csv.DictReader(f)]
    return [r for r in rows if max_epoch is None or r["epoch"] <= max_epoch]


def write_rows(path: Path, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(path, text.getvalue().encode())


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


def plot(rows: list[dict], poles_list, flows, clips, path: Path, window: int = 30) -> None:
    """The paper's figure: one panel per pole count, smoothed test loss, log axis, mean over seeds
    with the seeds' range as a band; one colour per flow, one line style per clipping mode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(FLOWS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
    styles = dict(zip(CLIPS, ("-", "--", ":")))
    fig, axes = plt.subplots(1, len(poles_list), figsize=(4.2 * len(poles_list), 3.8), squeeze=False, sharey=True)
    handles = {}
    for ax, poles in zip(axes[0], poles_list):
        for flow in flows:
            for clip in clips:
                c = curves(rows, poles, flow, clip, window)
                if not c.size:
                    continue
                epochs = np.arange(1, c.shape[1] + 1)
                line, = ax.plot(epochs, c.mean(axis=0), color=colours[flow], linestyle=styles[clip], lw=1.2)
                ax.fill_between(epochs, c.min(axis=0), c.max(axis=0), color=colours[flow], alpha=0.12, lw=0)
                handles[f"{flow} {clip}"] = line
        ax.set(title=f"{poles} pole{'s' if poles > 1 else ''}", xlabel="epoch (32 updates)", yscale="log",
               ylim=(1e-6, 3))
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel(f"test loss ({window}-epoch moving average)")
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(len(handles), 6), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * (len(handles) > 6), 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def reproduce(out: Path, poles_list: list[int], flows: list[str], clips: list[str], seeds: int,
              protocol: Protocol, progress: bool = True, checkpoint_every: int = 10,
              report_only: bool = False) -> list[dict]:
    """Run (or resume, or read back) every group, then write the table, results.csv and the figure.
    With `report_only`, nothing is trained: the report shows the epochs the groups have so far."""
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if report_only:
        for poles in poles_list:
            for flow in flows:
                folder = group_folder(out, poles, flow)
                done = pickle.loads((folder / "checkpoint.pkl").read_bytes())["epoch"] if (
                    folder / "checkpoint.pkl").exists() else 0
                rows += [r for r in read_rows(folder / "epochs.csv", max_epoch=done)
                         if r["clip"] in clips and r["seed"] < seeds]
    else:
        with tqdm(total=len(poles_list) * len(flows) * protocol.epochs, unit="epoch", disable=not progress,
                  smoothing=0.05) as bar:
            for poles in poles_list:
                for flow in flows:
                    rows += run_group(out, poles, flow, clips, seeds, protocol, bar, checkpoint_every)
    table = results_table(rows, poles_list, flows, clips)
    header = (f"Test loss (1 - mean cos theta after {protocol.horizon} steps, on the {protocol.states} test "
              f"states), 30-epoch moving average at the last epoch: median over {seeds} seed(s) "
              f"[min, max] (epochs run).\n\n")
    along = milestones_table(rows, poles_list, flows, clips, protocol.updates_per_epoch)
    (out / "results.md").write_text(header + table + "\n\nAlong training (same statistic):\n" + along + "\n")
    write_rows(out / "results.csv", rows)
    plot(rows, poles_list, flows, clips, out / "stable_bptt.png")
    print(header + table)
    print(f"\nwrote {out}/results.md, results.csv, stable_bptt.png")
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", choices=["stable-bptt"], help="the experiment to reproduce")
    parser.add_argument("--poles", default="1,2,3,4", help="pole counts N")
    parser.add_argument("--flows", default="R,M,S,C", help="gradient flows: R full, M modified, S stopped, C combined")
    parser.add_argument("--clip", default="NONE,VALUE,NORM", help="clipping modes (NONE, VALUE, NORM)")
    parser.add_argument("--seeds", type=int, default=3, help="network initialisations per setting")
    parser.add_argument("--epochs", type=int, default=Protocol.epochs, help="epochs of 32 updates each")
    parser.add_argument("--states", type=int, default=Protocol.states, help="training (and test) initial states")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="epochs between checkpoints")
    parser.add_argument("--out", type=Path, default=Path("runs/stable_bptt"), help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: write the table and figure from the epochs --out holds so far")


def _choices(text: str, valid, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in valid]
    if bad or not items:
        raise ValueError(f"unknown {what} {', '.join(bad) or '(none given)'}; valid: {', '.join(map(str, valid))}")
    return items


def run(args) -> int:
    poles = [int(p) for p in _choices(args.poles, [str(n) for n in range(1, 5)], "pole count")]
    flows = _choices(args.flows, FLOWS, "flow")
    clips = _choices(args.clip, CLIPS, "clipping mode")
    if args.seeds < 1 or args.epochs < 1 or args.checkpoint_every < 1:
        raise ValueError("--seeds, --epochs and --checkpoint-every must be at least 1")
    protocol = Protocol(epochs=args.epochs, states=args.states)
    if args.states < protocol.batch_size or args.states % protocol.batch_size:
        raise ValueError(f"--states must be a positive multiple of the batch size {protocol.batch_size}")
    reproduce(args.out, poles, flows, clips, args.seeds, protocol, not args.no_progress, args.checkpoint_every,
              args.report_only)
    return 0
