"""Training loop of the gradient-based agents: an estimator, an optax optimiser, one loop.

Each update draws a fresh batch of initial states, estimates the gradient of the rollout loss
(the config's objective, the return by default) with the chosen estimator, and applies the
optimiser: `optax.apply_if_finite(optax.chain(clip, clip_by_global_norm, adam))`. A non-finite
gradient, or one whose step would make the parameters non-finite, is skipped; the optimiser state
counts the skips (`skipped_updates`). Every key is `fold_in(seed, update)`, so a run interrupted
and resumed from its last checkpoint gives exactly the parameters of an uninterrupted run.

Evaluation (`chaosgym.evaluation.batched_evaluation`) runs the deterministic policy for whole
episodes from the held-out initial states of the Gymnasium evaluation protocol, so the scores
equal that protocol's.

The loop drives any agent whose update is a pure JAX function of `(params, opt_state)`: a `Core`.
`ESTIMATOR` is the trainer of the estimator agents (full, truncated, modified, stopped, combined,
es); `carried_trainer` makes that of an agent whose envs carry their trajectories from update to
update (apg, shac, ahac) from its module's functions. `train` trains any agent of
`chaosgym.agents.AGENTS`, SB3's included, through its trainer.
"""

from __future__ import annotations

import functools
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import chaosgym
from chaosgym.agents import config as config_module
from chaosgym.agents import optimizer
from chaosgym.agents.announce import announce_compile
from chaosgym.agents.commands import train_check
from chaosgym.agents.config import TrainConfig, for_task
from chaosgym.agents.registry import AGENTS
from chaosgym.agents.run import CheckpointError, Run, next_timed_evaluation
from chaosgym.evaluation import batched_evaluation, held_out_keys
from chaosgym.functional.gradients import EstimatorConfig, make_estimator
from chaosgym.functional.policies import policy_functions
from chaosgym.functional.sharding import replicated
from chaosgym.functional.trace_cache import cached_jit, keyed_by_arguments

__all__ = ["TrainConfig", "train", "evaluate_params", "load_checkpoint", "numpy_policy", "Core", "Carried",
           "GradientTrainer", "ESTIMATOR", "carried_trainer"]

# typical seconds of a cold compile on a 2-core CPU (DESIGN.md's measurements), said while it runs
UPDATE_COMPILE_S = {"ChaosAnt-v0": 200.0, None: 60.0}
EVALUATION_COMPILE_S = 30.0


def make_env(config: TrainConfig) -> chaosgym.Env:
    return chaosgym.make(config.task, **config.task_kwargs)


@functools.lru_cache(maxsize=None)
def policy_of(env: chaosgym.Env, name: str):
    """`(init, apply)` of a policy kind on `env`; one `apply` per pair, so compiles are shared."""
    return policy_functions(name, env.task)


def make_optimizer(estimator: EstimatorConfig, learning_rate: float) -> optax.GradientTransformation:
    """Adam after the estimator's clipping (`chaosgym.agents.optimizer`); a step with a non-finite
    gradient is skipped and counted (`skipped_updates`)."""
    return optimizer.make_optimizer(learning_rate, clip_value=estimator.clip_value, clip_norm=estimator.clip_norm)


def skipped_updates(opt_state) -> int:
    return int(opt_state.total_notfinite)


@functools.lru_cache(maxsize=None)
@keyed_by_arguments
def compiled_update(env, estimator: EstimatorConfig, batch_size: int, learning_rate: float, policy: str = "tanh",
                    *, key):
    """`(optimizer, update)`: one jitted update, shared by every seed of a configuration."""
    apply = policy_of(env, policy)[1]
    estimate = make_estimator(env, apply, estimator)  # the raw gradient: the optimiser clips it
    optimizer = make_optimizer(estimator, learning_rate)

    def update(params, opt_state, seed_key, index):
        key_states, key_estimate = jax.random.split(jax.random.fold_in(seed_key, index))
        states = jax.vmap(env.reset)(jax.random.split(key_states, batch_size))
        grad, diagnostics = estimate(params, states, key_estimate)
        # a step that would make the parameters non-finite is skipped as a non-finite gradient is
        step, _ = optimizer.update(grad, opt_state, params)
        lands_finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(p)) for p in
                                          jax.tree.leaves(optax.apply_updates(params, step))]))
        grad = jax.tree.map(lambda g: jnp.where(lands_finite, g, jnp.nan), grad)
        step, opt_state = optimizer.update(grad, opt_state, params)
        return optax.apply_updates(params, step), opt_state, diagnostics

    return optimizer, cached_jit(update, key)


