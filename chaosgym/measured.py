"""The measured timings chaosgym's messages quote, in one table: each figure once, with what was
measured, on what machine, and by what command and when.

A message formats its figure from here (`f"typically {MEASURED['diagnose_es']}"` says "typically
20-40 s"), so that a new measurement changes one entry and every text that quotes it. A figure's
source is what its commit, docs/benchmarks.md, docs/install.md or docs/stable_bptt.md recorded;
where nothing recorded how it was measured, the entry says "source not recorded" (a typical figure
someone observed, not a benchmark's output). Nothing here imports JAX: the command line's help
texts read it.
"""

from __future__ import annotations

from dataclasses import dataclass

NOT_RECORDED = "source not recorded"
# where the diagnostics' compile figures come from (chaosgym/diagnostics/measures.py's comment)
DIAGNOSE = ("`chaosgym diagnose` of the cart pole and the Ant at small sizes with a cold cache, commit 3ff44de "
            f"(2026-12-04); the sizes and commands: {NOT_RECORDED}")
CPU = "2-core CPU"
# the CPU the main job's comparisons ran on (docs/comparison.md)
EPYC = "2-core CPU (AMD EPYC, docs/comparison.md)"


@dataclass(frozen=True)
class Measured:
    """One measured figure: a value, or a (low, high) range over runs or machine loads."""

    value: float | tuple[float, float]
    unit: str  # "s", "min", "h", or a count ("updates")
    what: str
    machine: str
    source: str  # the command or benchmark that measured it and when, or NOT_RECORDED

    @property
    def low(self) -> float:
        return self.value[0] if isinstance(self.value, tuple) else self.value

    @property
    def high(self) -> float:
        return self.value[1] if isinstance(self.value, tuple) else self.value

    @property
    def seconds(self) -> float:
        """The figure (the upper end of a range) in seconds."""
        scale = {"s": 1.0, "min": 60.0, "h": 3600.0}[self.unit]
        return self.high * scale

    def __str__(self) -> str:
        """As a message quotes it: "6 min", "30-50 s", "1.5-2 min"."""
        number = f"{self.low:g}-{self.high:g}" if isinstance(self.value, tuple) else f"{self.value:g}"
        return f"{number} {self.unit}"


