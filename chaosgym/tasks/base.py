"""`Task`: what every chaosgym task is, one MJCF model and a few pure functions of its state.

A task of your own is a subclass in your own module, with its own MJCF file (a path) or string
(`xml`), registered by `chaosgym.register` (docs/custom_tasks.md).
"""

from __future__ import annotations

import inspect
import sys
from importlib import resources
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import mujoco

from chaosgym._mjx import mjx
from chaosgym.tasks.arrays import array_namespace
from chaosgym.validation import UserError


def asset_path(name: str):
    """Path of an MJCF file shipped in the package (`chaosgym.assets`, the repository's `assets/`)."""
    return resources.files("chaosgym.assets").joinpath(name)


class Task:
    """A control task: one MJCF model and a few pure functions of `mjx.Data`.

    Subclasses set the class attributes and override the functions below; keyword arguments of a
    subclass's `__init__` are the task's options (e.g. `num_poles`, or the Ant's reward weights).

    The model is `xml` (an MJCF string) where a subclass sets it, else the file `asset`: a path
    (absolute, or relative to the folder of the module that defines the subclass), else the name of
    a file shipped in `chaosgym.assets`. After compiling it the `Env` calls `bind(model)` once: the
    one place a task reads indices from its model (a body's id, say), so that no other method has
    side effects.

    `observation`, `reward` and `terminated` run on both backends of the Gymnasium env. On MuJoCo's
    C engine (`chaosgym.faces.mujoco_backend`) their data holds numpy arrays of only `time`, `qpos`, `qvel`,
    `act`, `ctrl`, `xpos`, `xquat`, `site_xpos` and `sensordata` (`mujoco_backend.FIELDS`); a task
    reading any other field is refused there with an error naming it. Written over
    `chaosgym.tasks.arrays.array_namespace`, they compute in numpy there and in jax.numpy on MJX.
    """

    asset: str | Path = ""
    xml: str | None = None
    frame_skip: int
    episode_length: int
    render_camera: str | int = -1

    def edit_spec(self, spec: mujoco.MjSpec) -> None:
        """Change the loaded MJCF before compiling (e.g. remove unused poles)."""

    def model_file(self) -> Path:
        """The MJCF file of `asset` (see the class)."""
        path = Path(self.asset)
        if not str(self.asset):
            raise UserError(f"{type(self).__name__} names no model: set its `asset` (an MJCF file) or `xml`")
        if path.is_absolute():
            return path
        module = sys.modules.get(type(self).__module__)
        source = inspect.getsourcefile(module) if module is not None and hasattr(module, "__file__") else None
        beside = Path(source).parent / path if source else None
        if beside is not None and beside.is_file():
            return beside
        return Path(str(asset_path(str(self.asset))))

    def mj_model(self) -> mujoco.MjModel:
        if self.xml is not None:
            spec = mujoco.MjSpec.from_string(self.xml)
        else:
            path = self.model_file()
            if not path.is_file():
                raise FileNotFoundError(f"{type(self).__name__}'s MJCF file {self.asset!r} was not found (looked "
                                        f"for {path}); give `asset` as a path or the model as `xml`")
            spec = mujoco.MjSpec.from_file(str(path))
        self.edit_spec(spec)
        return spec.compile()

    def bind(self, model: mujoco.MjModel) -> None:
        """Read what the task's functions need from the compiled model (body and site ids, ...);
        called once by the `Env`, after compiling."""

    def initial_state(self, key: jax.Array, model: mujoco.MjModel) -> tuple[jax.Array, jax.Array]:
        """Sample `(qpos, qvel)` of a new episode."""
        raise NotImplementedError

    def observation(self, data: mjx.Data) -> jax.Array:
        raise NotImplementedError

    def reward(
        self, data: mjx.Data, action: jax.Array, next_data: mjx.Data
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Reward of one control step and its terms/metrics (scalars, same keys every call)."""
        raise NotImplementedError

    def terminated(self, data: mjx.Data) -> jax.Array:
        return array_namespace(data).asarray(False)  # numpy on the C engine: a JAX call costs 100 us

    # None: the physics is MuJoCo's (`mjx.step`, and `mj_step` on the C backend); a task that
    # integrates its own equations names them here, and overrides `mjx_step`
    physics_override: str | None = None

    def mjx_step(self, model: mjx.Model, data: mjx.Data) -> mjx.Data:
        """One physics step of `model.opt.timestep` under `data.ctrl`: `mjx.step`, unless the task
        integrates its own equations (`physics_override`)."""
        return mjx.step(model, data)

    def objectives(self) -> dict[str, Callable[[jax.Array, mjx.Data], jax.Array]]:
        """Named differentiable losses of one trajectory, `loss(rewards, final_data)`; lower is better.

        `rewards` has shape `(horizon,)` (zero after a termination). Every task has `return`, minus
        the sum of rewards: what every agent of a comparison optimises and is ranked by. A task may
        add its own (the cart pole's `final_state`, for the paper it reproduces).
        """
        return {"return": lambda rewards, final_data: -jnp.sum(rewards)}

    # the objective that evaluation reports beside the return (`eval_objective`)
    reported_objective: str = "return"

    def objective(self, name: str) -> Callable[[jax.Array, mjx.Data], jax.Array]:
        """The objective called `name` (see `objectives`)."""
        objectives = self.objectives()
        if name not in objectives:
            raise UserError(f"{type(self).__name__} has no objective {name!r}; its objectives: {', '.join(objectives)}")
        return objectives[name]
