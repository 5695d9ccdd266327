"""`chaosgym compare` end to end on a tiny budget: every file, with sane contents."""

import argparse
import csv
import json
from pathlib import Path

import gymnasium
import numpy as np
import pytest

import chaosgym
from chaosgym.agents import commands, compare_command as compare
from chaosgym.agents.config import TrainConfig
from chaosgym.presets import PRESETS
from chaosgym.tasks import CartPole
from chaosgym.agents.cli import main


# fast: one small gradient agent (80 env steps per update); slow: with PPO, at the presets' sizes
CASES = [
    pytest.param(["full"], ["--set", "estimator.horizon=20", "--set", "full.batch_size=4"], 240, 320, id="full"),
    pytest.param(["full", "ppo"], [], 4800, 6400, id="full-ppo", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("agents, flags, budget, extended_budget", CASES)
def test_compare_writes_results_summary_and_curves_of_every_agent(agents, flags, budget, extended_budget,
                                                                  tmp_path, monkeypatch, capsys):
    figures = []
    real_close = compare.plt.close
    monkeypatch.setattr(compare.plt, "close", lambda fig: (figures.append(fig), real_close(fig)))
    out = tmp_path / "cmp"
    argv = ["compare", "--tasks", "ChaosCartPole-v0", "--agents", ",".join(agents), "--seeds", "1",
            "--env-steps", str(budget), "--eval-episodes", "4", "--out", str(out), *flags]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert all(f"training {agent} on ChaosCartPole-v0, seed 0 -> {out / 'runs'}" in said for agent in agents), said
    assert "wrote" in said

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for agent in agents:
        curve = [r for r in rows if r["agent"] == agent and r["kind"] == "curve"]
        final = [r for r in rows if r["agent"] == agent and r["kind"] == "final"]
        assert len(curve) >= 2 and len(final) == 1
        assert all(np.isfinite(float(r["eval_score"])) for r in curve + final), f"{agent}: unevaluated rows"
        assert float(curve[0]["env_steps"]) == 0 and 0 < float(curve[-1]["env_steps"]) <= budget + 1024
        times = [float(r["wall_time"]) for r in curve]
        assert times == sorted(times)
        assert -100 <= float(final[0]["eval_score"]) <= 100  # mean cos of the pole, summed over 100 steps

    summary = (out / "summary.md").read_text()
    assert all(f"| {agent} |" in summary for agent in agents) and "Threshold: evaluation score ≥ 50" in summary
    assert (out / "curves_ChaosCartPole-v0.png").stat().st_size > 10_000
    # every run is a run folder of `chaosgym train`, with the settings --set gave
    for agent in agents:
        config = TrainConfig.from_json(json.loads(
            (out / "runs" / f"ChaosCartPole-v0-{agent}-seed0" / "config.json").read_text()))
        assert config.agent == agent and config.env_steps == budget and config.eval_episodes == 4
        if agent == "full":  # --set's values, or the task's preset
            assert (config.settings.batch_size, config.settings.estimator.horizon) == ((4, 20) if flags else (16, 100))

    # score and objective against steps and seconds: one line per agent in each panel, every point
    # finite (SB3 logs unevaluated rows too), each curve to its run's end; one legend for the figure
    [figure] = figures
    assert len(figure.axes) == 4 and len(figure.legends) == 1
    assert [t.get_text() for t in figure.legends[0].get_texts()] == agents
    for axes in figure.axes:
        lines = [line for line in axes.get_lines() if not line.get_label().startswith("_")]
        assert [line.get_label() for line in lines] == agents
        assert all(np.isfinite(line.get_ydata()).all() for line in lines)
    ends = {a: max(float(r["env_steps"]) for r in rows if r["agent"] == a and r["kind"] == "curve") for a in agents}
    assert [line.get_xdata()[-1] for line in figure.axes[0].get_lines()[:len(agents)]] == list(ends.values())
    assert "objective: final_state" in figure.axes[2].get_ylabel()

    # a second call reads the finished runs back instead of training again
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert all(f"reading back {agent} on ChaosCartPole-v0, seed 0" in said for agent in agents), said
    with open(out / "results.csv", newline="") as f:
        assert [r["eval_score"] for r in csv.DictReader(f)] == [r["eval_score"] for r in rows]

    # a larger budget into the same folder extends the runs
    assert main([a if a != str(budget) else str(extended_budget) for a in argv]) == 0
    said = capsys.readouterr().out
    assert all(f"resuming {agent} on ChaosCartPole-v0, seed 0" in said for agent in agents), said
    with open(out / "results.csv", newline="") as f:
        extended = [r for r in csv.DictReader(f) if r["agent"] == "full" and r["kind"] == "curve"]
    assert float(extended[-1]["env_steps"]) == extended_budget


def test_every_gradient_agent_optimises_the_return_it_is_ranked_by():
    # the cart pole reports its final-state loss; compare's agents still optimise the return
    assert chaosgym.make("ChaosCartPole-v0").task.reported_objective == "final_state"
    for agent in ("full", "combined", "es"):
        config = compare.run_config("ChaosCartPole-v0", {}, agent, 0, 4800, {}, {})
        assert config.settings.estimator.objective == "return"
    parser = argparse.ArgumentParser()
    commands.compare_arguments(parser)
    assert "estimator.objective" not in {a.dest for a in parser._actions}


@pytest.mark.parametrize("agent", ["full", "truncated", "apg", "ppo"])
def test_a_task_registered_without_presets_gets_each_agents_defaults(agent):
    class Pole(CartPole):
        pass

    chaosgym.register("TestPole-v0", Pole)
    try:
        assert gymnasium.spec("TestPole-v0").max_episode_steps == Pole.episode_length
        config = compare.run_config("TestPole-v0", {}, agent, 0, 4800, {}, {})
        defaults = TrainConfig(task="TestPole-v0", agent=agent, env_steps=4800).settings  # the agent's own
        assert config.settings == defaults
        assert chaosgym.make("TestPole-v0").observation_size == chaosgym.make("ChaosCartPole-v0").observation_size
    finally:
        del chaosgym.TASKS["TestPole-v0"], PRESETS["TestPole-v0"], gymnasium.registry["TestPole-v0"]


def test_seed_curves_end_where_the_shortest_seed_ends_so_every_point_is_over_every_seed():
    """Running on to the longest seed's end drew one seed alone as the mean (full's curve fell to
    -12 after the other seed ended, while the table said -6.3). The curve is the median over seeds,
    the band their minimum to maximum."""
    short = [{"x": 0, "y": 0.0}, {"x": 10, "y": 10.0}]
    long = [{"x": 0, "y": 2.0}, {"x": 20, "y": 22.0}]
    late = [{"x": 5, "y": 4.0}, {"x": 20, "y": 4.0}]  # SB3 may evaluate first after t = 0
    outlier = [{"x": 0, "y": 100.0}, {"x": 10, "y": 100.0}]
    grid, median, low, high = compare._seed_curves([short, long, outlier], "x", "y", points=3)
    np.testing.assert_allclose(grid, [0, 5, 10])
    np.testing.assert_allclose(median, [2, 7, 12])  # the middle seed's, not pulled up by the outlier
    np.testing.assert_allclose(low, [0, 5, 10])
    np.testing.assert_allclose(high, [100, 100, 100])
    grid, median, _, _ = compare._seed_curves([short, late], "x", "y", points=2)
    np.testing.assert_allclose(grid, [5, 10])
    np.testing.assert_allclose(median, [4.5, 7])


@pytest.mark.parametrize("objective, panels", [("final_state", 4), ("return", 2)])
def test_the_objective_panels_are_dropped_where_the_objective_is_the_score(objective, panels, tmp_path, monkeypatch):
    figures = []
    real_close = compare.plt.close
    monkeypatch.setattr(compare.plt, "close", lambda fig: (figures.append(fig), real_close(fig)))
    rows = [{"task": "T", "agent": "apg", "seed": s, "kind": "curve", "env_steps": e, "wall_time": e / 100,
             "eval_score": e / 10, "eval_objective": -e / 10} for s in (0, 1) for e in (0, 512, 1024)]
    compare.plot_task(rows, "T", ["apg"], tmp_path / "c.png", "T", objective, threshold=50)
    [figure] = figures
    assert len(figure.axes) == panels
    labels = [ax.get_ylabel() + ax.get_title() for ax in figure.axes]
    assert any("objective" in label for label in labels) == (panels == 4)


def test_a_wall_clock_budget_alone_leaves_the_env_steps_unlimited():
    assert commands.CompareConfig().steps_budget() == commands.DEFAULT_ENV_STEPS
    assert commands.CompareConfig().describe() == "100,000 env steps"
    timed = commands.CompareConfig(wall_clock=20.0)
    assert timed.steps_budget() == commands.UNLIMITED_STEPS and timed.describe() == "20 s of training"
    both = commands.CompareConfig(env_steps=5000, wall_clock=20.0)
    assert both.steps_budget() == 5000 and both.describe() == "5,000 env steps or 20 s of training"


def _compare_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    commands.compare_arguments(parser)
    return parser.parse_args(argv)


def test_the_quick_preset_is_a_budget_of_env_steps_so_its_table_does_not_depend_on_the_machine():
    """20 s of training gave apg 758 updates on a quiet CPU and 105-211 on a busy one."""
    quick = commands.compare_config(_compare_args("--quick"))
    assert quick.wall_clock is None and quick.env_steps == 100_000 and quick.seeds == 2
    updates = {}
    for agent in quick.agents.split(","):
        config = compare.run_config(quick.tasks, {}, agent, 0, quick.steps_budget(), {}, {})
        updates[agent] = config.updates if config.spec.budget == "updates" else config.env_steps
    assert updates == {"apg": 195, "shac": 195, "full": 62, "ppo": 100_000}


def test_the_budget_flags_given_with_quick_replace_its_values():
    given = commands.compare_config(_compare_args("--quick", "--agents", "apg", "--seeds", "1", "--env-steps",
                                                 "2048", "--wall-clock", "5", "--tasks", "ChaosAnt-v0"))
    assert given == commands.CompareConfig(tasks="ChaosAnt-v0", agents="apg", seeds=1, env_steps=2048, wall_clock=5.0)
    assert commands.compare_config(_compare_args("--quick", "--seeds", "3")) == commands.CompareConfig(
        **{**commands.QUICK, "seeds": 3})


def test_each_comparison_writes_to_its_own_folder_by_default():
    """runs/compare/<tasks>_<budget>: another comparison never writes over this one."""
    args = _compare_args("--tasks", "ChaosCartPole-v0:num_poles=2,ChaosAnt-v0", "--agents", "apg", "--env-steps", "4096")
    commands.compare_config(args)
    assert args.out == Path("runs") / "compare" / "ChaosCartPole-v0-num_poles2+ChaosAnt-v0_4096-steps"
    args = _compare_args("--quick", "--wall-clock", "20")
    commands.compare_config(args)
    assert args.out == Path("runs") / "compare" / "ChaosCartPole-v0_100000-steps_20s"
    args = _compare_args("--quick", "--out", "mine")
    commands.compare_config(args)
    assert args.out == Path("mine")


def test_set_changes_one_agents_setting_or_every_agents_that_has_it():
    args = _compare_args("--agents", "apg,shac,full", "--set", "apg.num_envs=8", "--set", "learning_rate=0.01",
                         "--set", "window=16", "--set", "estimator.horizon=50", "--set", "shac.lam=0.9")
    commands.compare_config(args)
    assert args.agent_overrides == {
        "apg": {"num_envs": 8, "learning_rate": 0.01, "window": 16},
        "shac": {"learning_rate": 0.01, "window": 16, "lam": 0.9},
        "full": {"learning_rate": 0.01, "estimator.horizon": 50}}
    config = compare.run_config("ChaosCartPole-v0", {}, "apg", 0, 4096, {}, args.agent_overrides["apg"])
    assert (config.settings.num_envs, config.settings.window, config.settings.learning_rate) == (8, 16, 0.01)
    assert config.updates == 4096 // (8 * 16)


@pytest.mark.parametrize("item", ["shac.hidden=(16,16)", "hidden=(16,)"])
def test_set_takes_layer_sizes(item):
    args = _compare_args("--agents", "shac", "--set", item)
    commands.compare_config(args)
    assert args.agent_overrides["shac"]["hidden"] == tuple(int(n) for n in item.partition("(")[2].strip(",)").split(","))


@pytest.mark.parametrize("flags, message", [
    (["--wall-clock", "inf"], ("--wall-clock", "finite number", "inf")),  # the flag parser or compare refuses it
    (["--wall-clock", "nan"], ("--wall-clock", "finite number", "nan")),
    (["--threshold", "nan"], "--threshold expects TASK=SCORE with a finite SCORE"),
    (["--threshold", "ChaosCartPole-v0=nan"], "--threshold expects TASK=SCORE with a finite SCORE"),
    (["--threshold", "ChaosAnt-v0=1500"], "--threshold names ChaosAnt-v0, not among --tasks (ChaosCartPole-v0)"),
    (["--agents", "full,full"], "--agents names full more than once"),
    (["--agents", "ful"], "unknown agent(s) ['ful'] in --agents"),
    (["--tasks", "ChaosCartPole-v0,ChaosCartPole-v0"], "--tasks names ChaosCartPole-v0 more than once"),
    (["--horizon", "20"], "unrecognized arguments: --horizon"),  # an agent's setting is given with --set
    (["--set", "horizon"], "--set expects [AGENT.]SETTING=VALUE, e.g. apg.num_envs=1024; got 'horizon'"),
    (["--set", "num_envs=4"], "--set num_envs=4: no agent of --agents (full) has a setting 'num_envs'"),
    (["--set", "apg.num_envs=4"], "--set apg.num_envs=4: apg is not among --agents (full)"),
    (["--agents", "full,apg", "--set", "full.window=4"], "--set full.window=4: full has no setting 'window'"),
    (["--set", "batch_size=0"], "argument --batch-size: must be a positive integer, got 0"),
    (["--set", "estimator.objective=final_state"], "every agent of a comparison optimises, and is ranked by, the return"),
])
def test_bad_budgets_and_names_are_refused_in_one_line_before_any_folder_exists(flags, message, tmp_path, capsys):
    out = tmp_path / "cmp"
    with pytest.raises(SystemExit) as error:
        main(["compare", "--tasks", "ChaosCartPole-v0", "--agents", "full", "--out", str(out), *flags])
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert all(part in err for part in ((message,) if isinstance(message, str) else message)), err
    assert not out.exists()


def test_the_summary_reports_both_axes_and_compile_time_apart():
    rows = [{"task": "T", "agent": "apg", "seed": s, "kind": k, "env_steps": e, "wall_time": w,
             "eval_score": v, "eval_objective": 0.5, "compile_time": 7.0}
            for s in (0, 1) for k, e, w, v in (("curve", 0, 0.0, -10), ("curve", 512, 1.5, 60),
                                                 ("curve", 1024, 3.0, 70), ("final", 1024, 3.0, 71))]
    table = [line for line in compare.summarise(rows, ["T"], ["apg"], {"T": 50.0}).splitlines() if line.startswith("|")]
    header = [c.strip() for c in table[0].split("|")[1:-1]]
    line = dict(zip(header, (c.strip() for c in table[2].split("|")[1:-1])))
    assert line == {"agent": "apg", "final score": "71.00 ± 0.00", "final objective": "0.500 ± 0.000",
                    "env steps run": "1,024", "training (s)": "3.0", "compile (s)": "7.0",
                    "env steps to threshold": "512", "training s to threshold": "1.5", "seeds reaching": "2/2"}


def test_the_python_compare_is_the_commands_with_its_checks(tmp_path):
    from chaosgym.agents import compare as compare_api

    out = tmp_path / "cmp"
    result = compare_api("ChaosCartPole-v0", ["full"], out, seeds=1, env_steps=240, eval_episodes=4,
                         settings={"estimator.horizon": 20, "full.batch_size": 4}, thresholds={"ChaosCartPole-v0": 50})
    assert result.out == out and "| full |" in result.summary and (out / "summary.md").read_text() == result.summary
    finals = [r for r in result.rows if r["kind"] == "final"]
    assert len(finals) == 1 and finals[0]["agent"] == "full"
    config = TrainConfig.from_json(json.loads((out / "runs" / "ChaosCartPole-v0-full-seed0" / "config.json").read_text()))
    assert config.settings.estimator.horizon == 20 and config.env_steps == 240
    again = compare_api("ChaosCartPole-v0", "full", out, seeds=1, env_steps=240, eval_episodes=4,
                        settings={"estimator.horizon": 20, "full.batch_size": 4})  # read back, not retrained
    assert [r for r in again.rows if r["kind"] == "final"] == finals
    with pytest.raises(chaosgym.validation.UserError, match="unknown agent"):
        compare_api("ChaosCartPole-v0", "nonsense", tmp_path / "x", env_steps=240)
    assert not (tmp_path / "x").exists()
