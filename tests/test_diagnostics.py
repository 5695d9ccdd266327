"""Validation of `chaosgym.diagnostics.measures` on systems whose answers are known, and of its CLI.

The MJX tests compile for tens of seconds each on CPU; the CLI test reuses the compiled functions
of the tests before it (same shapes and settings), so keep their settings in step.
"""

import pickle
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

import chaosgym
from chaosgym.functional.policies import init_policy, mlp_policy
from chaosgym.diagnostics import measures as diagnostics
from chaosgym.agents.cli import main
from chaosgym.functional.gradients import EstimatorConfig, make_estimator
from chaosgym.functional.env import Env, Task

POLICY_HIDDEN = (16,)
GRADIENT_SAMPLES, ES_PAIRS, HORIZONS = 8, 8, (100, 300)
LYAPUNOV_STARTS, LYAPUNOV_STEPS, LYAPUNOV_K, TRANSIENT = 8, 1000, 2, 100


def test_linear_map_exponents_are_log_eigenvalues():
    eigenvalues = jnp.array([2.0, 1.0, 0.5, 0.1])
    basis = jax.random.normal(jax.random.key(1), (4, 4))  # not orthogonal: a non-normal map
    matrix = basis @ jnp.diag(eigenvalues) @ jnp.linalg.inv(basis)
    step = lambda carry, x: (carry, matrix @ x)
    result = diagnostics.map_lyapunov_exponents(step, None, jnp.ones(4), num_steps=2000, k=4, transient=50)
    np.testing.assert_allclose(result.exponents, jnp.log(eigenvalues), atol=0.01)
    assert jnp.all(result.stderr < 0.01)

    spectrum = diagnostics.map_jacobian_spectrum(step, None, jnp.ones(4), horizon=200)
    np.testing.assert_allclose(jnp.abs(spectrum.eigenvalues[0]), eigenvalues, rtol=1e-3)
    np.testing.assert_allclose(spectrum.singular_values[0], jnp.linalg.svd(matrix, compute_uv=False), rtol=1e-3)
    # the norm of A^t grows like 2^t up to a constant set by the eigenbasis
    growth = (spectrum.log_norm_product[-1] - spectrum.log_norm_product[99]) / 100
    assert abs(growth - jnp.log(2.0)) < 1e-3


DAMPING = 0.5
DAMPED_PENDULUM = f"""
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <body pos="0 0 1">
      <joint name="hinge" type="hinge" axis="0 1 0" damping="{DAMPING}"/>
      <geom type="capsule" fromto="0 0 0 0 0 -0.5" size="0.02" mass="1"/>
    </body>
  </worldbody>
  <actuator><motor joint="hinge" ctrlrange="-1 1"/></actuator>
</mujoco>
"""


class DampedPendulum(Task):
    frame_skip = 1
    episode_length = 100

    def mj_model(self):
        return mujoco.MjModel.from_xml_string(DAMPED_PENDULUM)

    def initial_state(self, key, model):
        return jax.random.uniform(key, (1,), minval=0.5, maxval=1.5), jnp.zeros(1)

    def observation(self, data):
        return jnp.concatenate([data.qpos, data.qvel])

    def reward(self, data, action, next_data):
        return jnp.zeros(()), {}


@pytest.mark.slow  # long Lyapunov run
def test_damped_pendulum_exponent_is_its_decay_rate():
    env = Env(DampedPendulum())
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 2))
    result = diagnostics.lyapunov_exponents(env, states, num_steps=1000, k=1, transient=TRANSIENT)
    # the underdamped pendulum near rest decays like exp(-b t / 2I), I its (constant) inertia
    decay_rate = -DAMPING / (2 * env.mj_model.dof_M0[0])
    assert jnp.all(result.exponents[:, 0] < 0)
    np.testing.assert_allclose(result.exponents[:, 0], decay_rate, rtol=0.1)


class FallingPendulum(DampedPendulum):
    """The damped pendulum earning 1 per step, whose episode terminates on its first step."""

    def reward(self, data, action, next_data):
        return jnp.ones(()), {}

    def terminated(self, data):
        return jnp.array(True)


