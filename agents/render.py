"""`chaosgym render`: an animated GIF of a trained policy's episode, from a run folder.

Works on the folder of any `chaosgym train` (or `chaosgym compare`) run, gradient-based or SB3:
the policy is the run's last checkpoint, acting deterministically, in the Gymnasium environment on
MJX (the physics of the evaluation protocol), from `reset(seed=--seed)`.

    chaosgym render --run runs/cp1-full --out cp1-full.gif
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path

import gymnasium
import imageio.v3 as iio
import numpy as np
from tqdm.auto import tqdm

import chaosgym  # noqa: F401  (registers the task ids with Gymnasium)
from chaosgym.agents.commands import MAX_GIF_FPS
from chaosgym.agents.run import Run
from chaosgym.files import refuse_link, write_atomic
from chaosgym.validation import UserError


def load_run_policy(folder: Path) -> tuple[str, dict, Callable[[np.ndarray], np.ndarray]]:
    """`(env_id, task_kwargs, policy)` of a run folder's newest readable checkpoint."""
    run = Run(folder)
    if run.config is None:
        raise UserError(f"{folder} is not a run folder of `chaosgym train` (it has no config.json)")
    return run.config.task, run.config.task_kwargs, run.policy()


def render_episode(policy: Callable[[np.ndarray], np.ndarray], env_id: str, task_kwargs: dict, seed: int = 0,
                   max_steps: int | None = None, width: int = 320, height: int = 320,
                   every: int = 1) -> tuple[list[np.ndarray], float]:
    """Frames of one episode (the first, then every `every`-th step's) and its return."""
    env = gymnasium.make(env_id, backend="mjx", render_mode="rgb_array", width=width, height=height, **task_kwargs)
    try:
        obs, _ = env.reset(seed=seed)
        frames, total, step, done = [env.render()], 0.0, 0, False
        limit = max_steps or env.spec.max_episode_steps
        with tqdm(total=limit, desc="render", unit="step") as bar:
            while not done and step < limit:
                obs, reward, terminated, truncated, _ = env.step(np.asarray(policy(obs), np.float32))
                total, step, done = total + float(reward), step + 1, terminated or truncated
                if step % every == 0 or done:
                    frames.append(env.render())
                bar.update()
    finally:
        env.close()
    return frames, total


def run(args: argparse.Namespace) -> int:
    env_id, task_kwargs, policy = load_run_policy(args.run)
    out = args.out or args.run / "episode.gif"
    if out.suffix.lower() != ".gif":
        raise UserError(f"--out must name a .gif file, got {out}")
    refuse_link(out)  # before the episode is rendered, not after
    control_fps = 1.0 / chaosgym.make(env_id, **task_kwargs).dt
    every = max(1, math.ceil(control_fps / MAX_GIF_FPS))
    fps = args.fps or control_fps / every
    frames, total = render_episode(policy, env_id, task_kwargs, args.seed, args.max_steps, args.width,
                                   args.height, every)
    # encoded in memory, then written whole: a full disk keeps the previous GIF, a link is refused
    write_atomic(out, iio.imwrite("<bytes>", np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0))
    print(f"wrote {out}: {len(frames)} frames at {fps:g} fps (every {every} step(s)), episode return {total:.2f}")
    return 0
