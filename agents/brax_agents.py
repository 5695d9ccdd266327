"""Brax's own PPO and APG as chaosgym agents: `brax-ppo` and `brax-apg`.

Brax's `train` functions (brax 0.14.2: `brax.training.agents.ppo.train.train`,
`brax.training.agents.apg.train.train`) run unchanged on the task as a Brax environment
(`chaosgym.brax.BraxEnv`), wrapped by Brax's own training wrappers, with the task's time limit as
`episode_length` and the settings of `chaosgym.agents.brax_config` (Brax's keyword names).

* Evaluation: at each of Brax's evaluation points (`num_evals`: by default the untrained policy,
  then every tenth of the budget) the deterministic policy, `make_policy(params, deterministic=True)`,
  is scored on chaosgym's protocol, all episodes batched (`chaosgym.evaluation.batched_evaluation`:
  the held-out initial states of `chaosgym.evaluation.evaluate`). Brax's own evaluator does not run.
  PPO hands its parameters over through `policy_params_fn`; APG's `train` has no such callback (its
  `progress_fn` gets metrics only), so for the call its `Evaluator`, the one place it passes the
  parameters out, is replaced by one that scores them on chaosgym's protocol instead (`_apg_evaluator`).
* metrics.csv: one row per evaluation point. `update` counts Brax's training steps (PPO: a batch of
  experience and its `num_updates_per_batch` x `num_minibatches` SGD steps) or policy updates
  (APG); `loss` is PPO's total loss and `grad_norm` APG's gradient norm, both averaged over the
  interval; `skipped_updates` stays empty (Brax skips none).
* Budget: `env_steps`, split into `num_evals - 1` equal intervals of whole training steps (PPO) or
  updates (APG), rounded up as Brax's `train` rounds; the rows give the steps actually taken. A time
  budget (seconds of `wall_time`) is checked at the evaluation points, the only places Brax's `train`
  hands control back: training stops at the first one past it.
* `wall_time` counts training only: the time between evaluation points less every compile (JAX's
  compile events, `jax.monitoring`), which make `compile_time`; evaluations are left out of both.
* Checkpoints, at every evaluation point: weights only. The parameters (the observation
  normaliser's statistics, the policy, PPO's value network) as arrays in an `.npz` with a JSON
  header, read back with `allow_pickle=False` against the shapes of the config's networks; never
  pickle. Brax's `train` neither returns nor accepts its optimiser state, environment states or keys.
* Resume: brax-ppo continues from the checkpoint's parameters through Brax's `restore_params`
  (normaliser, policy, value network); Adam's moments, the environments and the random keys start
  afresh, so a resumed run is not the uninterrupted one. brax-apg cannot resume (`apg.train` takes
  no parameters to start from): a resumed run restarts from scratch in the same folder, with a warning.

`train_brax` is the whole trainer; `BraxTrainer` at the bottom is its glue to chaosgym's run config
and run folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from chaosgym.brax import BraxEnv  # first: its error says how to install Brax
from brax.training import acting  # noqa: E402
from brax.training.acme import running_statistics, specs  # noqa: E402
from brax.training.agents.apg import networks as apg_networks  # noqa: E402
from brax.training.agents.apg import train as apg_train  # noqa: E402
from brax.training.agents.ppo import networks as ppo_networks  # noqa: E402
from brax.training.agents.ppo import train as ppo_train  # noqa: E402

from chaosgym.agents.announce import announce_compile  # noqa: E402
from chaosgym.agents.brax_config import BRAX_SETTINGS, BraxAPGConfig, BraxPPOConfig  # noqa: E402
from chaosgym.agents.run import CheckpointError, Run, RunFolder  # noqa: E402
from chaosgym.evaluation import batched_evaluation, held_out_keys  # noqa: E402
from chaosgym.functional.trace_cache import UNCACHED  # noqa: E402
from chaosgym.measured import MEASURED  # noqa: E402
from chaosgym.validation import InvalidSetting, UserError  # noqa: E402

CHECKPOINT_FORMAT = "chaosgym-brax-checkpoint-1"
HEADER = "header.json"  # the checkpoint's JSON, beside the parameter arrays
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
# typical seconds of a cold compile on a 2-core CPU (measured on the 1-pole cart pole; chaosgym/measured.py),
# said while it runs
SETUP_COMPILE_S, TRAINING_COMPILE_S, EVALUATION_COMPILE_S = (
    MEASURED[f"compile_brax_{part}"].seconds for part in ("setup", "training", "evaluation"))


@dataclasses.dataclass(frozen=True)
class BraxRun:
    """One run of a Brax agent: the task, the agent, its settings, the budget and the evaluation."""

    task: str
    task_kwargs: dict
    agent: str  # "brax-ppo" or "brax-apg"
    seed: int
    env_steps: int
    settings: BraxPPOConfig | BraxAPGConfig
    eval_episodes: int
    eval_seed: int

    def __post_init__(self):
        if self.agent not in BRAX_SETTINGS:
            raise UserError(f"unknown Brax agent {self.agent!r}; valid: {', '.join(BRAX_SETTINGS)}")
        expected = BRAX_SETTINGS[self.agent]
        if not isinstance(self.settings, expected):
            raise UserError(f"{self.agent} takes {expected.__name__}, got {type(self.settings).__name__}")
        least = self.steps_per_update * (self.settings.num_evals - 1)
        if isinstance(self.env_steps, bool) or not isinstance(self.env_steps, int) or self.env_steps < least:
            raise InvalidSetting("env_steps", (
                f"must be an integer >= {least:,} for {self.agent} with these settings (one "
                f"{'training step' if self.ppo else 'update'} of {self.steps_per_update:,} env steps for each of "
                f"num_evals - 1 = {self.settings.num_evals - 1} intervals), got {self.env_steps!r}"))

    @property
    def ppo(self) -> bool:
        return isinstance(self.settings, BraxPPOConfig)

    @property
    def steps_per_update(self) -> int:
        """Env steps of one of Brax's training steps (PPO) or policy updates (APG)."""
        return self.settings.env_steps_per_training_step if self.ppo else self.settings.env_steps_per_update

    @property
    def interval(self) -> tuple[int, int]:
        """`(env steps, updates)` between two evaluation points: the budget over `num_evals - 1`,
        in whole updates, rounded up."""
        updates = math.ceil(self.env_steps / ((self.settings.num_evals - 1) * self.steps_per_update))
        return updates * self.steps_per_update, updates

    def identity(self) -> dict:
        """What a checkpoint must agree with to continue this run: everything but the budget."""
        identity = {"task": self.task, "task_kwargs": self.task_kwargs, "agent": self.agent, "seed": self.seed,
                    "settings": self.settings.to_json(), "eval_episodes": self.eval_episodes,
                    "eval_seed": self.eval_seed}
        return json.loads(json.dumps(identity))  # as a checkpoint's header gives it back (tuples as lists)