@pytest.mark.slow  # two 100-step gradient programs
def test_loss_is_summed_over_the_whole_unroll_only_without_termination():
    env = Env(FallingPendulum())
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size, (4,))
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(1), 3))
    horizons = (5, 20)
    ended = diagnostics.gradient_variance(env, mlp_policy, params, states, horizons, ("full",))
    unending = diagnostics.gradient_variance(diagnostics.without_termination(env), mlp_policy, params, states,
                                             horizons, ("full",))
    for h in horizons:
        assert ended["full", h].summary()["loss_mean"] == -1.0  # the first step's reward, then the episode ended
        assert unending["full", h].summary()["loss_mean"] == -float(h)  # summed, not averaged, over h steps
    assert not diagnostics.without_termination(env).task.terminated(None)
    assert isinstance(diagnostics.without_termination(env).task, FallingPendulum)


class RewardedPendulum(DampedPendulum):
    """The damped pendulum earning its height, so that its loss has a gradient."""

    def reward(self, data, action, next_data):
        return -jnp.cos(next_data.qpos[0]), {}


# fast: the cart pole integrated from its closed-form equations (compiles in seconds); slow: on MJX
GRADIENT_SYSTEMS = [("cartpole_equations", (3, 6)), pytest.param("damped_pendulum_mjx", (7, 30), marks=pytest.mark.slow)]


@pytest.mark.parametrize("system, horizons", GRADIENT_SYSTEMS)
@pytest.mark.parametrize("name, rank_shaping", [("full", False), ("combined", False), ("es", True),
                                                pytest.param("es", False, marks=pytest.mark.slow)])
def test_gradients_at_every_horizon_from_one_unroll_equal_the_estimators(system, horizons, name, rank_shaping):
    env = chaosgym.make("ChaosCartPole-v0", physics="equations") if system == "cartpole_equations" \
        else Env(RewardedPendulum())
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size, (8,))
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(1), 3))
    key = jax.random.key(2)
    samples = diagnostics.gradient_samples(env, mlp_policy, params, states, name, horizons, key, es_pairs=4,
                                           es_rank_shaping=rank_shaping)
    for h in horizons:
        estimate = jax.jit(make_estimator(env, mlp_policy, EstimatorConfig(name=name, horizon=h, es_pairs=4,
                                                                           es_rank_shaping=rank_shaping)))
        for i, k in enumerate(jax.random.split(key, 3)):
            grad, _ = estimate(params, jax.tree.map(lambda x: x[i:i + 1], states), k)
            flat = np.concatenate([np.ravel(x) for x in jax.tree.leaves(grad)])
            assert np.abs(flat).max() > 0, "the test problem must have a gradient"
            np.testing.assert_allclose(samples[h].samples[i], flat, rtol=1e-4, atol=1e-4 * np.abs(flat).max())


def test_signal_to_noise_of_a_known_distribution():
    dimension, samples = 400, 40
    mean = np.zeros(dimension)
    mean[0] = 4.0  # SNR = |mean|^2 / (dimension * variance) = 16 / 400
    g = mean + np.random.default_rng(0).normal(size=(samples, dimension))
    snr, stderr = diagnostics.signal_to_noise(g @ g.T)
    assert abs(snr - 0.04) < 2.5 * stderr and stderr < 0.01, (snr, stderr)
    # pure noise: an estimate within its error of zero, negative as often as not
    noise = np.random.default_rng(1).normal(size=(samples, dimension))
    snr, stderr = diagnostics.signal_to_noise(noise @ noise.T)
    assert abs(snr) < 2.5 * stderr, (snr, stderr)
    # the same numbers as the definition: |mean|^2 less tr Cov / N, over tr Cov
    trace = np.sum(np.var(g, axis=0, ddof=1))
    np.testing.assert_allclose(diagnostics.signal_to_noise(g @ g.T)[0],
                               (np.sum(g.mean(0) ** 2) - trace / samples) / trace, rtol=1e-10)
    with pytest.raises(ValueError, match="at least 3 samples"):
        diagnostics.signal_to_noise(g[:2] @ g[:2].T)


@pytest.mark.slow  # long Lyapunov runs
def test_larger_policy_weights_make_the_cart_pole_closed_loop_chaotic():
    env = chaosgym.make("ChaosCartPole-v0")
    assert env.observation_size == 4 and env.task.force_scale == 1000.0  # the paper's raw state; newtons per action
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size)
    states = jax.vmap(env.reset)(jax.random.split(jax.random.key(1), 4))
    exponents = {}
    for scale in (0.1, 3.0):
        result = diagnostics.lyapunov_exponents(env, states, 300, 1, policy=mlp_policy, transient=50,
                                                params=diagnostics.scale_weights(params, scale))
        exponents[scale] = diagnostics.mean_and_stderr(result.exponents[:, 0])
    (weak, weak_stderr), (strong, strong_stderr) = exponents[0.1], exponents[3.0]
    # weights x0.1 push ~1 N: near the marginally stable hanging poles; x3 push hundreds: chaotic
    assert abs(weak) < 1.0 and strong > 5.0 and strong - weak > 3 * (weak_stderr + strong_stderr), exponents


