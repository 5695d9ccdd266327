"""The numbers the README and docs quote agree with the committed data in docs/data/.

Each comparison table in README.md and docs/comparison.md is recomputed from its results.csv, as is
each committed summary.md, and the Stable-BPTT grid's tables (docs/stable_bptt.md) and largest force
(docs/tasks.md, docs/stable_bptt.md) from its metrics (`reproduce.read_group`, `reproduce.curves`);
every figure of the speed table (docs/speed.md) is in docs/benchmarks.md. A rerun that changes the
data without the text (or the reverse) fails here.
"""

import csv
import functools
import re
from pathlib import Path

import numpy as np
import pytest

from chaosgym.agents import compare_command as compare, reproduce
from chaosgym.agents.reproduce_config import CLIPS

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "data"
GRID, GRID_POLES, GRID_EPOCHS = DATA / "stable_bptt", (1, 2, 3, 4), 1000  # the Stable-BPTT grid, complete
# a table's threshold column names the comparison it quotes
COMPARISONS = {"50": "compare_quick", "1500": "compare_ant"}
TASKS = {"compare_quick": "ChaosCartPole-v0", "compare_ant": "ChaosAnt-v0"}
# The main job's PPO row may differ from docs/data's run on another CPU model, because torch's and
# XLA's float32 kernels differ by CPU model (on an AMD EPYC PPO scored 69.57 ± 3.99 and reached 50
# after 25,600 env steps, against the table's 66.5 ± 5.3 and 30,720). So its final score (the mean)
# is checked within ±5 and its env steps to 50 within ±10,240 (PPO's curve is evaluated every
# 10,240 env steps) of the data, and its seconds to 50 only for whether 50 was reached (None).
# Every other cell, and every cell of the gradient agents' rows (the same to every digit on both CPU
# models), must equal the data exactly.
TOLERANCES = {("compare_quick", "ppo"): {"final score": 5.0, "env steps to 50": 10_240, "training s to 50": None}}