class RunWriter(Protocol):
    """Where a run's rows and checkpoints go (`chaosgym.agents.run.RunFolder` is one)."""

    folder: Path

    def start(self, first_row: dict) -> None: ...
    def resume_at(self, keep: Callable[[dict], bool]) -> None: ...
    def append_metrics(self, rows: list[dict]) -> None: ...
    def save_checkpoint(self, payload: bytes) -> None: ...


# ---- Brax's networks and policy ---------------------------------------------------------------

def network_factory(run: BraxRun) -> Callable:
    """Brax's network factory with the run's layer sizes (the rest Brax's defaults)."""
    if run.ppo:
        return functools.partial(ppo_networks.make_ppo_networks,
                                 policy_hidden_layer_sizes=run.settings.policy_hidden_layer_sizes,
                                 value_hidden_layer_sizes=run.settings.value_hidden_layer_sizes)
    return functools.partial(apg_networks.make_apg_networks, hidden_layer_sizes=run.settings.hidden_layer_sizes)


def make_policy_fn(run: BraxRun, env: BraxEnv) -> tuple[Callable, tuple]:
    """`(make_policy, params template)` as Brax's `train` builds them for `run` on `env`."""
    normalize = running_statistics.normalize if run.settings.normalize_observations else lambda x, y: x
    # PPO gives its factory the observation's shape, APG its size
    size = (env.observation_size,) if run.ppo else env.observation_size
    networks = network_factory(run)(size, env.action_size, preprocess_observations_fn=normalize)
    module = ppo_networks if run.ppo else apg_networks
    nets = (networks.policy_network, networks.value_network) if run.ppo else (networks.policy_network,)

    def params():  # (normaliser statistics, policy[, value network]), as Brax's train hands them out
        normalizer = running_statistics.init_state(specs.Array((env.observation_size,), jnp.dtype("float32")))
        return (normalizer, *(net.init(jax.random.PRNGKey(0)) for net in nets))

    return module.make_inference_fn(networks), jax.eval_shape(params)


