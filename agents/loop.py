"""The one training loop of every agent whose update is a JAX function: resumable, checkpointed,
scored by the one evaluation protocol.

It drives a `chaosgym.agents.interfaces.Core` (init, update, the policy it evaluates), which the
algorithm modules give: `chaosgym.agents.estimators.core` for the gradient estimators, and the
`Carried` functions of apg, shac and ahac (`carried(settings)`), jitted here once per configuration
(`carried_core`).

Every update's key is `fold_in(seed, update)`, so a run resumed from a checkpoint continues exactly
as the uninterrupted run would. A checkpoint (`chaosgym.agents.checkpoints`: arrays and JSON, no
pickle) holds the parameters, the optimiser's (for carried agents, the whole train) state and the
progress counters, every `checkpoint_every` updates and at the end. Evaluation
(`chaosgym.evaluation.batched_evaluation`) runs the deterministic policy for whole episodes from
the held-out initial states of the Gymnasium evaluation protocol, so its scores equal that
protocol's; row 0 of metrics.csv is the untrained policy. `wall_time` counts training only: the
first compile is timed apart (`compile_time`), evaluation and checkpoints stand outside the clock.
"""

from __future__ import annotations

import functools
import importlib
import math
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

import chaosgym
from chaosgym.agents import checkpoints
from chaosgym.agents.announce import announce_compile
from chaosgym.agents import estimators
from chaosgym.agents.config import TrainConfig
from chaosgym.agents.carried import reset_batch
from chaosgym.agents.interfaces import Carried, Core
from chaosgym.agents.run import CheckpointError, Run, next_timed_evaluation
from chaosgym.evaluation import batched_evaluation, held_out_keys
from chaosgym.functional.sharding import replicated
from chaosgym.functional.trace_cache import cached_jit, keyed_by_arguments
from chaosgym.measured import MEASURED
from chaosgym.validation import UserError

# typical seconds of a cold compile on a 2-core CPU (chaosgym/measured.py), said while it runs
UPDATE_COMPILE_S = {"ChaosAnt-v0": MEASURED["compile_update_ant"].seconds, None: MEASURED["compile_update"].seconds}
EVALUATION_COMPILE_S = MEASURED["compile_evaluation"].seconds


def make_env(config: TrainConfig) -> chaosgym.Env:
    return chaosgym.make(config.task, **config.task_kwargs)


@functools.lru_cache(maxsize=None)
@keyed_by_arguments
def restart_program(env, num_envs: int, *, key):
    """`key -> reset_batch(env, key, num_envs)`: one compiled program per env and batch size, which
    every carried agent's init and updates share (apg and shac on the Ant both run 64 envs), instead
    of an MJX reset inside each agent's init and update program."""
    def restarts(key_):
        return reset_batch(env, key_, num_envs)

    return cached_jit(restarts, key)


@functools.lru_cache(maxsize=None)
@keyed_by_arguments
def carried_core(agent: Carried, env, settings, *, key) -> Core:
    """`agent` on `env` with its `settings`: its init and update jitted once per configuration, and
    the batches of fresh states they start and restart from drawn by `restart_program` (the same
    keys the agent's own functions draw them with, so the numbers are theirs). On MJX, a reset
    compiled apart can differ from one compiled inside the update in the last bits of the fields
    that the next step recomputes from the positions and velocities (`qacc`, constraint forces,
    geometry frames), never in those: on the Ant, apg's and shac's train states after three updates
    and their metrics equal those of the agent's own functions, but for those fields of the envs
    restarted in the last step of the first update (2026-12-05, `python experiments/restart_bits.py
    ChaosAnt-v0 apg shac`); the cart pole's are equal in every field (tests/test_apg_shac.py)."""
    step = agent.make_update(env, settings)
    restarts = restart_program(env, settings.num_envs)

    def init(key_, env_state):  # the programs are named as the agent's functions in JAX's logs
        state = agent.init(env, settings, key_, env_state)
        return agent.inference_params(state), state

    def update(params, state, key_, fresh):
        del params  # the state holds them
        state, metrics = step(state, key_, fresh)
        return agent.inference_params(state), state, metrics

    init_program, update_program = cached_jit(init, (key, "init")), cached_jit(update, (key, "update"))

    def core_init(key_):
        return init_program(key_, restarts(agent.init_env_key(key_)))

    def core_update(params, state, seed_key, index):
        key_ = jax.random.fold_in(seed_key, index)
        return update_program(params, state, key_, restarts(agent.update_env_key(key_)))

    core_init.program, core_update.program = init_program, update_program  # for inspection (their keys)
    return Core(core_init, core_update, agent.policy, agent.name)