class Core(NamedTuple):
    """An agent's update in the form the loop drives, for one config: pure functions, jitted."""

    init: Callable  # key -> (params, opt_state)
    update: Callable  # (params, opt_state, seed_key, index) -> (params, opt_state, diagnostics)
    apply: Callable  # (params, obs) -> action: the deterministic policy that is evaluated
    name: str  # what the policy's compiled evaluation goes by


def estimator_core(config: TrainConfig) -> Core:
    """An estimator agent: the policy network of `config.policy`, its gradient by `config.estimator`."""
    env = make_env(config)
    init_policy, apply = policy_of(env, config.policy)
    optimizer_, update = compiled_update(env, config.estimator, config.batch_size, config.learning_rate,
                                         config.policy)

    def init(key):
        params = init_policy(key, env.observation_size, env.action_size, config.hidden)
        return params, optimizer_.init(params)

    return Core(init, update, apply, config.policy)


class Carried(NamedTuple):
    """An agent whose envs each carry one long trajectory from update to update (apg, shac, ahac):
    the functions of its module. `params` are what `policy` evaluates, `opt_state` its whole state."""

    make_config: Callable  # (num_envs, window, learning_rate, hidden) -> the agent's own config
    init: Callable  # (env, agent config, key) -> train state
    make_update: Callable  # (env, agent config) -> pure (train state, key) -> (train state, metrics)
    inference_params: Callable  # train state -> what `policy` evaluates
    policy: Callable  # (params, obs) -> action

    @property
    def cache_key(self) -> str:
        """What tells this agent's compiled programs apart (`chaosgym.functional.trace_cache.argument_key`)."""
        return self.make_config.__module__


@functools.lru_cache(maxsize=None)
@keyed_by_arguments
def carried_core(agent: Carried, env, batch_size: int, horizon: int, learning_rate: float, hidden: tuple,
                 *, key) -> Core:
    """`agent` on `env` with batch_size envs, windows of horizon steps; its init and update jitted once
    per configuration, then read back from the trace cache (warm starts skip tracing)."""
    config = agent.make_config(batch_size, horizon, learning_rate, hidden)
    update = agent.make_update(env, config)

    def init(key_):
        state = agent.init(env, config, key_)
        return agent.inference_params(state), state

    def update_(params, state, seed_key, index):
        del params  # the state holds them
        state, metrics = update(state, jax.random.fold_in(seed_key, index))
        return agent.inference_params(state), state, metrics

    return Core(cached_jit(init, (key, "init")), cached_jit(update_, (key, "update")), agent.policy,
                agent.cache_key)


def evaluate_params(config: TrainConfig, params) -> dict[str, float]:
    """Mean return (`eval_score`; -inf if a policy action was non-finite) and reported objective."""
    core = config.spec.load().core(config)
    evaluate = batched_evaluation(make_env(config), core.apply, core.name)
    score, objective = evaluate(params, held_out_keys(config.eval_seed, config.eval_episodes))
    return {"eval_score": float(score), "eval_objective": float(objective)}


def numpy_policy(config: TrainConfig, params):
    """A numpy policy for the Gymnasium evaluation protocol: obs -> deterministic action."""
    act = jax.jit(config.spec.load().core(config).apply)
    return lambda obs: np.asarray(act(params, jnp.asarray(obs, jnp.float32)))


# ---- checkpoints ------------------------------------------------------------------------------

def encode_checkpoint(config: TrainConfig, progress: dict) -> bytes:
    return pickle.dumps({**jax.device_get(progress), "config": config.identity()})