def raised_double_pendulum(count: int, qpos: tuple[float, float], key) -> tuple[chaosgym.Env, chaosgym.State]:
    """`count` resting starts of the unforced double pendulum with the base angle spread by
    U(-0.1, 0.1) around `qpos` (angle 0 is upright)."""
    env = chaosgym.make("ChaosDoublePendulum-v0")
    states = jax.vmap(env.reset)(jax.random.split(key, count))
    spread = jax.random.uniform(key, (count,), minval=-0.1, maxval=0.1)
    qpos = jnp.asarray(qpos) + jnp.stack([spread, jnp.zeros(count)], axis=1)
    return env, states.replace(data=states.data.replace(qpos=qpos, qvel=jnp.zeros_like(qpos)))


@pytest.mark.slow  # long Lyapunov run
def test_unforced_double_pendulum_from_a_raised_start_is_chaotic():
    env, states = raised_double_pendulum(LYAPUNOV_STARTS, (jnp.pi / 2, 0.0), jax.random.key(0))  # both links horizontal
    result = diagnostics.lyapunov_exponents(env, states, LYAPUNOV_STEPS, LYAPUNOV_K, transient=TRANSIENT)
    mean, stderr = diagnostics.mean_and_stderr(result.exponents[:, 0])
    assert mean > 0.2 and mean > 3 * stderr, (mean, stderr)


@pytest.mark.slow  # gradients at three horizons
def test_backpropagated_gradient_explodes_with_horizon_while_es_stays_bounded():
    env, states = raised_double_pendulum(GRADIENT_SAMPLES, (0.5, 0.5), jax.random.key(0))
    params = init_policy(jax.random.key(1), env.observation_size, env.action_size, POLICY_HIDDEN)
    # a weak policy (actions ~0.1) keeps the closed loop close to the chaotic unforced chain
    params[-1] = (0.1 * params[-1][0], params[-1][1])
    stats = diagnostics.gradient_variance(env, mlp_policy, params, states, HORIZONS, ("full", "es"),
                                          jax.random.key(2), es_pairs=ES_PAIRS)
    median = {key: s.summary()["norm_median"] for key, s in stats.items()}
    short, long = HORIZONS
    assert all(s.summary()["finite_fraction"] == 1.0 for s in stats.values())
    # the loss is summed over the unroll, so any estimate's scale grows like the horizon; per unit
    # of that scale, BPTT's gradient explodes and ES's stays bounded
    assert median["full", long] / long > 10 * median["full", short] / short, median
    assert median["es", long] / long < 4 * median["es", short] / short, median
    assert stats["full", long].summary()["variance"] > 100 * stats["es", long].summary()["variance"]