class DeterministicPolicy:
    """`policy(params, obs) -> action` of one observation: Brax's `make_policy(params, deterministic=True)`
    (the mode of its tanh-normal), in the form `chaosgym.evaluation.batched_evaluation` takes."""

    cache_key = UNCACHED  # Brax's networks are not chaosgym's code: their programs are never stored

    def __init__(self, make_policy: Callable):
        self.make_policy = make_policy

    def __call__(self, params, obs: jax.Array) -> jax.Array:
        return self.make_policy(params, deterministic=True)(obs, jax.random.PRNGKey(0))[0]  # the key is unused


class NetworkPolicy(DeterministicPolicy):
    """`DeterministicPolicy` of the policy network's parameters alone, the observation normaliser's
    running statistics held fixed (closed over): what `chaosgym diagnose` differentiates. Brax's
    statistics hold an integer counter (`brax.training.types.UInt64`), which no gradient can pass
    through, and normalising an observation is not what the policy learns."""

    def __init__(self, make_policy: Callable, normalizer):
        super().__init__(make_policy)
        self.normalizer = normalizer

    def __call__(self, params, obs: jax.Array) -> jax.Array:
        return super().__call__((self.normalizer, params), obs)


def numpy_policy(make_policy: Callable, params) -> Callable[[np.ndarray], np.ndarray]:
    act = jax.jit(DeterministicPolicy(make_policy))
    return lambda obs: np.asarray(act(params, jnp.asarray(obs, jnp.float32)))


# ---- checkpoints: arrays and JSON ----------------------------------------------------------------

def encode_checkpoint(run: BraxRun, params, progress: dict) -> bytes:
    """The parameters as named arrays in an .npz, and a JSON header: the format, the run's
    identity and `progress` (env_steps, update, wall_time, compile_time, eval_score, eval_objective)."""
    arrays = {jax.tree_util.keystr(path, simple=True, separator="/"): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    header = {"format": CHECKPOINT_FORMAT, "identity": run.identity(), "progress": progress}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{HEADER: np.array(json.dumps(header))})
    return buffer.getvalue()


def decode_checkpoint(payload: bytes, run: BraxRun, template) -> tuple[Any, dict]:
    """`(params, progress)` of a checkpoint of `run`, its arrays filling `template` (`make_policy_fn`'s)
    path for path, shape for shape, dtype for dtype; or a `CheckpointError` saying why it is not one."""
    try:
        npz = np.load(io.BytesIO(payload), allow_pickle=False)
        arrays = {name: npz[name] for name in npz.files}
        header = json.loads(str(arrays.pop(HEADER)))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise CheckpointError(f"not a chaosgym Brax checkpoint ({type(error).__name__}: {error})") from None
    if header.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a chaosgym Brax checkpoint (format {header.get('format')!r})")
    if header["identity"] != run.identity():
        differ = sorted(k for k, v in run.identity().items() if header["identity"].get(k) != v)
        raise CheckpointError(f"it is a checkpoint of another run (differs in {differ})")
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, like in paths:
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        if name not in arrays:
            raise CheckpointError(f"it lacks the parameter {name} of this run's networks")
        value = arrays.pop(name)
        if (value.shape, value.dtype) != (like.shape, like.dtype):
            raise CheckpointError(f"its parameter {name} is {value.dtype}{list(value.shape)}, this run's networks "
                                  f"need {like.dtype}{list(like.shape)}")
        leaves.append(value)
    if arrays:
        raise CheckpointError(f"it holds parameters this run's networks lack: {', '.join(sorted(arrays)[:5])}")
    return jax.tree_util.tree_unflatten(treedef, leaves), header["progress"]


# ---- time: training apart from compiling and evaluating -----------------------------------------------