def read_results(name: str) -> list[dict]:
    with open(DATA / name / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def tables(path: Path) -> list[tuple[list[str], list[list[str]]]]:
    """(header, rows) of every markdown table in `path` whose first column is `agent`."""
    found, lines = [], path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| agent |") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip().replace("−", "-") for c in row.split("|")[1:-1]])
            found.append(([c.strip() for c in line.split("|")[1:-1]], rows))
    return found


def expected_cell(column: str, name: str, agent: str, results: list[dict]) -> str:
    finals = [r for r in results if r["agent"] == agent and r["kind"] == "final"]
    curves = {}
    for r in results:
        if r["agent"] == agent and r["kind"] == "curve":
            curves.setdefault(r["seed"], []).append(r)
    mean_std = lambda key, digits: (f"{np.mean([float(r[key]) for r in finals]):.{digits}f} ± "
                                    f"{np.std([float(r[key]) for r in finals]):.{digits}f}")
    steps = np.mean([float(r["env_steps"]) for r in finals])
    if column == "final score":
        return mean_std("eval_score", 1)
    if column == "final objective":
        return mean_std("eval_objective", 3)
    if column == "env steps run":
        return f"{steps:,.0f}"
    if column == "updates":
        config = compare.run_config(TASKS[name], {}, agent, 0, 10**6, {}, {})
        return "—" if config.spec.budget == "env_steps" else f"{steps / config.steps_per_update():.0f}"
    if column == "score at step 0":
        return " / ".join(dict.fromkeys(f"{float(c[0]['eval_score']):.0f}" for c in curves.values()))
    match = re.fullmatch(r"(env steps|training s) to (\d+)", column)
    if match:
        key = "env_steps" if match[1] == "env steps" else "wall_time"
        reached = [compare.first_reaching(c, float(match[2]), key) for c in curves.values()]
        reached = [x for x in reached if x is not None]
        if not reached:
            return "not reached"
        return f"{np.median(reached):,.0f}" if key == "env_steps" else f"{np.median(reached):.1f}"
    raise AssertionError(f"no rule for the column {column!r}: add one here")


def agrees(cell: str, expected: str, tolerance: float | None) -> bool:
    """`cell` within `tolerance` of `expected` (the mean of a `mean ± std` cell, or a number);
    "not reached" only matches itself; a `None` tolerance checks only that."""
    if tolerance is None or "not reached" in (cell, expected):
        return (cell == "not reached") == (expected == "not reached")
    number = lambda text: float(text.split(" ± ")[0].replace(",", ""))
    return abs(number(cell) - number(expected)) <= tolerance


@pytest.mark.parametrize("doc", ["README.md", pytest.param("docs/comparison.md", marks=pytest.mark.xfail(
    strict=True, reason="its Ant table's updates column (apg 478, shac 433, full 372) counts updates of the Ant's "
                        "earlier settings (16 envs x 32 steps; full at horizon 50); the presets are now the "
                        "authors' (apg and shac 64 envs) and full has no Ant preset (horizon 100): rerun "
                        "docs/data/compare_ant or drop the column"))])
def test_every_comparison_table_is_the_committed_data(doc):
    checked = 0
    for header, rows in tables(ROOT / doc):
        threshold = next((re.search(r"to (\d+)$", c)[1] for c in header if re.search(r"steps to (\d+)$", c)), None)
        if threshold not in COMPARISONS:
            continue
        name = COMPARISONS[threshold]
        results = read_results(name)
        for row in rows:
            agent = row[0]
            tolerances = TOLERANCES.get((name, agent), {})
            for column, cell in zip(header[1:], row[1:]):
                expected = expected_cell(column, name, agent, results)
                if column in tolerances:
                    assert agrees(cell, expected, tolerances[column]), (doc, name, agent, column, cell, expected)
                else:
                    assert cell == expected, (doc, name, agent, column, cell, expected)
            checked += 1
    assert checked >= 4


# every committed comparison's summary.md: its task and threshold
SUMMARIES = {"compare_quick": ("ChaosCartPole-v0", 50.0), "compare_ant": ("ChaosAnt-v0", 1500.0),
             "compare_quick_fusion_emitters": ("ChaosCartPole-v0", 50.0), "ant_4M": ("ChaosAnt-v0", 1500.0)}


@pytest.mark.parametrize("name", sorted(SUMMARIES))
def test_each_committed_summary_is_its_results(name):
    results = read_results(name)
    agents = list(dict.fromkeys(r["agent"] for r in results))
    task, threshold = SUMMARIES[name]
    table = compare.summarise(results, [task], agents, {task: threshold})
    assert table in (DATA / name / "summary.md").read_text()


def test_every_committed_summary_is_checked():
    assert {p.parent.name for p in DATA.glob("*/summary.md")} == set(SUMMARIES)


def test_the_largest_force_quoted_is_the_data():
    """The largest force of any test episode in the grid: of the flows that learn, and of S."""
    largest = {"RMC": 0.0, "S": 0.0}
    for poles in GRID_POLES:
        for r in grid_metrics(poles):
            group = "S" if r["flow"] == "S" else "RMC"
            largest[group] = max(largest[group], r["max_abs_force"])
    learning, stopped = (f"{largest[g]:.0f} N" for g in ("RMC", "S"))
    tasks = (ROOT / "docs" / "tasks.md").read_text().replace("\n  ", " ")
    assert f"R, M and C policies used at most {learning} in any epoch, S, which does not learn, up to {stopped}" in tasks
    doc = (ROOT / "docs" / "stable_bptt.md").read_text().replace("\n  ", " ")
    assert f"R, M and C never used more than {learning}" in doc and f"reached {stopped}" in doc


def _grid_cell(values: list[float]) -> str:
    """A cell of docs/stable_bptt.md's grid table: median [min, max] to two significant figures."""
    return f"{float(np.median(values)):#.2g} [{min(values):#.2g}, {max(values):#.2g}]"


@functools.cache
def grid_metrics(poles: int) -> list[dict]:
    """The committed grid's metrics rows at `poles` (every run and epoch), read once."""
    return reproduce.read_group(GRID, poles, "RMSC")


@functools.cache
def final_losses(poles: int) -> dict[tuple[str, str], np.ndarray]:
    """Per (flow, clip) of the committed grid at `poles`, each seed's smoothed test loss at the last
    epoch (`reproduce.curves`, the statistic of results.md); every run must have all its epochs."""
    rows = grid_metrics(poles)
    final = {}
    for flow in "RMSC":
        for clip in CLIPS:
            c = reproduce.curves(rows, poles, flow, clip)
            assert c.shape == (3, GRID_EPOCHS), f"{poles} pole(s) {flow} {clip}: {c.shape} (seeds, epochs)"
            final[flow, clip] = c[:, -1]
    return final


def grid_rows(poles: int) -> list[str]:
    """The rows `| N | clipping | R | M | S | C |` of docs/stable_bptt.md's grid table for one pole
    count: each seed's final smoothed test loss, then the median and range over seeds."""
    final = final_losses(poles)
    return ["| " + " | ".join([str(poles), clip, *(_grid_cell(final[flow, clip]) for flow in "RMSC")]) + " |"
            for clip in CLIPS]


@pytest.mark.parametrize("poles", GRID_POLES)
def test_the_stable_bptt_grid_table_is_the_data(poles):
    text = (ROOT / "docs" / "stable_bptt.md").read_text().replace("**", "")
    for row in grid_rows(poles):
        assert row.replace("**", "") in text, row


NUMBER = re.compile(r"(?<![\w.-])\d[\d,]*(?:\.\d+)?")


def _speed_table() -> list[list[str]]:
    """Rows of the speed table of docs/speed.md (the first table under its title, '# Speed, start-up and devices')."""
    section = (ROOT / "docs" / "speed.md").read_text().split("# Speed, start-up and devices", 1)[1]
    lines = [line for line in section.split("\n## ", 1)[0].splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_every_speed_figure_in_docs_speed_is_in_docs_benchmarks():
    """docs/speed.md quotes docs/benchmarks.md, the output of one `python benchmarks/all.py` run: every
    number in its measured columns (chaosgym, reference, ratio) must be printed there."""
    printed = set(NUMBER.findall((ROOT / "docs" / "benchmarks.md").read_text()))
    rows = _speed_table()
    assert len(rows) >= 8
    for row in rows:
        quoted = [n for cell in row[1:4] for n in NUMBER.findall(cell.replace("mj_step", ""))]
        missing = [n for n in quoted if n not in printed]
        assert not missing, f"docs/speed.md row {row[0]!r} quotes {missing}, not in docs/benchmarks.md"


def test_the_c_gap_per_seed_table_is_the_data(capsys):
    """docs/stable_bptt.md's per-seed table is what `stable_bptt_c_gap.py --per-seed` prints from
    the committed CSVs."""
    import sys
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import stable_bptt_c_gap
    finally:
        sys.path.pop(0)
    stable_bptt_c_gap.per_seed(sorted((DATA / "stable_bptt_c_gap").glob("c_gap_*.csv")), 0.07)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("| C |", "| R |"))]
    text = (ROOT / "docs" / "stable_bptt.md").read_text()
    assert len(rows) >= 8
    for row in rows:
        assert row in text, row


def _summary_grid_value(value: float) -> str:
    """A number of docs/stable_bptt.md's summary grid table: two significant figures, 7.6e-4 below 0.001."""
    if value < 1e-3:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:#.2g}"


def test_the_summary_grid_table_is_the_data():
    """docs/stable_bptt.md's summary `| N | R | C | M | S |` rows ('In short'): each flow's medians
    over seeds, NONE / VALUE / NORM."""
    text = (ROOT / "docs" / "stable_bptt.md").read_text()
    for poles in GRID_POLES:
        final = final_losses(poles)
        cells = [" / ".join(_summary_grid_value(float(np.median(final[flow, clip]))) for clip in CLIPS) for flow in "RCMS"]
        row = "| " + " | ".join([str(poles), *cells]) + " |"
        assert row in text, row