@pytest.mark.slow  # every diagnostic's program
def test_cli_writes_every_table_and_plot(tmp_path, capsys):
    args = ["diagnose", "--task", "ChaosDoublePendulum-v0", "--out", str(tmp_path), "--no-progress",
            "--hidden", ",".join(map(str, POLICY_HIDDEN)),
            "--num-states", str(LYAPUNOV_STARTS), "--lyapunov-steps", str(LYAPUNOV_STEPS),
            "--lyapunov-k", str(LYAPUNOV_K), "--transient", str(TRANSIENT), "--jacobian-horizon", "20",
            "--horizons", ",".join(map(str, HORIZONS)), "--gradvar-samples", str(GRADIENT_SAMPLES),
            "--es-pairs", str(ES_PAIRS), "--weight-scales", "0.1,1", "--no-termination",
            "--landscape-horizons", "10,30", "--landscape-points", "5", "--landscape-plane", "3", "--landscape-states", "2"]
    assert main(args) == 0
    for name in ("lyapunov.csv", "lyapunov_running.csv", "jacobian.csv", "gradvar.csv", "weight_scales.csv",
                 "landscape_1d.csv", "landscape_2d.csv", "lyapunov.png", "jacobian.png", "gradvar.png", "landscape.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert "maximal Lyapunov exponent (unforced)" in capsys.readouterr().out
    gradvar = np.genfromtxt(tmp_path / "gradvar.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert len(gradvar) == 2 * 2 * len(HORIZONS) and set(gradvar["weight_scale"]) == {0.1, 1.0}
    assert np.all(np.isfinite(gradvar["snr"])) and np.all(gradvar["snr_stderr"] > 0)
    scales = np.genfromtxt(tmp_path / "weight_scales.csv", delimiter=",", names=True)
    assert list(scales["weight_scale"]) == [0.1, 1.0] and np.all(np.isfinite(scales["lyapunov"]))
    # the centre of both landscape slices is the unperturbed policy's loss
    line = np.loadtxt(tmp_path / "landscape_1d.csv", delimiter=",", skiprows=1)
    plane = np.loadtxt(tmp_path / "landscape_2d.csv", delimiter=",", skiprows=1)
    np.testing.assert_allclose(line[2, 2], plane[4, 3], rtol=1e-5)
    np.testing.assert_allclose(line[5 + 2, 2], plane[9 + 4, 3], rtol=1e-5)  # horizon 30, from the same unroll


@pytest.mark.slow  # trains, then runs diagnose's programs
def test_cli_diagnoses_a_checkpointed_policy(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    env = chaosgym.make("ChaosDoublePendulum-v0")
    params = init_policy(jax.random.key(3), env.observation_size, env.action_size, POLICY_HIDDEN)
    (run / "config.json").write_text('{"task": "ChaosDoublePendulum-v0", "task_kwargs": {}}')
    (run / "checkpoint.pkl").write_bytes(pickle.dumps({"params": jax.device_get(params), "update": 1}))
    args = ["diagnose", "--policy", str(run / "checkpoint.pkl"), "--out", str(tmp_path / "out"), "--no-progress",
            "--what", "lyapunov", "--modes", "policy", "--num-states", str(LYAPUNOV_STARTS),
            "--lyapunov-steps", str(LYAPUNOV_STEPS), "--lyapunov-k", str(LYAPUNOV_K), "--transient", str(TRANSIENT)]
    assert main(args) == 0
    rows = np.genfromtxt(tmp_path / "out" / "lyapunov.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert len(rows) == LYAPUNOV_STARTS * LYAPUNOV_K and set(rows["mode"]) == {"policy"}


def test_cli_rejects_a_policy_of_another_task(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"task": "ChaosAnt-v0"}')
    (tmp_path / "run" / "checkpoint.pkl").write_bytes(pickle.dumps({"params": []}))
    with pytest.raises(SystemExit):
        main(["diagnose", "--task", "ChaosCartPole-v0", "--policy", str(tmp_path / "run"), "--out", str(tmp_path)])


# ---- what diagnose writes, and where -------------------------------------------------------------

FAST = ["diagnose", "--task", "ChaosCartPole-v0", "--what", "lyapunov,gradvar"]


def test_an_earlier_diagnose_a_training_run_and_a_link_are_refused_before_anything_runs(tmp_path, capsys):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "weight_scales.csv").write_text("the earlier results")
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.csv").write_text("update\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "lyapunov.png").symlink_to(tmp_path / "important.png")
    for out, extra, message in [(earlier, [], "holds results of an earlier diagnose (weight_scales.csv)"),
                                (run, ["--overwrite"], "is the folder of a `chaosgym train` run"),
                                (linked, ["--overwrite"], "symbolic link")]:
        with pytest.raises(SystemExit) as exit_info:
            main([*FAST, "--out", str(out), *extra])
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in error and error.count("\n") == 1, error
    assert (earlier / "weight_scales.csv").read_text() == "the earlier results"
    assert sorted(p.name for p in run.iterdir()) == ["config.json", "metrics.csv"]
    assert not (tmp_path / "important.png").exists()


# a file-size limit (RLIMIT_FSIZE, as a full disk) hit while diagnose writes a table and a figure
LIMITED = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    import matplotlib.pyplot as plt
    from chaosgym.diagnostics import command, plots

    folder = Path(sys.argv[1])
    for name in ("gradvar.csv", "gradvar.png"):
        (folder / name).write_bytes(b"previous")
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
    for name, write in [("gradvar.csv", lambda path: command._write_csv(path, ["a"], [[i] for i in range(1000)])),
                        ("gradvar.png", lambda path: plots._save(plt.subplots(figsize=(4, 4))[0], path))]:
        try:
            write(folder / name)
        except OSError as error:
            print(error.filename, (folder / name).read_bytes().decode())
    print(sorted(p.name for p in folder.iterdir()))
""")


def test_a_full_disk_keeps_diagnoses_previous_files_and_names_them(tmp_path):
    result = subprocess.run([sys.executable, "-c", LIMITED, str(tmp_path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == [f"{tmp_path / 'gradvar.csv'} previous", f"{tmp_path / 'gradvar.png'} previous",
                                          "['gradvar.csv', 'gradvar.png']"]


def test_the_console_tables_and_legends_give_one_lyapunov_exponent_from_one_computation(tmp_path, capsys,
                                                                                       monkeypatch):
    """`--what lyapunov,gradvar` once printed 8.191 ± 0.043 for the policy's maximal exponent while
    weight_scales.csv and the gradvar legend said 8.30 ± 0.06: two runs from different states."""
    from chaosgym.diagnostics import plots

    legends = []
    drawn = plots.plot_gradient_variance
    monkeypatch.setattr(plots, "plot_gradient_variance", lambda stats, exponents, *rest: legends.append(
        {scale: plots.exponent_text(*values[:2]) for scale, values in exponents.items()}) or drawn(stats, exponents, *rest))
    assert main([*FAST, "--task-kwargs", "physics=equations", "--out", str(tmp_path), "--hidden", "8",
                 "--num-states", "3", "--lyapunov-steps", "40", "--transient", "10", "--horizons", "5,10",
                 "--gradvar-samples", "3", "--es-pairs", "2", "--weight-scales", "0.5,1"]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("maximal Lyapunov exponent")]
    # each quantity once: the open loop, the policy (weights x1), and the policy with weights x0.5
    assert len(lines) == 3 and sum("(policy)" in line for line in lines) == 1, out
    console = next(line for line in lines if "(policy)" in line).split(": ", 1)[1]
    scales = np.genfromtxt(tmp_path / "weight_scales.csv", delimiter=",", names=True)
    summary = np.genfromtxt(tmp_path / "lyapunov_summary.csv", delimiter=",", names=True, dtype=None, encoding=None)
    at_one = scales[scales["weight_scale"] == 1.0][0]
    policy = summary[(summary["mode"] == "policy") & (summary["index"] == 1)][0]
    assert (at_one["lyapunov"], at_one["lyapunov_stderr"]) == (policy["exponent"], policy["stderr"])
    assert console == plots.exponent_text(at_one["lyapunov"], at_one["lyapunov_stderr"]) == legends[0][1.0]
    # and it said what it computed before each part
    for part in ("lyapunov (unforced): the top 2 exponent(s) from 3 states", "lyapunov (policy, weights ×0.5)",
                 "gradvar (full, es, weights ×1): a gradient from each of 3 states at horizons 5, 10"):
        assert part in err, err
    with pytest.raises(SystemExit):  # a second diagnose into the same folder
        main([*FAST, "--out", str(tmp_path)])
    assert "--overwrite" in capsys.readouterr().err


def test_runs_in_stretches_and_chunks_with_progress_give_the_numbers_of_one_run(capsys):
    """The progress bars cost no accuracy: a Lyapunov run in stretches continues exactly, and
    gradients in chunks of states (the last one padded) are those of all states at once."""
    env = chaosgym.make("ChaosCartPole-v0", physics="equations")
    params = init_policy(jax.random.key(0), env.observation_size, env.action_size, (8,))
    states = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(1), 3))
    progress = diagnostics.Progress(bars=True, refresh_s=0.01)
    whole = diagnostics.lyapunov_exponents(env, states, 45, 2, policy=mlp_policy, params=params, transient=5)
    stretches = diagnostics.lyapunov_exponents(env, states, 45, 2, policy=mlp_policy, params=params, transient=5,
                                               progress=progress, label="stretches")
    for a, b in zip(whole, stretches, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    at_once = diagnostics.gradient_samples(env, mlp_policy, params, states, "full", (4, 8), jax.random.key(2))
    chunked = diagnostics.gradient_samples(env, mlp_policy, params, states, "full", (4, 8), jax.random.key(2),
                                           chunk=2, progress=progress)
    for h in (4, 8):
        np.testing.assert_allclose(chunked[h].samples, at_once[h].samples, rtol=1e-5)
        np.testing.assert_allclose(chunked[h].losses, at_once[h].losses, rtol=1e-6)
    err = capsys.readouterr().err
    assert "stretches: 100%" in err and "full: 100%" in err and "3/3" in err
