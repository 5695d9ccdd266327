"""The measured timings the messages quote live in one table, `chaosgym.measured.MEASURED` (issue 31):
every entry says what was measured, where and by what; no other string of the code states a time;
the texts that quote a figure format it from the table. Nothing here imports JAX."""

import argparse
import ast
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

from chaosgym.measured import MEASURED, NOT_RECORDED, Measured, table

ROOT = Path(__file__).resolve().parent.parent
# a figure with a time unit: "6 min", "3-6 s", "1.5-2 min", "60-90 h"
TIME = re.compile(r"\d(?:\.\d+)?(?:-\d+(?:\.\d+)?)? ?(?:s|ms|min|minutes?|seconds?|h|hours?)\b(?!\.e\.)")


def test_every_entry_says_what_where_and_by_what():
    for name, entry in MEASURED.items():
        assert isinstance(entry, Measured) and re.fullmatch(r"[a-z0-9_]+", name), name
        assert entry.unit in ("s", "min", "h", "updates"), name
        assert 0 < entry.low <= entry.high, name
        assert entry.what and entry.machine and entry.source, name
        assert re.search(r"\b20\d\d-\d\d-\d\d\b|[0-9a-f]{7}|\.py\b|\.md\b", entry.source) or NOT_RECORDED in entry.source, (
            f"{name}: its source names no date, commit, command or document, nor says it was not recorded")
    assert table().count("\n") == len(MEASURED) + 1


def test_a_figure_reads_as_the_messages_quoted_it():
    assert str(MEASURED["quick_job_cold"]) == "6 min"
    assert str(MEASURED["gradient_agent_100k"]) == "3-6 s"
    assert str(MEASURED["diagnose_backprop_cart_pole"]) == "1.5-2 min"
    assert MEASURED["compile_update_ant"].seconds == 200.0 and MEASURED["diagnose_lyapunov_ant"].seconds == 120.0


def test_the_table_imports_no_jax():
    code = "import sys, chaosgym.measured; print(sorted(m for m in ('jax', 'mujoco') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"


def docstring_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.add(first.lineno)
    return lines


def test_no_other_string_of_the_code_states_a_time():
    """A time in a message comes from the table (comments and docstrings may explain one)."""
    found = []
    for path in sorted([*(ROOT / "chaosgym").rglob("*.py"), *(ROOT / "agents").rglob("*.py")]):
        if path.name == "measured.py" or "__pycache__" in path.parts:
            continue
        source = path.read_text()
        docstrings = docstring_lines(ast.parse(source))
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type == tokenize.STRING and token.start[0] not in docstrings:
                found += [f"{path.relative_to(ROOT)}:{token.start[0]}: {token.string}"
                          for _ in TIME.findall(re.sub(r"\{[^{}]*\}", "", token.string))[:1]]
    assert not found, "measured times outside chaosgym/measured.py:\n" + "\n".join(found)


def test_the_help_texts_quote_the_table():
    from chaosgym.agents import commands, reproduce_config

    parser = argparse.ArgumentParser()
    commands.compare_arguments(parser)
    quick = next(action.help for action in parser._actions if action.dest == "quick")
    assert quick.startswith("the main job (6 min measured with cold caches on a 2-core CPU, 22 min on a loaded one): ")
    assert (f"about {MEASURED['stable_bptt_grid_mjx']} with --physics mjx (the default) and "
            f"{MEASURED['stable_bptt_grid_equations']} with --physics equations") in reproduce_config.GRID_COST
