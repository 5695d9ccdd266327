"""`chaosgym.agents.AGENTS`: every agent is named once, with its facts, and the commands use only those.

Adding an agent must be one module and one registry entry: the tests here check that nothing in
`agents/` compares agent names or imports inside a function, that every trainer has the interface,
and that an agent added to the registry under a new name trains and is read back like any other.
"""

import ast
import dataclasses
from pathlib import Path

import numpy as np
import pytest

import chaosgym

import chaosgym.agents  # noqa: E402
from chaosgym.agents import AGENTS
from chaosgym.agents.config import TrainConfig, for_task
from chaosgym.agents.run import Run
from chaosgym.agents.train import train
from chaosgym.functional.settings import ESTIMATORS

AGENTS_FOLDER = Path(chaosgym.agents.__file__).parent
SOURCES = sorted(AGENTS_FOLDER.glob("*.py"))
TRAINER_METHODS = ("validate", "flag_changes", "train", "policy")


def test_every_estimator_is_an_agent_and_every_agent_names_a_trainer_with_the_interface():
    assert set(ESTIMATORS) <= set(AGENTS)
    assert all(AGENTS[name].estimator for name in ESTIMATORS)
    for name, agent in AGENTS.items():
        assert agent.name == name
        trainer = agent.load()
        assert all(callable(getattr(trainer, method, None)) for method in TRAINER_METHODS), name
        config = for_task("ChaosCartPole-v0", name, env_steps=10_000)
        assert config.spec is agent
        if agent.budget == "updates":
            assert config.updates == max(1, 10_000 // config.steps_per_update())
        assert agent.memory_needed(config, 6, 1, 1000)["policy and optimiser"] > 0


def test_the_facts_of_the_agents_that_differ():
    config = for_task("ChaosCartPole-v0", "es", updates=1, batch_size=4, **{"estimator.es_pairs": 3,
                                                                           "estimator.horizon": 10})
    assert config.steps_per_update() == 2 * 3 * 4 * 10
    assert for_task("ChaosCartPole-v0", "combined", batch_size=4, **{"estimator.horizon": 10}).steps_per_update() == 80
    assert for_task("ChaosCartPole-v0", "apg").estimator.horizon == 32  # the carried window, not the preset's 100
    assert for_task("ChaosCartPole-v0", "truncated").estimator.truncation == 20  # the task's preset
    with pytest.raises(ValueError, match="counts its budget in env steps"):
        for_task("ChaosCartPole-v0", "ppo", env_steps=1000).steps_per_update()
    assert {AGENTS[a].checkpoint_suffix for a in ("ppo", "full", "shac")} == {".zip", ".pkl"}


def _string_comparisons(tree: ast.AST) -> list[str]:
    """String constants an `==`, `!=`, `in` or `not in` compares with (agent names would be among them)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                items = side.elts if isinstance(side, (ast.Tuple, ast.List, ast.Set)) else [side]
                found += [i.value for i in items if isinstance(i, ast.Constant) and isinstance(i.value, str)]
    return found


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_no_module_of_agents_compares_agent_names_or_imports_inside_a_function(source):
    tree = ast.parse(source.read_text())
    # an agent's own module may name itself (sb3.py's ALGORITHMS table is data, not a comparison)
    compared = set(_string_comparisons(tree)) & set(AGENTS)
    assert not compared, f"{source.name} compares agent names {sorted(compared)}: use the agent's facts"
    inner = [node.lineno for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
             for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not inner, f"{source.name} imports inside a function at lines {inner}"


def test_an_agent_added_under_a_new_name_trains_and_reads_back_like_any_other(tmp_path, monkeypatch):
    """Nothing in train, config or Run knows the built-in names: a copy of `full` named otherwise
    is configured, trained, checkpointed and turned back into a policy through its entry alone."""
    copy = dataclasses.replace(AGENTS["full"], name="full-again", estimator=False)
    monkeypatch.setitem(AGENTS, "full-again", copy)
    # the sizes of tests/test_train.py's SMALL, so that the compiled update is shared
    config = for_task("ChaosCartPole-v0", "full-again", updates=2, batch_size=4, hidden=(8,), eval_every=1,
                      checkpoint_every=1, eval_episodes=4, **{"estimator.horizon": 20})
    assert config.estimator.name == "full"  # not an estimator's name: the estimator keeps its default
    final = train(config, tmp_path / "run", progress=False)
    assert final["update"] == 2 and final["env_steps"] == 2 * 4 * 20
    run = Run(tmp_path / "run")
    assert run.config == config and run.checkpoint_path.name == "checkpoint.pkl"
    env = chaosgym.make("ChaosCartPole-v0")
    assert run.policy()(np.zeros(env.observation_size, np.float32)).shape == (env.action_size,)
    assert TrainConfig.from_json(config.to_json()) == config
