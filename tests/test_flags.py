"""Flags generated from config dataclasses (`chaosgym.flags`): diagnose's `DiagnoseConfig`, and train's
run settings (`RunSettings`) with each agent's own settings. Only argparse and configs here: nothing
is compiled or simulated."""

import argparse
from pathlib import Path

import pytest

from chaosgym import flags
from chaosgym.diagnostics import command as diagnose
from chaosgym.agents import commands
from chaosgym.agents.config import RunSettings
from chaosgym.agents.settings import EstimatorSettings
from chaosgym.diagnostics.command import DiagnoseConfig
from chaosgym.functional.gradients import EstimatorConfig


def parser_of(command) -> argparse.ArgumentParser:
    """The parser a command module's `add_arguments` (or an `add_arguments` function itself) builds."""
    parser = argparse.ArgumentParser(prog="chaosgym")
    getattr(command, "add_arguments", command)(parser)
    return parser


def diagnose_config(argv: list[str]) -> DiagnoseConfig:
    return diagnose.config_from_args(parser_of(diagnose).parse_args(["--out", "runs/x", *argv]))


def test_every_diagnose_setting_is_a_flag_with_help():
    actions = {a.dest: a for a in parser_of(diagnose)._actions if a.dest != "help"}
    paths = {path for path, _, _ in flags.fields(DiagnoseConfig)}
    assert set(actions) == paths
    # every field is a setting, the estimator's through the estimator settings diagnose uses
    top = {path.partition(".")[0] for path in paths}
    assert top == {f for f in DiagnoseConfig.__dataclass_fields__}
    assert {p for p in paths if p.startswith("estimator.")} == {
        "estimator.truncation", "estimator.es_sigma", "estimator.es_pairs", "estimator.remat"}
    # one flag per setting; a boolean is a pair of switches, --x and --no-x
    flag = lambda a: "--" + a.dest.rpartition(".")[2].replace("_", "-")
    assert all(a.help and a.option_strings == ([flag(a), "--no-" + flag(a)[2:]] if isinstance(
        a, argparse.BooleanOptionalAction) else [flag(a)]) for a in actions.values())
    assert actions["out"].required and not any(a.required for d, a in actions.items() if d != "out")
    groups = {g.title: {a.dest for a in g._group_actions} for g in parser_of(diagnose)._action_groups}
    assert groups["gradvar"] >= {"horizons", "estimators", "gradvar_samples", "estimator.truncation", "estimator.remat"}
    assert groups["lyapunov and jacobian"] == {"modes", "num_states", "lyapunov_steps", "lyapunov_k", "transient",
                                               "jacobian_horizon"}


def test_diagnose_keeps_its_defaults_where_they_differ_from_the_estimators():
    config = diagnose_config([])
    assert config == DiagnoseConfig(out=Path("runs/x"))
    # the defaults of the hand-written flags this config replaced
    assert (config.what, config.modes, config.hidden, config.seed, config.task, config.task_kwargs) == (
        ("lyapunov", "jacobian", "gradvar", "landscape"), ("unforced", "policy"), (100, 100), 0, None, None)
    assert (config.num_states, config.lyapunov_steps, config.lyapunov_k, config.transient,
            config.jacobian_horizon) == (8, 1000, 2, 100, 100)
    assert (config.horizons, config.weight_scales, config.estimators, config.gradvar_samples, config.chunk) == (
        (10, 30, 100), (1.0,), ("full", "es"), 16, None)
    assert (config.estimator.truncation, config.estimator.es_sigma, config.estimator.es_pairs,
            config.estimator.remat) == (10, 0.05, 16, False)
    assert EstimatorConfig().truncation is None  # diagnose's own default, not the estimator's
    assert (config.landscape_horizons, config.landscape_points, config.landscape_plane, config.landscape_radius,
            config.landscape_states, config.landscape_chunk) == ((10, 30, 100), 41, 11, 1.0, 4, None)
    helps = {a.dest: a.help for a in parser_of(diagnose)._actions}
    assert helps["estimator.truncation"].endswith("(default: 10)") and helps["seed"].endswith("(default: 0)")
    assert helps["chunk"].endswith("(default: all)") and "default" not in helps["task"]


