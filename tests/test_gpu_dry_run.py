"""scripts/gpu: the GPU machine's one command, checked on this CPU (docs/gpu.md).

The dry run installs .wheels/ offline into a CPython 3.12 venv that holds only the GPU machine's
own packages (JAX 0.11.2, numpy 2.5, PyTorch 2.11, ...), runs every step with tiny sizes, and must
leave in OUT only what a GPU machine gives back. It needs the package registry the first time
(prepare.sh's wheels, the venv). Its boxes allow 40 min on this project's shared 2-core CPU.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON312 = shutil.which("python3.12") or "/root/.pyenv/versions/3.12.1/bin/python3.12"
VENV = Path(os.environ.get("DRY_RUN_VENV", Path.home() / ".cache/chaosgym/gpu-dry-run-venv"))

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(PYTHON312), reason="no CPython 3.12 (the GPU machine's Python)")]


@pytest.fixture(scope="module")
def wheels() -> None:
    subprocess.run(["bash", str(ROOT / "scripts/gpu/prepare.sh")], check=True, capture_output=True, text=True)


def test_dry_run_installs_offline_runs_every_step_and_fits_the_return_limits(wheels, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    result = subprocess.run(["bash", str(ROOT / "scripts/gpu/dry_run.sh"), str(out)],
                            env={**os.environ, "CHAOSGYM_GPU_WORK": str(work)},
                            capture_output=True, text=True, timeout=2700)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    # what a GPU machine gives back: at most 8 files of at most 16 MiB, all directly in OUT
    entries = list(out.rglob("*"))
    assert all(p.is_file() and p.parent == out for p in entries), entries
    assert len(entries) <= 8
    assert all(p.stat().st_size <= 16 * 2**20 for p in entries)
    assert {p.name for p in entries} == {"summary.md", "throughput.csv", "compile.csv", "train_metrics.csv",
                                         "train_config.json", "logs.txt"}

    # every step finished inside its box, on the GPU machine's versions
    notes = (work / "notes.txt").read_text()
    for word in ("ran out", "failed", "skipped"):
        assert word not in notes, notes
    for version in ("Python 3.12", "jax 0.11.2", "numpy 2.5", "torch 2.11", "mujoco 3.17.0", "brax 0.14.2"):
        assert version in notes, notes
    # mujoco came from .wheels/, not from the stand-in venv
    assert subprocess.run([str(VENV / "bin/python"), "-c", "import mujoco"], capture_output=True).returncode != 0

    with open(out / "throughput.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["task"] for r in rows] == ["ChaosAnt-v0", "ChaosCartPole-v0"], rows
    assert all(float(rows[0][k]) > 0 for k in ("make_vec", "device_vector", "raw_mjx", "brax")), rows[0]
    with open(out / "compile.csv") as f:
        programs = list(csv.DictReader(f))
    assert len(programs) > 10 and sum(float(r["seconds"]) for r in programs) > 0
    with open(out / "train_metrics.csv") as f:
        evaluated = [r for r in csv.DictReader(f) if r["eval_score"]]
    assert len(evaluated) >= 2  # the untrained policy and the end
    summary = (out / "summary.md").read_text()
    assert "DRY RUN" in summary and "| ChaosAnt-v0 | 4 |" in summary and "programs," in summary
    assert "brax-ppo on ChaosAnt-v0" in summary


def test_without_a_gpu_the_real_run_stops_at_once_and_says_why(wheels, tmp_path):
    if not (VENV / "bin/python").exists():
        pytest.skip("the stand-in venv is built by the dry run")
    result = subprocess.run(["bash", str(ROOT / "scripts/gpu/run.sh"), str(tmp_path / "out")],
                            env={**os.environ, "PYTHON": str(VENV / "bin/python"),
                                 "CHAOSGYM_GPU_WORK": str(tmp_path / "work")},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "JAX sees no GPU" in result.stderr
    assert not any((tmp_path / "out").iterdir())  # nothing measured, nothing to bring back


def test_out_must_be_empty(tmp_path):
    (tmp_path / "old.csv").write_text("x\n")
    result = subprocess.run(["bash", str(ROOT / "scripts/gpu/run.sh"), str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "must be empty" in result.stderr
