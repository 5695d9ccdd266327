"""A grid's independent units as Ray tasks: `chaosgym compare` (a run each) and `chaosgym reproduce`
(a pole count's group each) with `--workers N` or `--ray-address ADDRESS`; imported only then.

A unit is a module-level function and its arguments. It writes its own run folder exactly as the
serial command does, and what it returns stays in the worker: afterwards the driver runs the serial
command, which reads every finished folder back, so the tables, figures and summaries are the same
whatever ran the units. Each unit reserves `--cpus-per-unit` CPUs and, where the cluster has GPUs,
one GPU (Ray then shows JAX that one alone, and starts a fresh worker for each such unit).

Faults: a worker that dies in mid-unit (killed, out of memory, its node lost) is retried by Ray up
to `RETRIES` times, and the unit resumes from its folder's last checkpoint, as a rerun of the
command does; a stopped driver ends the local Ray instance and its workers (a rerun continues from
the checkpoints); a unit that raises stops the grid with its error, the other units cancelled, each
folder with its last checkpoint.

Compilation: every worker's JAX compiles into one folder (`--compile-cache`, by default the driver's
own), set through the task's environment before the worker imports chaosgym. A unit that needs the
programs another running unit is still compiling (`Unit.program`) waits until they are compiled
(`Unit.compiled`) while other units go first, then loads them from that folder: each program is
compiled once across the workers. Each unit counts its compiles (`CompileCount`); the driver says
the sum.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jax
from tqdm.auto import tqdm

import chaosgym
from chaosgym._setup import _CHOSEN as CHOSEN_CACHE_VARIABLE
from chaosgym.agents.commands import ClusterOptions
from chaosgym.validation import UserError

RETRIES = 3  # Ray's retries of a unit whose worker died; each resumes from the unit's checkpoint
WAIT_S = 1.0  # the driver looks at its units this often
# JAX's monitoring events: every XLA compile (a program read from the persistent cache too), a cache read
BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
CACHE_HIT = "/jax/compilation_cache/cache_hits"


@dataclass(frozen=True)
class Unit:
    """One independent piece of a grid: `function(*args)` in a worker, named `label` to the user.

    Units of one `program` (runs that differ in their seed alone) compile the same XLA programs: one
    waits while another is compiling them (`compiled()` false), then loads them from the shared cache
    (with the cache off, none waits)."""

    label: str
    function: Callable
    args: tuple
    program: Hashable | None = None
    compiled: Callable[[], bool] = lambda: True


@dataclass
class CompileCount:
    """XLA compiles: `cold` ones (and their seconds), and those `loaded` from the persistent cache."""

    cold: int = 0
    cold_s: float = 0.0
    loaded: int = 0
    loaded_s: float = 0.0

    def __add__(self, other: CompileCount) -> CompileCount:
        return CompileCount(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def describe(self) -> str:
        return (f"{self.cold} programs compiled cold ({self.cold_s:.0f} s), {self.loaded} loaded from the "
                f"compilation cache ({self.loaded_s:.0f} s)")


class counting_compiles:
    """`with counting_compiles() as count:` counts the XLA compiles of the body, in this process.

    JAX times every compile, a cache read included, as one event, and reports a cache hit inside it
    (on the compiling thread) before it ends."""

    def __enter__(self) -> CompileCount:
        self.count, self.hit = CompileCount(), threading.local()
        jax.monitoring.register_event_listener(self._event)
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        return self.count

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_listener(self._event)
        jax.monitoring.unregister_event_duration_listener(self._duration)

    def _event(self, event: str, **kwargs) -> None:
        if event == CACHE_HIT:
            self.hit.value = True

    def _duration(self, event: str, seconds: float, **kwargs) -> None:
        if event != BACKEND_COMPILE:
            return
        if getattr(self.hit, "value", False):
            self.hit.value = False
            self.count.loaded += 1
            self.count.loaded_s += seconds
        else:
            self.count.cold += 1
            self.count.cold_s += seconds


def run_unit(function: Callable, args: tuple) -> CompileCount:
    """A unit in its worker: its folder is its result; its compiles go back to the driver."""
    with counting_compiles() as count:
        function(*args)
    return count


def worker_environment(options: ClusterOptions) -> dict[str, str]:
    """The variables every worker starts with: the shared compilation cache (read by `chaosgym._setup`
    when the worker imports chaosgym, before JAX), and this checkout on the import path where the
    driver runs chaosgym from a source checkout rather than an installed package."""
    folder = options.compile_cache or jax.config.jax_compilation_cache_dir
    if folder:
        folder = str(Path(folder).absolute())
        # JAX's own variable and chaosgym's mark beside it: chaosgym's setup in the worker takes it as
        # its own choice and applies CHAOSGYM_CACHE_DIR, whatever the node's environment holds
        env = {"CHAOSGYM_COMPILATION_CACHE": "1", "CHAOSGYM_CACHE_DIR": folder, "JAX_COMPILATION_CACHE_DIR": folder,
               CHOSEN_CACHE_VARIABLE: folder}
    else:
        env = {"CHAOSGYM_COMPILATION_CACHE": "0"}
    root = Path(chaosgym.__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "agents" / "cluster.py").is_file():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return env


def _start(options: ClusterOptions):
    """Ray, connected to `options.address` or to a local instance started here; chaosgym's own SIGTERM
    handler kept (Ray's would exit without a word)."""
    import ray

    handler = signal.getsignal(signal.SIGTERM)
    settings = {"runtime_env": {"env_vars": worker_environment(options)}, "logging_level": logging.ERROR}
    try:
        with warnings.catch_warnings():
            # JAX warns of any fork in its process; Ray's start its own programs (fork, then exec)
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            if options.address:
                ray.init(address=options.address, **settings)
            else:
                # "local": a new instance for this command, even where `ray start` left a cluster running
                ray.init(address="local", num_cpus=(options.workers or 1) * options.cpus_per_unit,
                         include_dashboard=False, **settings)
    except ConnectionError as error:
        raise UserError(f"--ray-address {options.address}: {error}") from None
    finally:
        signal.signal(signal.SIGTERM, handler)
    return ray


def run_units(units: Sequence[Unit], options: ClusterOptions, command: str) -> CompileCount:
    """Run every unit on Ray (at most `options.workers` at once), each writing its own folder; the
    compiles of all of them. A unit's error stops the rest and is raised here."""
    if not units:  # every unit finished before: nothing to start Ray for
        return CompileCount()
    ray = _start(options)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(run_unit).options(num_cpus=options.cpus_per_unit, num_gpus=gpus, max_retries=RETRIES,
                                            retry_exceptions=False)
        where = (f"the Ray cluster at {options.address}" if options.address else
                 f"a local Ray instance of {options.workers or 1} worker(s)")
        cache = worker_environment(options).get("CHAOSGYM_CACHE_DIR")
        tqdm.write(f"chaosgym {command}: {len(units)} unit(s) on {where} ({options.cpus_per_unit} CPU"
                   f"{' and 1 GPU' if gpus else ''} each; compilation cache: {cache or 'off'})")
        if cache is None:  # nothing to load another unit's programs from: no unit waits for another
            units = [dataclasses.replace(unit, program=None) for unit in units]
        return _run(ray, task, list(units), options.workers or len(units), command)
    finally:
        ray.shutdown()


def _run(ray, task, units: list[Unit], at_once: int, command: str) -> CompileCount:
    total, running, waiting = CompileCount(), {}, list(units)
    start = time.perf_counter()
    with tqdm(total=len(units), desc=f"{command} on Ray", unit=" units") as bar:
        try:
            while waiting or running:
                while len(running) < at_once and (unit := _startable(waiting, running.values())):
                    waiting.remove(unit)
                    running[task.remote(unit.function, unit.args)] = unit
                # a stop while Ray waits would reach chaosgym as Ray's own KeyboardInterrupt: wait in Python
                done, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
                if not done:
                    time.sleep(WAIT_S)
                for ref in done:
                    unit = running.pop(ref)
                    count = _result(ray, ref, unit)
                    total += count
                    bar.update()
                    tqdm.write(f"finished {unit.label} at {time.perf_counter() - start:.0f} s: {count.describe()}")
        except BaseException:
            for ref in running:  # stopped or failed: the others end too, each folder at its last checkpoint
                ray.cancel(ref)
            raise
    tqdm.write(f"chaosgym {command}: the units ran in {time.perf_counter() - start:.0f} s; {total.describe()}")
    return total


def _startable(waiting: list[Unit], running) -> Unit | None:
    """The first waiting unit whose programs no running unit is compiling right now."""
    compiling = {unit.program for unit in running if unit.program is not None and not unit.compiled()}
    return next((unit for unit in waiting if unit.program is None or unit.program not in compiling), None)


def _result(ray, ref, unit: Unit) -> CompileCount:
    """A finished unit's compiles, or its error: a user error as itself (one line, as the serial
    command gives it), a worker that kept dying as a user error saying how to continue."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, (UserError, OSError)):
            raise error.cause from None
        raise
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
            ray.exceptions.OutOfMemoryError) as error:
        raise UserError(f"{unit.label}: its Ray worker died {RETRIES + 1} times ({type(error).__name__}); every "
                        "finished unit and every folder's last checkpoint are kept: run the command again to "
                        "continue") from None
