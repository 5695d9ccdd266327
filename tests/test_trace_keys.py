"""Trace-cache keys are derived from every argument of the factory that builds the traced function."""

import dataclasses
import inspect

import pytest

import chaosgym
from chaosgym.agents import apg, shac
from chaosgym.agents.estimators import compiled_update
from chaosgym.agents.loop import carried_core
from chaosgym.agents.settings import SHACSettings
from chaosgym.functional.gradients import EstimatorConfig
from chaosgym.functional.trace_cache import UNCACHED, argument_key, keyed_by_arguments


@keyed_by_arguments
def factory(first, second=2, *, third="c", key):
    return key


def test_a_factory_key_holds_its_name_and_every_argument_defaults_included():
    base = factory(1)
    assert base == factory(1, 2, third="c") == factory(first=1)
    assert len({base, factory(0), factory(1, 3), factory(1, third="d")}) == 4
    assert base[0].endswith("test_trace_keys.factory")
    assert "key" not in inspect.signature(factory).parameters
    with pytest.raises(TypeError):
        factory(1, key="by hand")


def test_an_env_argument_is_keyed_by_its_task_options_and_model(cartpole):
    assert argument_key(cartpole) == cartpole.cache_key
    assert argument_key(chaosgym.make("ChaosCartPole-v0", num_poles=2)) != cartpole.cache_key
    assert argument_key(lambda x: x) == UNCACHED  # not chaosgym's code: never stored


# two carried-state agents as the loop drives them (`chaosgym.agents.interfaces.Carried`), of one settings object
SETTINGS = SHACSettings(num_envs=4, window=5, learning_rate=1e-2, hidden=(8,))
CARRIED = {"shac": shac.carried(SETTINGS), "apg": apg.carried(SETTINGS)}


def changed(value):
    """Another value of the same kind as `value`."""
    if isinstance(value, EstimatorConfig):
        return dataclasses.replace(value, horizon=value.horizon + 1)
    if isinstance(value, SHACSettings):
        return dataclasses.replace(value, window=value.window + 1)
    if isinstance(value, str):
        return {"tanh": "paper"}[value]
    if value is CARRIED["shac"]:
        return CARRIED["apg"]
    if isinstance(value, tuple):
        return value + (4,)
    return value * 2


@pytest.mark.parametrize("build, arguments", [
    (compiled_update, {"estimator": EstimatorConfig("full", horizon=5), "batch_size": 4, "learning_rate": 1e-2,
                       "policy": "tanh"}),
    (carried_core, {"agent": CARRIED["shac"], "settings": SETTINGS}),
], ids=["compiled_update", "carried_core"])
def test_changing_any_argument_of_a_training_factory_changes_its_key(build, arguments, cartpole):
    """Every parameter of the factory is changed in turn (a parameter added later must be too)."""
    keys = lambda built: {built[1].key} if build is compiled_update else {built.init.program.key, built.update.program.key}
    arguments = {"env": cartpole, **arguments}
    assert set(inspect.signature(build).parameters) == set(arguments)
    base = keys(build(**arguments))
    assert None not in base  # a chaosgym task: stored in the trace cache
    others = {"env": chaosgym.make("ChaosCartPole-v0", num_poles=2)}
    for name, value in arguments.items():
        other = keys(build(**{**arguments, name: others.get(name) or changed(value)}))
        assert not other & base, name