class Clock:
    """Seconds of training and of compiling. Training time runs between evaluation points (outside
    `paused`), less the compiles in it; compiles are JAX's compile events (tracing, lowering, XLA),
    merged where they nest, counted unless they happen while paused (the evaluation's own)."""

    def __init__(self, wall_time: float = 0.0, compile_time: float = 0.0):
        self.wall_time, self.compile_time = wall_time, compile_time
        self._spans: list[tuple[float, float]] = []
        self._paused, self._running_since = False, None

    def __enter__(self) -> Clock:
        jax.monitoring.register_event_time_span_listener(self._on_event)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_time_span_listener(self._on_event)
        self._spans, self.compile_time = [], self.compile_time + self._merged(-math.inf, math.inf)

    def _on_event(self, event: str, start: float, end: float, **kwargs) -> None:
        if event in COMPILE_EVENTS and not self._paused:
            self._spans.append((start, end))

    def _merged(self, low: float, high: float) -> float:
        """Seconds within [low, high] covered by compile spans (nested ones counted once)."""
        total, reach = 0.0, low
        for start, end in sorted(self._spans):
            start, end = max(start, reach), min(end, high)
            if end > start:
                total, reach = total + end - start, end
        return total

    def start_training(self) -> None:
        """From now on, time outside `paused` is training (before: setting up)."""
        self._running_since = time.time()

    @contextlib.contextmanager
    def paused(self):
        now = time.time()
        if self._running_since is not None:
            self.wall_time += now - self._running_since - self._merged(self._running_since, now)
        self._paused = True
        try:
            yield
        finally:
            self._paused = False
            if self._running_since is not None:
                self._running_since = time.time()

    @property
    def total_compile_time(self) -> float:
        return self.compile_time + self._merged(-math.inf, math.inf)


# ---- the trainer ----------------------------------------------------------------------------------------

class OutOfTime(Exception):
    """Raised from Brax's callback to end its training loop when the time budget is spent."""


class Recorder:
    """What happens at each of Brax's evaluation points: chaosgym's evaluation, a metrics row, a
    checkpoint, the progress bar; `first` for the untrained policy, `point` for the others."""

    def __init__(self, run: BraxRun, env: BraxEnv, writer: RunWriter, start: dict | None, clock: Clock,
                 time_budget: float | None, bar, announce: bool,
                 progress_fn: Callable[[int, dict], None] | None = None):
        self.run, self.env, self.writer, self.clock, self.bar = run, env, writer, clock, bar
        self.progress_fn = progress_fn
        self.time_budget = time_budget
        self.progress = dict(start or {"env_steps": 0, "update": 0})
        self.base = dict(self.progress)  # where this call of Brax's train starts counting from
        self.evaluation, self.announcing, self.announce = None, contextlib.ExitStack(), announce
        self._say(f"Brax's setup of {run.agent} on {run.task}", SETUP_COMPILE_S)

    def _say(self, what: str, typical_s: float) -> None:
        """Announce a compile that runs until the next call (`chaosgym.agents.announce`)."""
        self.announcing.close()
        self.announcing.enter_context(announce_compile(what, typical_s=typical_s, enabled=self.announce))

    def evaluate(self, make_policy: Callable, params) -> dict:
        if self.evaluation is None:  # one compiled evaluation per run
            self.evaluation = batched_evaluation(self.env.env, DeterministicPolicy(make_policy), self.run.agent)
        with announce_compile(f"the evaluation of {self.run.agent} on {self.run.task}", EVALUATION_COMPILE_S,
                              enabled=self.announce):
            # on the host: Brax's parameters before and after training differ in placement and weak types,
            # each of which would compile the evaluation again
            score, objective = self.evaluation(jax.device_get(params),
                                               held_out_keys(self.run.eval_seed, self.run.eval_episodes))
        return {"eval_score": float(score), "eval_objective": float(objective)}

    def first(self, make_policy: Callable, params) -> None:
        """The untrained policy's row and checkpoint; training starts after it."""
        self.announcing.close()
        self._finish({"update": 0, "env_steps": 0, "wall_time": 0.0, **self.evaluate(make_policy, params)}, params,
                     first=True)
        self.begin_training()

    def begin_training(self) -> None:
        """Training starts now (a resumed run: from its checkpoint's parameters, recorded already)."""
        self.clock.start_training()
        self._say(f"the training step of {self.run.agent} on {self.run.task}", TRAINING_COMPILE_S)

    def point(self, updates: int, env_steps: int, make_policy: Callable, params, training: dict) -> None:
        """An evaluation point `updates` and `env_steps` into this call of Brax's train."""
        self.announcing.close()
        row = {"update": self.base["update"] + updates, "env_steps": self.base["env_steps"] + env_steps,
               "wall_time": self.clock.wall_time, **training, **self.evaluate(make_policy, params)}
        self._finish(row, params)
        if self.time_budget is not None and self.clock.wall_time >= self.time_budget:
            raise OutOfTime

    def _finish(self, row: dict, params, first: bool = False) -> None:
        if first:
            self.writer.start(row)
        else:
            self.writer.append_metrics([row])
        self.progress = {**{k: row[k] for k in ("update", "env_steps", "wall_time", "eval_score", "eval_objective")},
                         "compile_time": self.clock.total_compile_time}
        self.writer.save_checkpoint(encode_checkpoint(self.run, params, self.progress))
        self.bar.update(row["env_steps"] - self.bar.n)
        self.bar.set_postfix(eval=f"{row['eval_score']:.4g}")
        if self.progress_fn is not None:
            self.progress_fn(row["env_steps"], {k: v for k, v in row.items() if isinstance(v, (int, float))})


