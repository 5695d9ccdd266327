"""Where each episode's randomness comes from, on every face.

A single `ChaosEnv` follows Gymnasium: its `np_random` (seeded by `reset(seed=s)`) draws one integer
`k` per episode (`episode_seed`), and the episode starts from `Env.reset(jax.random.key(k))`. The
batched faces keep that contract for every environment given a seed, and draw the rest on the device:

* An environment seeded with an int has a seed stream of its own, a single env's exactly: its
  episodes are those of `ChaosEnv(backend="mjx")` seeded alike, resets bit for bit. The streams are
  numpy generators on the host (`ResetSeeds`); each draws `AHEAD` seeds at a time (one numpy call
  yields the same integers as that many single draws), so a step that resets thousands of
  environments costs a few vectorised numpy operations, not a Python loop over them.
* An environment never seeded (Gymnasium's "from entropy") has no host stream: episode e of
  environment i starts from `episode_key(key, i, e)`, folded on the device from the batch's key,
  so its resets need nothing from the host.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from gymnasium.utils.seeding import np_random

# Seeds each host stream draws ahead: a numpy call costs about what 60 single draws cost, and a
# stream holds 4 bytes per seed drawn ahead.
AHEAD = 128


def episode_seed(rng: np.random.Generator) -> int:
    """The seed of a new episode, drawn from a Gymnasium `np_random` (what `ChaosEnv.reset` does)."""
    return int(rng.integers(0, 2**31 - 1))


def is_seed(seed: Any) -> bool:
    return isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)) and seed >= 0


def vector_seeds(seed: Any, num_envs: int) -> list[int | None]:
    """One seed (or None) per environment from a vector `reset(seed=...)`, as Gymnasium's vector envs
    read it: None, an int s (environment i gets s + i), or a sequence of `num_envs` ints or Nones."""
    if seed is None:
        return [None] * num_envs
    if is_seed(seed):
        return [int(seed) + i for i in range(num_envs)]
    if isinstance(seed, (list, tuple, np.ndarray)) and len(seed) == num_envs and all(s is None or is_seed(s) for s in seed):
        return [None if s is None else int(s) for s in seed]
    raise ValueError(f"seed must be None, a non-negative int, or a list of {num_envs} non-negative ints or "
                     f"Nones (one per environment), got {seed!r}")


def batch_key(seed: int) -> np.ndarray:
    """The raw data of the key from which a batch's unseeded environments draw their episodes."""
    return np.asarray(jax.random.key_data(jax.random.key(seed)))


def episode_key(key: jax.Array, index: jax.Array, episode: jax.Array, seed: jax.Array, keyed: jax.Array) -> jax.Array:
    """The PRNG key of one environment's new episode (traced, per environment): for a keyed (unseeded)
    environment `fold_in(fold_in(key, index), episode)` of the batch's key data `key`; otherwise
    `jax.random.key(seed)`, a single env's key for the seed its stream drew."""
    drawn = jax.random.fold_in(jax.random.fold_in(jax.random.wrap_key_data(key), index), episode)
    own = jax.random.key(seed)
    return jax.random.wrap_key_data(jnp.where(keyed, jax.random.key_data(drawn), jax.random.key_data(own)))


class ResetSeeds:
    """The seed streams of `num_envs` environments on the host, for the batched faces.

    An environment given an int by `seed` gets a stream, as a single env's `np_random`; one never
    given an int is keyed (its episodes are drawn on the device, see the module). `take(indices)`
    hands out the seeds of the next episode of those environments and moves their streams on.
    """

    def __init__(self, num_envs: int):
        self.generators: list[np.random.Generator | None] = [None] * num_envs
        self.streamed = np.zeros(num_envs, bool)
        self.drawn = np.zeros((num_envs, 0), np.uint32)  # each stream's next seeds, once there is one
        self.used = np.zeros(num_envs, np.int64)  # how many of them it has handed out

    def seed(self, seeds: list[int | None]) -> None:
        """Restart the stream of every environment given an int; one given None keeps what it has."""
        for i, seed in enumerate(seeds):
            if seed is not None:
                if not self.drawn.shape[1]:
                    self.drawn = np.zeros((len(seeds), AHEAD), np.uint32)
                self.generators[i], self.streamed[i] = np_random(seed)[0], True
                self._draw(i)

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`(seeds, keyed)` of the next episode of the environments at `indices` (distinct ints), as
        uint32 and bool arrays; a keyed environment's seed is 0 (unused)."""
        streamed = self.streamed[indices]
        envs = indices[streamed]
        seeds = np.zeros(len(indices), np.uint32)
        seeds[streamed] = self.drawn[envs, self.used[envs]]
        self.used[envs] += 1
        for i in envs[self.used[envs] == AHEAD]:
            self._draw(i)
        return seeds, ~streamed

    def _draw(self, i: int) -> None:
        self.drawn[i] = self.generators[i].integers(0, 2**31 - 1, size=AHEAD)
        self.used[i] = 0

    def snapshot(self) -> dict:
        """Everything the next seeds depend on, as plain picklable data (`restore` takes it back)."""
        return {"generators": [None if g is None else g.bit_generator.state for g in self.generators],
                "drawn": self.drawn.copy(), "used": self.used.copy()}

    def restore(self, snapshot: dict) -> None:
        states = snapshot["generators"]
        if len(states) != len(self.generators):
            raise ValueError(f"the seed streams are of {len(states)} environments, these are of {len(self.generators)}")
        self.generators = [None if s is None else np.random.Generator(np.random.PCG64()) for s in states]
        for generator, state in zip(self.generators, states):
            if generator is not None:
                generator.bit_generator.state = state
        self.streamed = np.array([g is not None for g in self.generators], bool)
        self.drawn, self.used = np.array(snapshot["drawn"], np.uint32), np.array(snapshot["used"], np.int64)