def test_flags_given_reach_the_config():
    config = diagnose_config([
        "--task", "ChaosDoublePendulum-v0", "--task-kwargs", "num_links=3", "--what", "gradvar,lyapunov",
        "--hidden", "4,4", "--seed", "7", "--start-qpos=-1.5,0", "--modes", "policy",
        "--weight-scales", "0.1,3", "--estimators", "truncated,es", "--truncation", "5", "--es-sigma", "0.1",
        "--es-pairs", "3", "--remat", "--chunk", "2", "--landscape-radius", "0.5"])
    assert (config.task, config.task_kwargs, config.what, config.hidden, config.seed) == (
        "ChaosDoublePendulum-v0", {"num_links": 3}, ("gradvar", "lyapunov"), (4, 4), 7)
    assert (config.start_qpos, config.no_termination, config.no_progress, config.modes) == (
        (-1.5, 0.0), False, False, ("policy",))
    assert (config.weight_scales, config.estimators, config.chunk, config.landscape_radius) == (
        (0.1, 3.0), ("truncated", "es"), 2, 0.5)
    assert config.estimator == EstimatorConfig(truncation=5, es_sigma=0.1, es_pairs=3, remat=True)
    assert config.out == Path("runs/x") and config.gradvar_samples == 16


@pytest.mark.parametrize("switch", ["no_termination", "no_progress"])
def test_a_switch_named_no_something_sets_its_setting(switch):
    assert getattr(diagnose_config(["--" + switch.replace("_", "-")]), switch) is True


@pytest.mark.parametrize("argv, message", [
    (["--hidden", "a,b"], "expected comma-separated layer sizes, e.g. 100,100; got 'a,b'"),
    (["--horizons", ""], "expected comma-separated horizons"),
    (["--weight-scales", "1,x"], "expected comma-separated positive numbers, e.g. 0.1,1,3"),
    (["--start-qpos", "1,x"], "expected comma-separated qpos values, e.g. 1.5708,0"),
    (["--num-states", "many"], "invalid int value: 'many'"),
    (["--task-kwargs", "num_links"], "NAME=VALUE"),
    # every float flag is finite: nan and inf would never compare or never end
    (["--es-sigma", "nan"], "argument --es-sigma: expected a finite number; got 'nan'"),
    (["--landscape-radius", "inf"], "argument --landscape-radius: expected a finite number; got 'inf'"),
    (["--weight-scales", "1,nan"], "expected comma-separated positive numbers"),
    (["--start-qpos", "inf,0"], "expected comma-separated qpos values"),
    # an empty item is a typo, not a layer fewer
    (["--hidden", "8,,8"], "expected comma-separated layer sizes, e.g. 100,100; got '8,,8'"),
    (["--horizons", "10,"], "expected comma-separated horizons"),
])
def test_malformed_flags_are_refused_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        diagnose_config(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_out_is_required(capsys):
    with pytest.raises(SystemExit):
        parser_of(diagnose).parse_args(["--task", "ChaosAnt-v0"])
    assert "the following arguments are required: --out" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--task", "ChaosMoon-v0"], "unknown task id 'ChaosMoon-v0'; valid ids: "),  # or module:TaskId of your own
    (["--what", "lyapunov,chaos"], "what must be one or more of lyapunov, jacobian, gradvar, landscape"),
    (["--modes", "forced"], "modes must be one or more of unforced, policy"),
    (["--estimators", "full,adam"], "estimators must be one or more of full, truncated"),
    (["--hidden", "4,0"], "hidden must be one or more positive integers"),
    (["--horizons", "10,-3"], "horizons must be one or more positive integers"),
    (["--num-states", "0"], "num_states must be a positive integer, got 0"),
    (["--lyapunov-k", "0"], "lyapunov_k must be a positive integer"),
    (["--transient", "-1"], "transient must be an integer >= 0"),
    (["--landscape-plane", "-2"], "landscape_plane must be an integer >= 0"),
    (["--chunk", "0"], "chunk must be a positive integer, or None"),
    (["--truncation", "0"], "truncation must be a positive integer"),
    (["--es-pairs", "0"], "es_pairs must be a positive integer"),
    (["--es-sigma", "-1"], "es_sigma must be a finite number > 0"),
    (["--weight-scales", "0,1"], "weight_scales must be one or more finite numbers > 0"),
    (["--landscape-radius", "0"], "landscape_radius must be a finite number > 0"),
    (["--gradvar-samples", "2"], "gradvar_samples must be an integer >= 3"),
])
def test_bad_values_get_an_error_that_says_what_was_expected(argv, message):
    with pytest.raises(ValueError, match=message):
        diagnose_config(argv)


def test_two_gradvar_samples_are_fine_when_gradvar_does_not_run():
    assert diagnose_config(["--what", "lyapunov", "--gradvar-samples", "2"]).gradvar_samples == 2


def test_the_diagnose_command_reports_a_bad_value_in_one_line(tmp_path, capsys):
    from chaosgym.agents.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["diagnose", "--out", str(tmp_path / "out"), "--what", "gradvar", "--gradvar-samples", "1"])
    assert exit_info.value.code == 2
    # the error names the flag the user typed, not the config field
    assert "chaosgym diagnose: error: argument --gradvar-samples: must be an integer >= 3" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


