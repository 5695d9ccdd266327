"""Each agent starts from its authors' settings on the Ant, with the source recorded beside them
(`chaosgym.presets`), and every preset builds a valid config of its agent."""

import pytest

from chaosgym.agents import AGENTS
from chaosgym.agents.config import for_task
from chaosgym.presets import ANT, PRESETS

# the published settings each Ant preset is read from: the repository and the file
SOURCES = {"apg": ("google/brax", "apg/train.py"), "shac": ("NVlabs/DiffRL", "examples/cfg/shac/ant.yaml"),
           "ahac": ("imgeorgiev/DiffRL", "scripts/cfg/alg/ahac.yaml"), "ppo": ("rl-baselines3-zoo", "hyperparams/ppo.yml")}


@pytest.mark.parametrize("agent", sorted(SOURCES))
def test_every_ant_preset_names_the_published_file_it_was_read_from(agent):
    preset = ANT.agents[agent]
    repository, path = SOURCES[agent]
    assert repository in preset.source and path in preset.source, preset.source
    assert preset.settings, "a preset of its authors' settings changes some"
    assert preset.differs, "what does not carry over from the authors' Ant is said"


@pytest.mark.parametrize("task", sorted(PRESETS))
def test_every_preset_builds_a_valid_config_of_its_agent(task):
    for agent, preset in PRESETS[task].agents.items():
        assert agent in AGENTS, (task, agent)
        budget = {"env_steps": 4_096_000}
        config = for_task(task, agent, **budget)
        for path, value in preset.settings.items():
            head, _, rest = path.partition(".")
            actual = getattr(getattr(config.settings, head), rest) if rest else getattr(config.settings, head)
            assert actual == value, (task, agent, path)


def test_the_ant_presets_are_the_published_numbers():
    shac = for_task("ChaosAnt-v0", "shac", env_steps=4_096_000)
    assert shac.updates == 2000 and shac.settings.num_envs * shac.settings.window * 2000 == 4_096_000  # SHAC's budget
    assert (shac.settings.hidden, shac.settings.critic_hidden, shac.settings.critic_iterations) == ((128, 64, 32), (64, 64), 16)
    assert shac.settings.decay_updates == 2000  # the linear schedule runs over the run
    ahac = for_task("ChaosAnt-v0", "ahac", env_steps=4_096_000).settings
    assert (ahac.num_envs, ahac.min_window, ahac.window, ahac.critic_learning_rate) == (128, 8, 64, 5e-4)
    apg = for_task("ChaosAnt-v0", "apg").settings
    assert (apg.learning_rate, apg.clip_value, apg.max_grad_norm, apg.lr_schedule) == (1e-4, 1.0, None, "exponential")
    ppo = for_task("ChaosAnt-v0", "ppo", env_steps=1000).settings
    assert ppo.n_steps * ppo.num_envs == 2048 and ppo.batch_size == 64  # RL Zoo's rollout, spread over 16 envs
    wide = for_task("ChaosAnt-v0", "ppo", env_steps=1000, num_envs=1024).settings
    assert (wide.n_steps, wide.batch_size) == (2, 64)  # the published batch kept at 1,024 envs