MEASURED: dict[str, Measured] = {
    # --- the main job, `chaosgym compare --quick` (agents/commands.py, agents/compare_command.py)
    "quick_job_cold": Measured(
        6, "min", "`chaosgym compare --quick` from a fresh clone with an empty HOME (cold caches), the "
        "install before it excluded", f"{EPYC}, one niced background job beside it",
        "2026-12-02, commit 3b3cdef: install and compare 6 min 51 s (410.8 s), 44 s of it the install, "
        "timed line by line by a scratch timer outside the repo (docs/data/compare_quick/console.txt at "
        "that commit; docs/install.md). A quiet rerun timed by benchmarks/first_output.py took 4 min 36 s "
        "with the install (2026-12-03, docs/install.md)"),
    "quick_job_loaded": Measured(
        22, "min", "`chaosgym compare --quick` with cold caches on a loaded host", f"{CPU}, load average 8-12",
        "2026-12-02, commit f238f1d: 22 min 9 s, 662 s of it compiling (docs/install.md)"),
    "quick_training_apg": Measured(
        5.6, "s", "training seconds of apg's 100,000 cart-pole env steps (195 updates of 16 envs x 32 steps), "
        "compile excluded", f"{EPYC}, one niced background job beside it",
        "2026-12-02, commit 3b3cdef: the training (s) column of compare --quick's table "
        "(docs/data/compare_quick/console.txt at that commit)"),
    "quick_training_shac": Measured(
        7.8, "s", "training seconds of shac's 100,000 cart-pole env steps (195 updates of 16 envs x 32 steps), "
        "compile excluded", f"{EPYC}, one niced background job beside it",
        "2026-12-02, commit 3b3cdef: as quick_training_apg"),
    "quick_training_full": Measured(
        5.8, "s", "training seconds of full's 100,000 cart-pole env steps (62 updates of 16 x 100 steps), "
        "compile excluded", f"{EPYC}, one niced background job beside it",
        "2026-12-02, commit 3b3cdef: as quick_training_apg"),
    "quick_training_ppo": Measured(
        16.6, "s", "training seconds of PPO's 100,000 cart-pole env steps, compile excluded",
        f"{EPYC}, one niced background job beside it", "2026-12-02, commit 3b3cdef: as quick_training_apg"),
    "gradient_agent_100k": Measured(
        (3, 6), "s", "training seconds of 100,000 cart-pole env steps for a gradient agent, its first compile "
        "apart", CPU, f"2026-12-02, commit 79a1187 (compare --quick runs); {NOT_RECORDED}. The later run of "
        "quick_training_* gave 5.6-7.8 s"),
    "ppo_100k": Measured(
        20, "s", "training seconds of 100,000 cart-pole env steps for PPO, its first compile apart", CPU,
        f"2026-12-02, commit 79a1187 (compare --quick runs); {NOT_RECORDED}. The later run of "
        "quick_training_ppo gave 16.6 s"),
    "sac_td3_100k": Measured(
        40, "min", "training time of 100,000 cart-pole env steps for SAC or TD3", CPU,
        f"{NOT_RECORDED} (first stated in commit 2841dba, 2026-11-25)"),
    "apg_updates_20s_quiet": Measured(
        758, "updates", "apg's updates in 20 s of training on the cart pole (the main job's earlier budget)",
        f"{CPU}, quiet", f"2026-12-02, commit 79a1187; {NOT_RECORDED}"),
    "apg_updates_20s_busy": Measured(
        (105, 211), "updates", "apg's updates in 20 s of training on the cart pole (the main job's earlier budget)",
        f"{CPU}, busy", f"2026-12-02, commit 79a1187; {NOT_RECORDED}"),
    # --- `chaosgym reproduce stable-bptt`'s default grid (agents/reproduce_config.py)
    "stable_bptt_grid_mjx": Measured(
        (60, 90), "h", "the default grid (4 pole counts x 36 runs x 32,000 updates) with --physics mjx, "
        "by the CPU and its load", "one core of a 2-core CPU",
        "benchmarks/stable_bptt_cost.py: about 61.8 h at 3 poles' speed (2026-12-02, commit 6e31012, "
        "docs/benchmarks.md); the earlier estimate was about 90 h"),
    "stable_bptt_grid_equations": Measured(
        (5, 10), "h", "the default grid (4 pole counts x 36 runs x 32,000 updates) with --physics equations, "
        "by the CPU and its load", "one core of a 2-core CPU",
        "benchmarks/stable_bptt_cost.py: about 5.0 h at 3 poles' speed (2026-12-02, commit 6e31012, "
        "docs/benchmarks.md); the grid itself took 5.6 h (docs/stable_bptt.md); the earlier estimate was 7-10 h"),
    # --- typical cold compiles, announced while they run (agents/loop.py, agents/sb3.py, agents/compare_command.py,
    # agents/brax_agents.py)
    "compile_update": Measured(
        60, "s", "a cold compile of a gradient agent's training update (a 100-step gradient of the 1-pole "
        "cart pole)", CPU,
        "../shared/DESIGN.md's MJX facts measured on 2 CPU cores (date and command not recorded); "
        "benchmarks/compile_time.py later gave 25.8 s for the cart pole's 100-step update (2026-12-02, "
        "docs/benchmarks.md)"),
    "compile_update_ant": Measured(
        200, "s", "a cold compile of a gradient agent's training update on the Ant, at most "
        "(a 100-step gradient)", CPU,
        "../shared/DESIGN.md's MJX facts measured on 2 CPU cores (date and command not recorded); "
        "benchmarks/compile_time.py later gave 65.1 s for the Ant's 100-step update (2026-12-02, "
        "docs/benchmarks.md)"),
    "compile_evaluation": Measured(
        30, "s", "a cold compile of a JAX agent's batched evaluation", CPU,
        f"{NOT_RECORDED} (commit a08153f, 2026-12-02)"),
    "compile_sb3_env": Measured(
        15, "s", "a cold compile of a task's batched reset and step for SB3", CPU,
        f"{NOT_RECORDED} (commit 81da731, 2026-12-02)"),
    "compile_evaluation_env": Measured(
        15, "s", "a cold compile of the Gymnasium MJX env `compare` evaluates every run in", CPU,
        f"{NOT_RECORDED} (commit 79a1187, 2026-12-02; the run of commit 3b3cdef compiled it in 7 s)"),
    "compile_brax_setup": Measured(
        30, "s", "a cold compile of a Brax agent's setup, on the 1-pole cart pole", CPU,
        f"commit dce28c4, 2026-12-04; command {NOT_RECORDED}"),
    "compile_brax_training": Measured(
        30, "s", "a cold compile of a Brax agent's training step, on the 1-pole cart pole", CPU,
        f"commit dce28c4, 2026-12-04; command {NOT_RECORDED}"),
    "compile_brax_evaluation": Measured(
        10, "s", "a cold compile of a Brax agent's evaluation, on the 1-pole cart pole", CPU,
        f"commit dce28c4, 2026-12-04; command {NOT_RECORDED}"),
}

# `chaosgym diagnose`'s typical cold compiles (chaosgym/diagnostics/measures.py, command.py): name ->
# (value, unit, what compiles)
_DIAGNOSE_COMPILES = {
    "diagnose_reset": ((10, 30), "s", "a task's batched reset"),
    "diagnose_lyapunov_cart_pole": ((30, 50), "s", "the Lyapunov run of the cart pole"),
    "diagnose_lyapunov_ant": (2, "min", "the Lyapunov run of the Ant"),
    "diagnose_jacobian_cart_pole": ((20, 30), "s", "the Jacobian spectra of the cart pole"),
    "diagnose_jacobian_ant": (1, "min", "the Jacobian spectra of the Ant"),
    "diagnose_backprop_cart_pole": ((1.5, 2), "min", "a backpropagated gradient of the cart pole (gradvar)"),
    "diagnose_backprop_ant": (3, "min", "a backpropagated gradient of the Ant (gradvar)"),
    "diagnose_es": ((20, 40), "s", "the ES gradient (gradvar)"),
    "diagnose_landscape_cart_pole": (30, "s", "a loss-landscape slice of the cart pole"),
    "diagnose_landscape_ant": (45, "s", "a loss-landscape slice of the Ant"),
}
MEASURED.update({name: Measured(value, unit, f"a cold compile of {what} in `chaosgym diagnose`", f"shared {CPU}",
                                DIAGNOSE) for name, (value, unit, what) in _DIAGNOSE_COMPILES.items()})


def table() -> str:
    """The table as markdown: name, figure, what, machine, source."""
    rows = ["| name | figure | what | machine | source |", "|---|---|---|---|---|"]
    rows += [f"| {name} | {m} | {m.what} | {m.machine} | {m.source} |" for name, m in MEASURED.items()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