def decode_checkpoint(payload: bytes, config: TrainConfig) -> dict:
    """A checkpoint of `config`'s run, or a `CheckpointError` saying why it is not one."""
    checkpoint = pickle.loads(payload)
    if not isinstance(checkpoint, dict) or not {"config", "params", "update"} <= set(checkpoint):
        raise CheckpointError("not a chaosgym training checkpoint")
    if checkpoint["config"] != config.identity():
        differ = sorted(k for k, v in config.identity().items() if checkpoint["config"].get(k) != v)
        raise CheckpointError(f"it is a checkpoint of another config (differs in {differ})")
    core = config.spec.load().core(config)
    expected = jax.eval_shape(lambda: core.init(jax.random.key(0))[0])
    if jax.tree.map(np.shape, expected) != jax.tree.map(np.shape, checkpoint["params"]):
        raise CheckpointError("its parameters do not have the shapes of this config's policy")
    return checkpoint


def load_checkpoint(folder: Path | str) -> dict:
    """The newest readable checkpoint of a gradient agent's run folder."""
    run = Run(folder)
    return run.load_checkpoint(lambda b: decode_checkpoint(b, run.config))


# ---- the loop ---------------------------------------------------------------------------------

def _start(run: Run, checkpoint: dict | None, config: TrainConfig, core: Core, announce: bool) -> dict:
    """Fresh progress (and a new run's files), or the checkpoint's (metrics.csv cut back to it)."""
    if checkpoint is not None:
        run.resume_at(lambda row: int(row["update"]) <= checkpoint["update"])
        return checkpoint
    params, opt_state = replicated(core.init(jax.random.key(config.seed)))
    # row 0: the untrained policy, where every learning curve starts
    with announce_compile(f"the evaluation of {config.agent} on {config.task}", typical_s=EVALUATION_COMPILE_S,
                          enabled=announce):
        first = evaluate_params(config, params)
    run.start({"update": 0, "env_steps": 0, "wall_time": 0.0, "skipped_updates": 0, **first})
    return {"update": 0, "params": params, "opt_state": opt_state, "env_steps": 0,
            "wall_time": 0.0}


class GradientTrainer:
    """The `chaosgym.agents.registry.Trainer` of an agent whose update is a JAX function: `core`
    gives it for a config; one loop trains it, checkpoints it and evaluates its policy."""

    def __init__(self, core: Callable[[TrainConfig], Core]):
        self.core = core

    def validate(self, config: TrainConfig) -> None:
        make_env(config).task.objective(config.estimator.objective)  # an unknown objective fails here

    def flag_changes(self, changes: dict[str, Any]) -> dict[str, Any]:
        return changes

    def train(self, config: TrainConfig, out: Path | str, *, resume: bool = False, progress: bool = True,
              time_budget: float | None = None, announce: bool | None = None) -> dict:
        run, checkpoint = Run.open(out, config, resume, functools.partial(decode_checkpoint, config=config))
        with run:
            final = _train(run, config, self.core(config), checkpoint, progress, time_budget,
                           progress if announce is None else announce)
            last = run.evaluated_metrics()[-1]  # every run ends on an evaluation
        return {**final, **{k: float(last[k]) for k in ("eval_score", "eval_objective")}}

    def policy(self, run: Run) -> Callable:
        checkpoint = run.load_checkpoint(lambda b: decode_checkpoint(b, run.config))
        return numpy_policy(run.config, checkpoint["params"])


ESTIMATOR = GradientTrainer(estimator_core)


def carried_trainer(agent: Carried) -> GradientTrainer:
    """The trainer of a carried-state agent: `batch_size` envs, windows of `estimator.horizon` steps,
    actor (and critic) at `learning_rate`, the policy's `hidden` layers."""
    return GradientTrainer(lambda config: carried_core(agent, make_env(config), config.batch_size,
                                                       config.estimator.horizon, config.learning_rate,
                                                       config.hidden))


def train(config: TrainConfig, out: Path | str, resume: bool = False, progress: bool = True,
          time_budget: float | None = None, announce: bool | None = None) -> dict:
    """Train `config`'s agent (any of `chaosgym.agents.AGENTS`) into the run folder `out`; return the
    final progress, with the last evaluation's `eval_score` and `eval_objective`.

    The budget is `config.updates` updates (SB3: `config.env_steps` env steps) in total, resumed
    ones included. With `resume`, a run in `out` continues from its newest readable checkpoint (a
    larger budget extends a finished run); without, `out` must be new or empty. With a
    `time_budget` (seconds of training wall-clock), training also stops once that much time is
    spent, and evaluates every tenth of it besides every `eval_every` updates. Long compiles are
    announced (`announce`; by default when the progress bar is shown: `compare` announces under its
    own bar).
    """
    return config.spec.load().train(config, out, resume=resume, progress=progress, time_budget=time_budget,
                                    announce=announce)


