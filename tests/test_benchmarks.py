"""Every benchmark script runs to its table at tiny sizes, so that none can rot unnoticed
(`benchmarks/sb3_throughput.py` once raised TypeError for weeks after an API change).

Each script runs as a user runs it: a fresh process from the repository root. Those that compile
MJX programs (tens of seconds each on a 2-core CPU) are in the slow tier.
"""

import os
import subprocess
import sys
from pathlib import Path

import mujoco
import pytest

import chaosgym

ROOT = Path(__file__).resolve().parent.parent
# speed measurements (benchmarks/) and research scripts (experiments/)
FOLDERS = ("benchmarks", "experiments")
slow = pytest.mark.slow


def brax_like_ant(tmp: Path) -> list[str]:
    """ant_physics.py compares against Brax's ant.xml (brax is not a dependency): our Ant with
    Brax's `init_qpos` numeric stands in for it."""
    model = chaosgym.make("ChaosAnt-v0").mj_model
    spec = mujoco.MjSpec.from_file(str(ROOT / "assets" / "ant.xml"))
    spec.add_numeric(name="init_qpos", data=list(model.key("home").qpos))
    (tmp / "ant.xml").write_text(spec.to_xml())
    return ["--brax-xml", str(tmp / "ant.xml")]


# script -> (tiny-size arguments, a function of the test's tmp folder giving more, text its output must hold, marks)
def tiny_comparison(tmp: Path) -> list[str]:
    """policy_diagnostics.py reads a comparison's run folders: a gradient agent's and PPO's, tiny."""
    command = [sys.executable, "-m", "chaosgym.agents.cli", "compare", "--tasks", "ChaosCartPole-v0", "--agents",
               "full,ppo", "--seeds", "1", "--env-steps", "64", "--eval-episodes", "1", "--set",
               "estimator.horizon=16", "--set", "full.batch_size=4", "--set", "ppo.num_envs=2", "--set",
               "ppo.n_steps=16", "--set", "ppo.batch_size=16", "--set", "ppo.n_epochs=1",
               "--out", str(tmp / "cmp")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    subprocess.run(command, cwd=tmp, env=env, check=True, capture_output=True, timeout=1200)
    return ["--compare", str(tmp / "cmp"), "--out", str(tmp / "diag")]


def two_compare_results(tmp: Path) -> list[str]:
    """merge_compare.py's input: two compare commands' results.csv, the second replacing apg's seed 0."""
    header = "task,agent,seed,kind,env_steps,wall_time,eval_score,eval_objective,compile_time\n"
    rows = {"apg": "T,apg,0,curve,0,0,1,-1,\nT,apg,0,curve,10,1,{s},-{s},\nT,apg,0,final,10,1,{s},-{s},2\n",
            "ppo": "T,ppo,0,curve,0,0,1,-1,\nT,ppo,0,curve,10,1,3,-3,\nT,ppo,0,final,10,1,3,-3,1\n"}
    (tmp / "a.csv").write_text(header + rows["apg"].format(s=5) + rows["ppo"])
    (tmp / "b.csv").write_text(header + rows["apg"].format(s=7))
    return [str(tmp / "a.csv"), str(tmp / "b.csv"), "--out", str(tmp / "merged"), "--title", "t", "--threshold", "6",
            "--budget", "10 env steps"]


CASES = {
    "experiments/merge_compare.py": ([], two_compare_results, "| apg | 7.00 ± 0.00 |", ()),
    "benchmarks/first_output.py": (["--warm", "--", "chaosgym", "--help"], None, "longest silence", ()),
    "benchmarks/all.py": (["--quick", "--scripts", "backends.py"], lambda tmp: ["--out", str(tmp / "b.md")], "written to", (slow,)),
    "benchmarks/ant_physics.py": (["--batch", "2", "--steps", "2", "--rounds", "1"], brax_like_ant, "| 2 |", (slow,)),
    "benchmarks/backends.py": (["--quick"], None, "vs Ant-v5", (slow,)),
    "benchmarks/compile_time.py": (["--quick"], None, "| ChaosCartPole-v0 |", (slow,)),
    "benchmarks/compile_budget.py": (["--quick", "--commands", "compare", "--timeout", "1200"], None,
                                     "programs compiled", (slow,)),
    "experiments/ahac_stiffness.py": (["--envs", "2", "--steps", "3"], lambda tmp: ["--out", str(tmp / "s.json")],
                                      "| ahac_initial |", (slow,)),
    "benchmarks/cluster_speedup.py": (["--quick"], None, "| none (cache off) |", (slow,)),
    "benchmarks/evaluation_cost.py": (["--tasks", "ChaosCartPole-v0", "--episodes", "2", "--rounds", "1"], None,
                                      "| ChaosCartPole-v0 | 100 | 2 |", (slow,)),
    "experiments/restart_bits.py": (["ChaosCartPole-v0", "apg", "--updates", "1"], None, "apg update 0: state equal",
                                    (slow,)),
    "experiments/policy_diagnostics.py": (["--num-states", "1", "--lyapunov-steps", "3", "--transient", "0",
                                           "--horizons", "2", "--samples", "3"], tiny_comparison, "| start |", (slow,)),
    "experiments/findings.py": (["--quick", "--studies", "ChaosCartPole-v0"],
                    lambda tmp: ["--docs", str(tmp / "docs"), "--runs", str(tmp / "runs")], "findings", (slow,)),
    "benchmarks/gradient_cost.py": (["--quick", "--batch", "2"], None, "with remat", (slow,)),
    "benchmarks/sb3_threads.py": (["--steps", "512", "--repeats", "1"], None, "ratio default / one thread", (slow,)),
    "benchmarks/sb3_throughput.py": (["--env-steps", "256", "--num-envs", "2"], None, "vs Ant-v5 DummyVecEnv", (slow,)),
    "experiments/stable_bptt_c_gap.py": (["--poles", "1", "--seeds", "1", "--epochs", "1", "--flows", "C"],
                             lambda tmp: ["--out", str(tmp / "gap")], "| reference | C |", (slow,)),
    "benchmarks/stable_bptt_cost.py": (["--poles", "1", "--rounds", "1", "--calls", "1", "--horizon", "10", "--no-grid",
                             "--physics", "mjx"], None, "|", (slow,)),
    "benchmarks/substep_remat.py": (["--task", "ChaosCartPole-v0", "--frame-skip", "2", "--agents", "apg"], None,
                                    "| apg | 2 |", (slow,)),
    "benchmarks/throughput.py": (["--quick"], None, "Ant-v5", (slow,)),
    "benchmarks/vector_overhead.py": (["--quick", "--steps", "4", "--rounds", "1"], None, "DeviceVectorEnv / raw",
                                      (slow,)),
}


def scripts() -> set[str]:
    """The scripts of both folders (modules without a `__main__` block are helpers of the others)."""
    return {f"{folder}/{p.name}" for folder in FOLDERS for p in (ROOT / folder).glob("*.py")
            if 'if __name__ == "__main__"' in p.read_text()}


def test_every_benchmark_and_experiment_script_has_a_tiny_run_here():
    assert scripts() == set(CASES), "give each script a tiny-size case in CASES"


@pytest.mark.parametrize("script", [pytest.param(name, marks=case[3]) for name, case in sorted(CASES.items())])
def test_benchmark_runs_at_tiny_sizes(script, tmp_path):
    args, more, expected, _ = CASES[script]
    command = [sys.executable, str(ROOT / script), *(more(tmp_path) if more else []), *args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"{script} failed:\n{done.stderr[-3000:]}"
    assert expected in done.stdout, f"{script} printed no table:\n{done.stdout[-2000:]}"
