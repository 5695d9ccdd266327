"""The seed streams of the batched faces: drawn ahead on the host, they hand out exactly the seeds a
single env draws one reset at a time; unseeded environments take none from the host."""

import numpy as np
from gymnasium.utils.seeding import np_random

from chaosgym.faces.seeding import AHEAD, ResetSeeds, episode_seed, vector_seeds


def test_streams_drawn_ahead_hand_out_a_single_envs_seeds_one_reset_at_a_time():
    streams = ResetSeeds(3)
    streams.seed(vector_seeds([5, None, 7], 3))
    singles = {0: np_random(5)[0], 2: np_random(7)[0]}
    everyone = np.arange(3)
    for episode in range(2 * AHEAD + 3):  # across two refills of the streams
        resetting = everyone if episode % 3 else np.array([0, 1])  # env 2 misses some resets
        seeds, keyed = streams.take(resetting)
        np.testing.assert_array_equal(keyed, resetting == 1)  # never seeded: drawn on the device
        for seed, i in zip(seeds, resetting):
            if i in singles:
                assert seed == episode_seed(singles[i]), (episode, i)


def test_a_new_seed_restarts_one_stream_and_none_keeps_the_others():
    streams = ResetSeeds(2)
    streams.seed([1, 2])
    first = streams.take(np.arange(2))[0]
    streams.take(np.arange(2))
    streams.seed([1, None])
    again = streams.take(np.arange(2))[0]
    assert again[0] == first[0] and again[1] != first[1]


def test_a_snapshot_restores_the_streams_mid_block():
    streams, twin = ResetSeeds(2), ResetSeeds(2)
    streams.seed([3, None])
    for _ in range(AHEAD - 1):
        streams.take(np.arange(2))
    twin.restore(streams.snapshot())
    for _ in range(3):  # over the next refill
        a, b = streams.take(np.arange(2)), twin.take(np.arange(2))
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
