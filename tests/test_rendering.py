"""Rendering: headless frames whatever is imported first, and MuJoCo's viewer for render_mode="human"."""

import os
import subprocess
import sys

import gymnasium
import numpy as np
import pytest

import chaosgym  # noqa: F401
from chaosgym import _setup

CARTPOLE = "ChaosCartPole-v0"

MUJOCO_FIRST = ("import mujoco, gymnasium, chaosgym; e = gymnasium.make('ChaosCartPole-v0', render_mode='rgb_array', "
                "width=32, height=24); e.reset(seed=0); f = e.render(); print(f.shape, f.std() > 0)")


@pytest.mark.skipif(_setup.HEADLESS_GL is None, reason="a display, or MUJOCO_GL set: nothing headless to choose")
def test_frames_render_headless_when_mujoco_was_imported_before_chaosgym():
    """MuJoCo bound GLFW at its import, before chaosgym chose EGL or OSMesa, and failed with "an OpenGL
    platform library has not been loaded into this process"."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    done = subprocess.run([sys.executable, "-c", MUJOCO_FIRST], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "(24, 32, 3) True"


def test_human_rendering_without_a_display_is_refused_in_one_line(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"^render_mode='human' opens MuJoCo's viewer window, which needs a display"
                                         r".*use render_mode='rgb_array'") as error:
        gymnasium.make(CARTPOLE, render_mode="human")
    assert "\n" not in str(error.value)
    assert gymnasium.make(CARTPOLE).unwrapped.metadata["render_modes"] == ["rgb_array"]  # what works here


class FakeViewer:
    """What `mujoco.viewer.launch_passive` returns, recording what each `sync` showed."""

    def __init__(self, model, data):
        self.data, self.shown = data, []

    def sync(self):
        self.shown.append(self.data.qpos.copy())

    def close(self):
        self.shown.append("closed")


@pytest.mark.parametrize("backend", ["mujoco", "mjx"])
def test_human_rendering_shows_every_state_in_mujocos_viewer(backend, monkeypatch):
    import mujoco.viewer

    viewers = []
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setattr(mujoco.viewer, "launch_passive", lambda model, data: viewers.append(FakeViewer(model, data))
                        or viewers[-1])
    env = gymnasium.make(CARTPOLE, render_mode="human", backend=backend)
    assert env.unwrapped.metadata["render_modes"] == ["human", "rgb_array"]
    env.reset(seed=0)
    for _ in range(3):
        assert env.step(np.ones(1, np.float32)) is not None
    assert env.render() is None  # Gymnasium's human mode returns nothing
    env.close()
    (viewer,) = viewers
    assert viewer.data is env.unwrapped.data  # the env's own MjData, kept in step with its state
    assert len(viewer.shown) == 1 + 3 + 1 + 1 and viewer.shown[-1] == "closed"
    np.testing.assert_allclose(viewer.shown[-2], np.asarray(env.unwrapped.state.data.qpos), rtol=1e-6)
    assert not np.array_equal(viewer.shown[0], viewer.shown[3])  # each step showed its own state
