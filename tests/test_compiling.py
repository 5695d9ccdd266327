"""chaosgym's XLA compile options (`chaosgym.functional.compiling`): the elemental emitters on XLA's
CPU backend where the installed jaxlib has the option, nothing where it does not, the user's say
first, and every program of the trace cache compiled with them."""

from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import chaosgym
from chaosgym.functional import compiling
from chaosgym.functional.trace_cache import UNCACHED, cached_jit


@pytest.fixture
def fresh_options(monkeypatch):
    """`compiler_options()` worked out anew in the test, and again after it."""
    compiling.compiler_options.cache_clear()
    monkeypatch.delenv("CHAOSGYM_CPU_FUSION_EMITTERS", raising=False)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    yield monkeypatch
    compiling.compiler_options.cache_clear()


def test_the_elemental_emitters_where_jaxlib_has_the_option_and_nothing_where_it_does_not(fresh_options):
    if metadata.version("jaxlib").startswith("0.10."):  # the locked jaxlib, where it was measured
        assert compiling.compiler_options() == {"xla_cpu_use_fusion_emitters": False}
    compiling.compiler_options.cache_clear()
    fresh_options.setattr(compiling, "ELEMENTAL_EMITTERS", {"xla_cpu_no_such_option": False})
    assert compiling.compiler_options() == {}  # a jaxlib without it (0.11 removed it) compiles as usual


@pytest.mark.parametrize("variable, value", [("CHAOSGYM_CPU_FUSION_EMITTERS", "1"),
                                             ("XLA_FLAGS", "--xla_cpu_use_fusion_emitters=true")])
def test_the_users_choice_comes_first(fresh_options, variable, value):
    fresh_options.setenv(variable, value)
    assert compiling.compiler_options() == {}


def test_every_program_of_the_trace_cache_is_compiled_with_the_options(monkeypatch):
    # an option XLA does not know fails the compile: the options reached it
    monkeypatch.setattr(compiling, "compiler_options", lambda: {"xla_cpu_no_such_option": True})
    with pytest.raises(Exception, match="xla_cpu_no_such_option"):
        cached_jit(jnp.sin, UNCACHED)(jnp.ones(3))
    with pytest.raises(Exception, match="xla_cpu_no_such_option"):
        cached_jit(jnp.sin, ("test_compiling", "sin")).compile(jnp.ones(3))


def test_a_program_of_the_trace_cache_runs_inside_other_traces():
    """JAX refuses compile options on a jit inside another trace: there it is a plain jit, inlined."""
    f = cached_jit(lambda x: jnp.sin(x) * 2.0, ("test_compiling", "nested"))
    x = jnp.linspace(0.0, 1.0, 3)
    expected = np.asarray(f(x))
    assert jax.eval_shape(lambda: f(jnp.zeros(3))).shape == (3,)
    np.testing.assert_allclose(jax.jit(lambda y: f(y))(x), expected, rtol=1e-6)
    np.testing.assert_allclose(f(x), expected)  # and at the top level again, with the options


def test_a_step_agrees_with_a_plain_jit_to_rounding():
    env = chaosgym.make("ChaosCartPole-v0")
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(0), 4))
    actions = jnp.linspace(-1, 1, 4)[:, None]
    ours = cached_jit(jax.vmap(env.step), UNCACHED)(states, actions)
    plain = jax.jit(jax.vmap(env.step))(states, actions)
    np.testing.assert_allclose(ours.obs, plain.obs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours.reward, plain.reward, rtol=1e-5, atol=1e-6)
