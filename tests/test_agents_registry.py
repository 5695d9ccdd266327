"""`chaosgym.agents.AGENTS`: every agent is named once, with its facts, and the commands use only those.

Adding an agent must be one module and one registry entry: the tests here check that nothing in
`agents/` compares agent names or imports inside a function, that every trainer has the interface,
that an estimator added to `ESTIMATOR_SPECS` is an agent, and that an agent added to the registry
under a new name trains and is read back like any other.
"""

import ast
import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest

import chaosgym

import chaosgym.agents  # noqa: E402
from chaosgym.agents import AGENTS, registry
from chaosgym.functional import gradients
from chaosgym.agents.api import train_config
from chaosgym.agents.config import TrainConfig, for_task
from chaosgym.agents.run import Run
from chaosgym.agents.settings import APGSettings, EstimatorSettings
from chaosgym.functional.settings import ESTIMATOR_SPECS, ESTIMATORS, EstimatorSpec
from chaosgym.validation import UserError

AGENTS_FOLDER = Path(chaosgym.agents.__file__).parent
SOURCES = sorted(AGENTS_FOLDER.glob("*.py"))
TRAINER_METHODS = ("validate", "train", "policy")
KINDS = ("estimator", "carried", "sb3", "brax")
def test_every_estimator_is_an_agent_and_every_agent_names_a_trainer_with_the_interface():
    assert set(ESTIMATORS) <= set(AGENTS) and len(AGENTS) == len(list(AGENTS))
    assert all(AGENTS[name].kind == "estimator" for name in ESTIMATORS)
    for name, agent in AGENTS.items():
        assert agent.name == name and agent.kind in KINDS, name
        if agent.kind == "brax" and importlib.util.find_spec("brax") is None:
            continue  # an optional extra: its trainer imports Brax
        trainer = agent.load()
        assert all(callable(getattr(trainer, method, None)) for method in TRAINER_METHODS), name
        config = for_task("ChaosCartPole-v0", name, env_steps=10_000)
        assert config.spec == agent and isinstance(config.settings, agent.settings_class())
        if agent.budget == "updates":
            assert config.updates == max(1, 10_000 // config.steps_per_update())
        else:
            assert config.updates is None  # not read, and not recorded
            assert "updates" not in config.to_json()
        assert agent.memory_needed(config, 6, 1, 1000)["policy and optimiser"] > 0


@pytest.fixture
def full_again():
    """`full` registered again under another name (`register_estimator`), removed afterwards."""
    gradients.register_estimator(EstimatorSpec("full-again", "full, by another name", ("full",)),
                                 gradients.COMBINATIONS["full"])
    yield "full-again"
    del ESTIMATOR_SPECS["full-again"], gradients.COMBINATIONS["full-again"]


def test_an_estimator_registered_later_is_an_agent_and_trains_like_any_other(full_again, tmp_path):
    assert full_again in AGENTS and full_again in list(AGENTS)
    added = AGENTS[full_again]
    assert (added.kind, added.settings_class(), added.load()) == ("estimator", EstimatorSettings, AGENTS["full"].load())
    with pytest.raises(ValueError, match="exists already"):
        gradients.register_estimator(ESTIMATOR_SPECS["full"], gradients.COMBINATIONS["full"])
    # tests/test_train.py's sizes on the cart pole from its equations: compiled in seconds
    config = for_task("ChaosCartPole-v0", full_again, task_kwargs={"physics": "equations"}, updates=2, batch_size=4,
                      hidden=(8,), eval_every=1, checkpoint_every=1, eval_episodes=4, **{"estimator.horizon": 20})
    assert config.settings.estimator.name == full_again  # the agent names its estimator
    final = train_config(config, tmp_path / "run", progress=False).final
    assert final["update"] == 2 and final["env_steps"] == 2 * 4 * 20
    run = Run(tmp_path / "run")
    assert run.config == config and [int(r["update"]) for r in run.evaluated_metrics()] == [0, 1, 2]


def test_the_facts_of_the_agents_that_differ():
    config = for_task("ChaosCartPole-v0", "es", updates=1, batch_size=4, **{"estimator.es_pairs": 3,
                                                                           "estimator.horizon": 10})
    assert config.steps_per_update() == 2 * 3 * 4 * 10
    assert for_task("ChaosCartPole-v0", "combined", batch_size=4, **{"estimator.horizon": 10}).steps_per_update() == 80
    apg = for_task("ChaosCartPole-v0", "apg")
    assert isinstance(apg.settings, APGSettings) and apg.settings.window == 32  # the carried window
    assert apg.steps_per_update() == 16 * 32  # the task's preset: 16 envs
    assert for_task("ChaosCartPole-v0", "truncated").settings.estimator.truncation == 20  # the task's preset
    # a setting the agent does not take is refused, naming the flags it does take
    with pytest.raises(UserError, match="--horizon: not a setting of apg.*--num-envs.*--window"):
        for_task("ChaosCartPole-v0", "apg", **{"estimator.horizon": 50})
    with pytest.raises(UserError, match="--num-envs: not a setting of full.*--batch-size"):
        for_task("ChaosCartPole-v0", "full", num_envs=4)
    with pytest.raises(ValueError, match="counts its budget in env steps"):
        for_task("ChaosCartPole-v0", "ppo", env_steps=1000).steps_per_update()
    with pytest.raises(UserError, match="--updates: not read by --agent ppo"):
        for_task("ChaosCartPole-v0", "ppo", env_steps=1000, updates=3)
    assert {AGENTS[a].checkpoint_suffix for a in ("ppo", "full", "shac")} == {".zip", ".npz"}


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
             for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))
             and not set(_imported(node)) <= OPTIONAL]
    assert not inner, f"{source.name} imports inside a function at lines {inner}"


# optional extras, imported only where they are used, so that without them nothing fails
OPTIONAL = {"ray", "tensorboardX", "chaosgym.agents.cluster"}


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [alias.name for alias in node.names]


def test_an_agent_added_under_a_new_name_trains_and_reads_back_like_any_other(tmp_path, monkeypatch):
    """Nothing in the loop, config or Run knows the built-in names: a copy of `apg` named otherwise
    is configured, trained, checkpointed and turned back into a policy through its entry alone."""
    copy = dataclasses.replace(AGENTS["apg"], name="apg-again")
    monkeypatch.setitem(registry._OTHERS, "apg-again", copy)
    assert AGENTS["apg-again"] == copy and "apg-again" in list(AGENTS)
    # the cart pole from its equations and tiny sizes: compiled in seconds
    config = for_task("ChaosCartPole-v0", "apg-again", task_kwargs={"physics": "equations"}, updates=2, num_envs=2,
                      window=4, hidden=(8,), eval_every=1, checkpoint_every=1, eval_episodes=4)
    assert config.settings == APGSettings(num_envs=2, window=4, hidden=(8,))  # no preset: apg's own defaults
    final = train_config(config, tmp_path / "run", progress=False).final
    assert final["update"] == 2 and final["env_steps"] == 2 * 2 * 4
    run = Run(tmp_path / "run")
    assert run.config == config and run.checkpoint_path.name == "checkpoint.npz"
    assert run.columns[-2:] == list(copy.metrics[-2:])  # its own metrics columns, from its entry
    env = chaosgym.make("ChaosCartPole-v0")
    assert run.policy()(np.zeros(env.observation_size, np.float32)).shape == (env.action_size,)
    assert TrainConfig.from_json(config.to_json()) == config