def _train(run: Run, config: TrainConfig, core: Core, checkpoint: dict | None, progress_bar: bool,
           time_budget: float | None, announce: bool) -> dict:
    progress = _start(run, checkpoint, config, core, announce=announce)
    update = core.update
    seed_key = jax.random.key(config.seed)
    # placed where the update puts its outputs, so that every update runs one compiled program
    params, opt_state = replicated((progress["params"], progress["opt_state"]))
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
    next_eval_time = next_timed_evaluation(progress["wall_time"], time_budget)
    for index in range(progress["update"], config.updates):
        if time_budget is not None and progress["wall_time"] >= time_budget:
            break  # a finished wall-clock run, opened again: nothing left to train
        start = time.perf_counter()
        params, opt_state, diagnostics = update(params, opt_state, seed_key, index)
        diagnostics = {k: float(v) for k, v in jax.device_get(diagnostics).items()}
        progress["wall_time"] += time.perf_counter() - start
        progress["env_steps"] += config.steps_per_update()
        progress.update(update=index + 1, params=params, opt_state=opt_state)
        row = {**diagnostics, "skipped_updates": skipped_updates(opt_state),
               **{k: progress[k] for k in ("update", "env_steps", "wall_time")}}
        out_of_time = time_budget is not None and progress["wall_time"] >= time_budget
        last = index + 1 == config.updates or out_of_time
        timed = progress["wall_time"] >= next_eval_time  # a tenth of the wall-clock budget has passed
        if (index + 1) % config.eval_every == 0 or last or timed:
            next_eval_time = next_timed_evaluation(progress["wall_time"], time_budget)
            row.update(evaluate_params(config, params))
            bar.set_postfix(loss=f"{diagnostics['loss']:.4g}", eval=f"{row['eval_score']:.4g}")
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


# ---- the `chaosgym train` command -------------------------------------------------------------

def config_from_args(args) -> TrainConfig:
    changes = train_check(args)  # what the CLI checked already, before importing this module
    task, agent = changes.pop("task"), changes.pop("agent")
    chaosgym.make(task, **changes.get("task_kwargs", {}))  # unknown or invalid options fail here, clearly
    trainer = AGENTS[agent].load()
    config = _config(args, task, agent, trainer.flag_changes(changes))
    trainer.validate(config)  # refuses a setting the agent would reject or misread
    check_fits(config)
    return config


@functools.lru_cache(maxsize=None)
def state_bytes(env: chaosgym.Env) -> int:
    """Bytes of one env state (traced once per env: compare checks every run of a task against it)."""
    state = jax.eval_shape(env.reset, jax.random.key(0))
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))


def check_fits(config: TrainConfig) -> None:
    """Refuse a run whose sizes need more memory than this machine has (`config.check_memory`)."""
    env = make_env(config)
    config_module.check_memory(config, env.observation_size, env.action_size, state_bytes(env))


def _config(args, task: str, agent: str, changes: dict) -> TrainConfig:
    saved = Run(args.out).config if args.resume and (Path(args.out) / "config.json").exists() else None
    if saved is not None:  # a resumed run keeps its settings; the flags given change them
        if (saved.task, saved.agent) != (task, agent):
            raise ValueError(f"cannot resume {args.out}: it is a run of {saved.agent} on {saved.task}")
        if "env_steps" in changes and "updates" not in changes and saved.spec.budget == "updates":
            changes["updates"] = max(1, changes["env_steps"] // saved.steps_per_update())
        return config_module.with_changes(saved, changes)
    return for_task(task, agent, **changes)


def run(args) -> int:
    config = config_from_args(args)
    final = train(config, args.out, resume=args.resume, progress=not args.no_progress)
    updates = f"{final['update']} updates, " if "update" in final else ""
    skipped = f", skipped {final['skipped_updates']}" if "skipped_updates" in final else ""
    print(f"{config.agent} on {config.task}: {updates}{final['env_steps']:,} env steps, held-out score "
          f"{final['eval_score']:.4g}, objective {final['eval_objective']:.4g}{skipped}; results in {args.out}")
    return 0