RUN_FLAGS = ["--task", "--agent", "--task-kwargs", "--seed", "--updates", "--env-steps", "--eval-every",
             "--eval-episodes", "--eval-seed", "--checkpoint-every"]
COMMAND_FLAGS = ["--out", "--resume", "--no-progress"]
AGENT_FLAGS = {
    None: [],  # without --agent: the run's flags, and a pointer to each agent's
    # an estimator's flags are those it reads (its spec's): full takes no truncation window, no ES settings
    "full": ["--batch-size", "--learning-rate", "--hidden", "--policy", "--horizon", "--objective",
             "--remat", "--no-remat", "--clip-norm", "--clip-value"],
    "apg": ["--num-envs", "--window", "--learning-rate", "--lr-schedule", "--lr-final", "--lr-decay",
            "--decay-updates", "--max-grad-norm", "--clip-value", "--b1", "--b2", "--hidden", "--activation",
            "--layer-norm", "--no-layer-norm", "--policy", "--log-std-init", "--init-output-scale",
            "--normalize-observations", "--no-normalize-observations"],
}


@pytest.mark.parametrize("agent", list(AGENT_FLAGS))
def test_train_flags_are_the_runs_then_the_agents_own(agent, capsys):
    parser = argparse.ArgumentParser(prog="chaosgym")
    commands.train_arguments(parser, [] if agent is None else ["--agent", agent])
    listed = [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")]
    assert listed == RUN_FLAGS + AGENT_FLAGS[agent] + COMMAND_FLAGS
    helps = {s: a.help for a in parser._actions for s in a.option_strings}
    # a required flag shows no default beside it, nor an empty default
    assert helps["--task"] == "task id (or module:TaskId of your own)"
    assert helps["--agent"] == "gradient estimator, carried-state agent, SB3 or Brax baseline (chaosgym.agents.AGENTS)"
    assert helps["--task-kwargs"] == "task options, e.g. num_poles=3"
    assert helps["--eval-every"] == "updates between evaluations (gradient agents) (default: 10)"
    if agent == "full":
        assert helps["--batch-size"] == "initial states per update (default: 16)"
        assert helps["--hidden"] == "hidden layer sizes of the policy, e.g. 100,100 (default: 100,100)"
        assert helps["--objective"].endswith("(default: return)")
    if agent == "apg":
        assert helps["--hidden"] == "hidden layer sizes of the actor, e.g. 64,64 (default: 64,64)"
        assert helps["--max-grad-norm"].endswith("(none: no clipping) (default: 1.0)")


def test_train_flags_given_reach_the_settings_they_name(capsys):
    parser = argparse.ArgumentParser(prog="chaosgym")
    commands.train_arguments(parser, ["--agent", "es"])
    args = parser.parse_args(["--task", "ChaosAnt-v0", "--agent", "es", "--out", "x", "--es-pairs", "4",
                              "--es-rank-shaping", "--clip-norm", "none"])
    assert flags.given(args, RunSettings) == {"task": "ChaosAnt-v0", "agent": "es"}
    assert flags.given(args, EstimatorSettings) == {"estimator.es_pairs": 4, "estimator.es_rank_shaping": True,
                                                    "estimator.clip_norm": None}
    assert commands.given_settings(args) == {**flags.given(args, RunSettings), **flags.given(args, EstimatorSettings)}
    with pytest.raises(SystemExit):
        parser.parse_args(["--task", "ChaosAnt-v0", "--agent", "es", "--out", "x", "--hidden", "a,b"])
    assert "expected comma-separated layer sizes, e.g. 100,100; got 'a,b'" in capsys.readouterr().err


def test_build_fills_in_the_defaults_of_nested_settings():
    config = flags.build(DiagnoseConfig, {"out": "o", "estimator.es_pairs": 2})
    assert config.estimator == EstimatorConfig(truncation=10, es_pairs=2) and config.out == Path("o")
    assert flags.replace(config, {"seed": 3, "estimator.remat": True}).estimator.remat is True


@pytest.mark.parametrize("command", [["demo"], ["train"], ["train", "--agent", "apg"], ["train", "--agent", "ppo"],
                                     ["train", "--agent", "brax-apg"], ["compare"], ["reproduce"], ["render"],
                                     ["diagnose"]], ids=" ".join)
def test_every_commands_help_states_each_default_once_and_never_none(command, capsys):
    from chaosgym.agents.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert exit_.value.code == 0 and "--help" in text
    assert "(default: None)" not in text
    for option in text.split(" --")[1:]:
        assert option.count("(default:") <= 1, option