def _train_ppo(run: BraxRun, env: BraxEnv, recorder: Recorder, intervals: int, restore) -> None:
    steps, _ = run.interval
    resumed = restore is not None
    pending = {}

    def policy_params_fn(current_step: int, make_policy: Callable, params) -> None:
        with recorder.clock.paused():
            if current_step == 0 and resumed:  # its starting point is its checkpoint's, recorded already
                recorder.begin_training()
            elif current_step == 0:
                recorder.first(make_policy, params)
            else:  # the row is written by progress_fn, which follows with the training metrics
                pending.update(make_policy=make_policy, params=params)

    def progress_fn(current_step: int, metrics: dict) -> None:
        with recorder.clock.paused():
            recorder.point(current_step // run.steps_per_update, current_step, pending["make_policy"],
                           pending["params"], {"loss": float(metrics["training/total_loss"])})

    settings = {k: v for k, v in dataclasses.asdict(run.settings).items()
                if k not in ("policy_hidden_layer_sizes", "value_hidden_layer_sizes", "num_evals")}
    ppo_train.train(environment=env, num_timesteps=intervals * steps, num_evals=intervals + 1,
                    episode_length=env.episode_length, seed=run.seed, network_factory=network_factory(run),
                    run_evals=False, policy_params_fn=policy_params_fn, progress_fn=progress_fn,
                    restore_params=restore, **settings)


@contextlib.contextmanager
def _apg_evaluator(recorder: Recorder, run: BraxRun):
    """`apg.train` with its `acting.Evaluator` replaced by chaosgym's evaluation (see the module)."""
    steps, updates = run.interval

    class Evaluator:
        def __init__(self, eval_env, eval_policy_fn, num_eval_envs, episode_length, action_repeat, key):
            self.make_policy = eval_policy_fn.func  # functools.partial(make_policy, deterministic=...)
            self.points = 0

        def run_evaluation(self, policy_params, training_metrics: dict, aggregate_episodes: bool = True) -> dict:
            with recorder.clock.paused():
                if self.points == 0:
                    recorder.first(self.make_policy, policy_params)
                else:
                    recorder.point(self.points * updates, self.points * steps, self.make_policy, policy_params,
                                   {"grad_norm": float(training_metrics["training/grad_norm"])})
                self.points += 1
            return training_metrics

    class Acting:  # brax.training.acting as apg.train sees it, but for its Evaluator
        def __getattr__(self, name):
            return Evaluator if name == "Evaluator" else getattr(acting, name)

    original = apg_train.acting
    apg_train.acting = Acting()
    try:
        yield
    finally:
        apg_train.acting = original


def _train_apg(run: BraxRun, env: BraxEnv, recorder: Recorder, intervals: int) -> None:
    _, updates = run.interval
    settings = {k: v for k, v in dataclasses.asdict(run.settings).items()
                if k not in ("hidden_layer_sizes", "num_evals")}
    with _apg_evaluator(recorder, run):
        apg_train.train(environment=env, episode_length=env.episode_length, policy_updates=intervals * updates,
                        num_evals=intervals + 1, seed=run.seed, network_factory=network_factory(run), **settings)