def core_of(config: TrainConfig) -> Core:
    """The `Core` of `config`'s agent (an estimator or a carried agent) on its task."""
    spec, env = config.spec, make_env(config)
    if spec.kind == "estimator":
        return estimators.core(env, config.settings)
    if spec.kind == "carried":
        return carried_core(importlib.import_module(spec.module).carried(config.settings), env, config.settings)
    raise ValueError(f"{config.agent} is not trained by the gradient loop (kind {spec.kind})")


def skipped_updates(opt_state) -> int:
    return int(opt_state.total_notfinite)


def evaluate_params(config: TrainConfig, params, core: Core | None = None) -> dict[str, float]:
    """Mean return (`eval_score`; -inf if a policy action was non-finite) and reported objective."""
    core = core or core_of(config)
    evaluate = batched_evaluation(make_env(config), core.apply, core.name)
    score, objective = evaluate(params, held_out_keys(config.eval_seed, config.eval_episodes))
    return {"eval_score": float(score), "eval_objective": float(objective)}


def numpy_policy(config: TrainConfig, params, core: Core | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy policy for the Gymnasium evaluation protocol: obs -> deterministic action."""
    act = jax.jit((core or core_of(config)).apply)
    return lambda obs: np.asarray(act(params, jnp.asarray(obs, jnp.float32)))


# ---- checkpoints ------------------------------------------------------------------------------

PROGRESS = ("update", "env_steps", "wall_time", "compile_time")


def encode_checkpoint(config: TrainConfig, progress: dict) -> bytes:
    return checkpoints.encode({"params": progress["params"], "opt_state": progress["opt_state"]},
                              {**{k: progress.get(k, 0.0) for k in PROGRESS}, "config": config.identity()})


def decode_checkpoint(payload: bytes, config: TrainConfig, only: str | None = None) -> dict:
    """A checkpoint of `config`'s run, or a `CheckpointError` saying why it is not one. With
    `only="params"`, its policy parameters alone (and the progress counters): what acting needs."""
    meta = checkpoints.read_meta(payload)
    checkpoints.check_identity(meta.get("config"), config)
    core = core_of(config)
    make_env(config)  # built (and cached) outside the trace: its model is put on the device as it is built
    params, opt_state = jax.eval_shape(lambda: core.init(jax.random.key(0)))
    template = {"params": params, "opt_state": opt_state}
    tree, meta = checkpoints.decode(payload, template if only is None else template[only], only=only)
    return {**{k: meta[k] for k in PROGRESS}, **(tree if only is None else {only: tree})}


def decode_policy(payload: bytes, config: TrainConfig) -> dict:
    """A checkpoint's policy parameters (and progress counters) alone: what acting needs."""
    return decode_checkpoint(payload, config, only="params")


def load_checkpoint(folder: Path | str) -> dict:
    """The newest readable checkpoint of a gradient agent's run folder."""
    run = Run(folder)
    return run.load_checkpoint(lambda b: decode_checkpoint(b, run.config))


# ---- the loop ---------------------------------------------------------------------------------

def _start(run: Run, checkpoint: dict | None, config: TrainConfig, core: Core, announce: bool) -> dict:
    """Fresh progress (and a new run's files), or the checkpoint's (metrics.csv cut back to it)."""
    if checkpoint is not None:
        if checkpoint["update"] > config.updates:
            raise UserError(f"{run.folder} has run {checkpoint['update']} updates; a budget of {config.updates} "
                            "cannot undo them (give at least as many, or start a new run)")
        run.resume_at(lambda row: int(row["update"]) <= checkpoint["update"], counter="update")
        return checkpoint
    params, opt_state = replicated(core.init(jax.random.key(config.seed)))
    # row 0: the untrained policy, where every learning curve starts
    with announce_compile(f"the evaluation of {config.agent} on {config.task}", typical_s=EVALUATION_COMPILE_S,
                          enabled=announce):
        first = evaluate_params(config, params, core)
    run.start({"update": 0, "env_steps": 0, "wall_time": 0.0, "skipped_updates": 0, **first})
    return {"update": 0, "params": params, "opt_state": opt_state, "env_steps": 0, "wall_time": 0.0,
            "compile_time": 0.0}


class GradientTrainer:
    """The `chaosgym.agents.registry.Trainer` of an agent whose update is a JAX function (`core_of`):
    one loop trains it, checkpoints it and evaluates its policy."""

    def validate(self, config: TrainConfig) -> None:
        if config.spec.kind == "estimator":  # an unknown objective fails here, naming the task's
            make_env(config).task.objective(config.settings.estimator.objective)

    def train(self, config: TrainConfig, out: Path | str, *, resume: bool = False, progress: bool = True,
              time_budget: float | None = None, announce: bool | None = None,
              progress_fn: Callable[[int, dict], None] | None = None) -> dict:
        run, checkpoint = Run.open(out, config, resume, functools.partial(decode_checkpoint, config=config))
        with run:
            final = _train(run, config, core_of(config), checkpoint, progress, time_budget,
                           progress if announce is None else announce, progress_fn)
            last = run.evaluated_metrics()[-1]  # every run ends on an evaluation
        return {**final, **{k: float(last[k]) for k in ("eval_score", "eval_objective")}}

    def policy(self, run: Run) -> Callable:
        checkpoint = run.load_checkpoint(lambda b: decode_policy(b, run.config))
        return numpy_policy(run.config, checkpoint["params"])

    def jax_policy(self, run: Run) -> tuple[Callable, object]:
        """The run's deterministic policy as `(apply(params, obs), params)`, the function it was evaluated with."""
        checkpoint = run.load_checkpoint(lambda b: decode_policy(b, run.config))
        return core_of(run.config).apply, checkpoint["params"]


TRAINER = GradientTrainer()  # of every estimator and carried agent: the config names its algorithm


def _finished(progress: dict, config: TrainConfig, time_budget: float | None) -> bool:
    return progress["update"] >= config.updates or (time_budget is not None and progress["wall_time"] >= time_budget)


def _train(run: Run, config: TrainConfig, core: Core, checkpoint: dict | None, progress_bar: bool,
           time_budget: float | None, announce: bool, progress_fn: Callable[[int, dict], None] | None) -> dict:
    progress = _start(run, checkpoint, config, core, announce=announce)
    update = core.update
    seed_key = jax.random.key(config.seed)
    # placed where the update puts its outputs, so that every update runs one compiled program
    params, opt_state = replicated((progress["params"], progress["opt_state"]))
    if _finished(progress, config, time_budget):  # read back: nothing to compile, nothing to add
        return {**progress, "skipped_updates": skipped_updates(opt_state)}
    # compile outside the timed loop (a discarded call); wall_time counts training only
    start = time.perf_counter()
    typical = UPDATE_COMPILE_S.get(config.task, UPDATE_COMPILE_S[None])
    with announce_compile(f"the training update of {config.agent} on {config.task}", typical_s=typical,
                          enabled=announce):
        jax.block_until_ready(update(params, opt_state, seed_key, progress["update"]))
    progress["compile_time"] = progress.get("compile_time", 0.0) + time.perf_counter() - start
    bar = tqdm(total=config.updates, initial=progress["update"], disable=not progress_bar,
               desc=f"{config.agent} {config.task}", unit="update")
    rows = []
    steps_per_update = config.steps_per_update()
    next_eval_time = next_timed_evaluation(progress["wall_time"], time_budget)
    for index in range(progress["update"], config.updates):
        start = time.perf_counter()
        params, opt_state, diagnostics = update(params, opt_state, seed_key, index)
        diagnostics = {k: float(v) for k, v in jax.device_get(diagnostics).items()}
        progress["wall_time"] += time.perf_counter() - start
        progress["env_steps"] += steps_per_update
        progress.update(update=index + 1, params=params, opt_state=opt_state)
        row = {**diagnostics, "skipped_updates": skipped_updates(opt_state),
               **{k: progress[k] for k in ("update", "env_steps", "wall_time")}}
        out_of_time = time_budget is not None and progress["wall_time"] >= time_budget
        last = index + 1 == config.updates or out_of_time
        timed = progress["wall_time"] >= next_eval_time  # a tenth of the wall-clock budget has passed
        if (index + 1) % config.eval_every == 0 or last or timed:
            next_eval_time = next_timed_evaluation(progress["wall_time"], time_budget)
            row.update(evaluate_params(config, params, core))
            bar.set_postfix(loss=f"{diagnostics['loss']:.4g}", eval=f"{row['eval_score']:.4g}")
            if progress_fn is not None:
                progress_fn(progress["env_steps"], {k: v for k, v in row.items() if _is_number(v)})
        rows.append(row)
        if (index + 1) % config.checkpoint_every == 0 or last or timed:
            run.append_metrics(rows)
            rows = []
            run.save_checkpoint(encode_checkpoint(config, progress))
        bar.update()
        if out_of_time:
            break
    run.append_metrics(rows)
    bar.close()
    progress["skipped_updates"] = skipped_updates(progress["opt_state"])
    return progress


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) or (
        isinstance(value, float) and math.isinf(value))
