"""Pictures of a task's states: RGB frames through MuJoCo's offscreen renderer (`SceneRenderer`,
every face) and MuJoCo's own viewer window for `render_mode="human"` (`HumanViewer`).

Headless rendering whatever is imported first. Where no display exists, `chaosgym._setup` points
`MUJOCO_GL` at EGL or OSMesa, which MuJoCo reads once, when it is imported. A program that imported
MuJoCo before chaosgym has MuJoCo's default instead, GLFW, which needs a display ("an OpenGL
platform library has not been loaded"); the first frame then gives MuJoCo's renderer the headless
context chaosgym chose (`_use_chosen_gl`), as importing chaosgym first would have.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

import mujoco
import numpy as np

from chaosgym import _setup
from chaosgym.validation import int_in


def _use_chosen_gl() -> None:
    """Make MuJoCo's `Renderer` create the GL context `chaosgym._setup` chose, if it bound another."""
    chosen = _setup.HEADLESS_GL
    if chosen is None:
        return  # a display, or the user's own MUJOCO_GL
    # the module whose `gl_context.GLContext` the Renderer instantiates, whichever MuJoCo version
    contexts = sys.modules[mujoco.Renderer.__module__].gl_context
    bound = getattr(contexts, "GLContext", None)
    if bound is None or not bound.__module__.startswith(f"mujoco.{chosen}"):
        contexts.GLContext = importlib.import_module(f"mujoco.{chosen}").GLContext


class SceneRenderer:
    """RGB images of a task's states through MuJoCo's offscreen renderer, shared by every face
    (`ChaosEnv.render`, the SB3 `VecEnv`'s `get_images`, `chaosgym render`).

    The size is checked here, when a face is built: positive integers within the model's offscreen
    buffer (`<visual><global offwidth offheight>` in the MJCF). The GL context is made at the first frame.
    """

    def __init__(self, mj_model: mujoco.MjModel, width: int, height: int, camera: str | int = -1):
        for name, value, limit in (("width", width, mj_model.vis.global_.offwidth),
                                   ("height", height, mj_model.vis.global_.offheight)):
            int_in(1, limit).saying(f"an integer in 1..{limit} (the model's offscreen buffer)")(f"render {name}", value)
        self.model, self.size, self.camera = mj_model, (int(height), int(width)), camera
        self._renderer: mujoco.Renderer | None = None
        self._data = mujoco.MjData(mj_model)

    def render(self, qpos: np.ndarray, qvel: np.ndarray) -> np.ndarray:
        """The image, `(height, width, 3)` uint8, of the state `(qpos, qvel)`."""
        if self._renderer is None:
            _use_chosen_gl()
            self._renderer = mujoco.Renderer(self.model, *self.size)
        self._data.qpos[:], self._data.qvel[:] = qpos, qvel
        mujoco.mj_forward(self.model, self._data)
        self._renderer.update_scene(self._data, camera=self.camera)
        return self._renderer.render()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def display_available() -> bool:
    """Whether a window can open here: on Linux and the BSDs an X11 or Wayland display must be set."""
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class HumanViewer:
    """MuJoCo's viewer window on one `MjData`, as Gymnasium's MuJoCo envs show `render_mode="human"`:
    opened at the first frame, updated by every `show`, at most `fps` frames per second of wall
    time (so an episode plays in real time). Refused when built where no display exists."""

    def __init__(self, model: mujoco.MjModel, fps: float):
        if not display_available():
            raise ValueError("render_mode='human' opens MuJoCo's viewer window, which needs a display, and none is set "
                             "here (DISPLAY, WAYLAND_DISPLAY); use render_mode='rgb_array' for images")
        self.model, self.period = model, 1.0 / fps
        self._handle = None
        self._due = 0.0  # when the next frame may be shown

    def show(self, data: mujoco.MjData) -> None:
        if self._handle is None:
            import mujoco.viewer  # its GUI libraries load only for a window

            self._handle = mujoco.viewer.launch_passive(self.model, data)
        self._handle.sync()
        wait = self._due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        self._due = max(self._due, time.perf_counter()) + self.period

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