def train_brax(run: BraxRun, writer: RunWriter, checkpoint: tuple[Any, dict] | None = None, *,
               progress: bool = True, time_budget: float | None = None, announce: bool = False,
               progress_fn: Callable[[int, dict], None] | None = None) -> dict:
    """Train `run` with Brax's own trainer into `writer` (a new run, or one resumed from
    `checkpoint`, `decode_checkpoint`'s; see the module for what resuming means); return the final
    progress: env_steps, update, wall_time, compile_time, eval_score, eval_objective."""
    env = BraxEnv(run.task, **run.task_kwargs)
    restore, start = None, None
    if checkpoint is not None and not run.ppo:
        warnings.warn(f"brax-apg cannot resume (Brax's apg.train takes no parameters to start from): the run in "
                      f"{writer.folder} restarts from scratch", stacklevel=2)
    elif checkpoint is not None:
        restore, start = checkpoint
        writer.resume_at(lambda row: int(row["env_steps"]) <= start["env_steps"])
    steps, _ = run.interval
    intervals = math.ceil((run.env_steps - (start or {"env_steps": 0})["env_steps"]) / steps)
    if intervals <= 0:  # a finished run, opened again with no more budget
        return start
    clock = Clock(*(() if start is None else (start["wall_time"], start["compile_time"])))
    bar = tqdm(total=run.env_steps, disable=not progress, desc=f"{run.agent} {run.task}", unit="step",
               initial=0 if start is None else start["env_steps"])
    recorder = Recorder(run, env, writer, start, clock, time_budget, bar, announce, progress_fn)
    try:
        with clock:
            if run.ppo:
                _train_ppo(run, env, recorder, intervals, restore)
            else:
                _train_apg(run, env, recorder, intervals)
    except OutOfTime:
        pass
    finally:
        recorder.announcing.close()
        bar.close()
    return {**recorder.progress, "compile_time": clock.compile_time}


# ---- as chaosgym agents: the glue to the run config and the run folder ------------------------------

def brax_run(config) -> BraxRun:
    """The `BraxRun` of a chaosgym run config (task, task_kwargs, agent, seed, env_steps, settings,
    eval_episodes, eval_seed)."""
    return BraxRun(config.task, dict(config.task_kwargs), config.agent, config.seed, config.env_steps,
                   config.settings, config.eval_episodes, config.eval_seed)


class BraxTrainer:
    """The `chaosgym.agents.registry.Trainer` of brax-ppo and brax-apg, writing a `run_class` folder."""

    def __init__(self, run_class: type[RunFolder] = Run):
        self.run_class = run_class

    def validate(self, config) -> None:
        brax_run(config)

    def train(self, config, out: Path | str, *, resume: bool = False, progress: bool = True,
              time_budget: float | None = None, announce: bool | None = None, progress_fn=None) -> dict:
        run = brax_run(config)
        template = make_policy_fn(run, BraxEnv(run.task, **run.task_kwargs))[1]
        folder, checkpoint = self.run_class.open(out, config, resume, lambda b: decode_checkpoint(b, run, template))
        with folder:
            return train_brax(run, folder, checkpoint, progress=progress, time_budget=time_budget,
                              announce=progress if announce is None else announce, progress_fn=progress_fn)

    def jax_policy(self, folder) -> tuple[Callable, Any]:
        """The run's deterministic policy as `(apply(params, obs), params)` in JAX: `params` the policy
        network's, the observation normaliser's statistics held fixed inside `apply` (`NetworkPolicy`)."""
        run = brax_run(folder.config)
        make_policy, template = make_policy_fn(run, BraxEnv(run.task, **run.task_kwargs))
        params, _ = folder.load_checkpoint(lambda b: decode_checkpoint(b, run, template))
        return NetworkPolicy(make_policy, params[0]), params[1]

    def policy(self, folder) -> Callable[[np.ndarray], np.ndarray]:
        run = brax_run(folder.config)
        make_policy, template = make_policy_fn(run, BraxEnv(run.task, **run.task_kwargs))
        params, _ = folder.load_checkpoint(lambda b: decode_checkpoint(b, run, template))
        return numpy_policy(make_policy, params)


TRAINER = BraxTrainer()
