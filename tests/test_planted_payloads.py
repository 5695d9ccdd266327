"""Nothing runs from a file chaosgym reads (issue 32): a pickle payload planted in each file of a run
folder in turn (the gradient agents', SB3's, the Stable-BPTT grid's), and every command that reads
those folders run over it: `train --resume`, `compare` reading its runs back, `diagnose --policy`,
`render --run`, `reproduce` resuming and `--report-only`. A command may refuse the file (it should);
no payload may run. The trace cache's entries have their own planted-pickle test
(tests/test_trace_cache.py); JAX's compilation cache holds XLA executables, not Python objects."""

import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from chaosgym.agents.cli import main

pytestmark = pytest.mark.slow  # trains two agents and a grid, then runs ~100 commands


class Payload:
    """Unpickling it creates `path`: what a hostile pickle would do worse."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return open, (self.path, "w")


def plants(original: bytes, name: str, marker: Path) -> dict[str, bytes]:
    """The hostile versions of one file: a bare pickle, and for an .npz the real arrays plus one
    object array (a "stealth" checkpoint that would load normally after running its payload)."""
    versions = {"pickle": pickle.dumps(Payload(str(marker)))}
    if name.endswith(".npz"):
        with np.load(io.BytesIO(original)) as real:
            arrays = dict(real)
        stealth = io.BytesIO()
        np.savez(stealth, **arrays, stealth=np.array([Payload(str(marker))], dtype=object))
        versions["stealth npz"] = stealth.getvalue()
    return versions


def run_command(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit:
        pass  # a refusal is the right outcome; only a payload that ran fails the test


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("payloads")
    compare = ["compare", "--tasks", "ChaosCartPole-v0", "--agents", "full,ppo", "--seeds", "1", "--env-steps", "240",
               "--eval-episodes", "2", "--set", "estimator.horizon=20", "--set", "full.batch_size=4",
               "--set", "ppo.num_envs=2", "--set", "ppo.n_steps=16", "--set", "ppo.batch_size=16",
               "--set", "ppo.n_epochs=1", "--out", str(root / "cmp")]
    assert main(compare) == 0
    grid = ["reproduce", "stable-bptt", "--poles", "1", "--flows", "R", "--clip", "NONE", "--seeds", "1",
            "--epochs", "1", "--states", "8", "--physics", "equations", "--checkpoint-every", "1", "--no-progress",
            "--out", str(root / "grid")]
    assert main(grid) == 0
    return root, compare, grid


def readers(root: Path, compare: list[str], grid: list[str], run: Path, agent: str) -> list[list[str]]:
    scratch = root / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    diagnose = ["diagnose", "--policy", str(run), "--what", "lyapunov", "--modes", "policy", "--num-states", "1",
                "--lyapunov-steps", "2", "--lyapunov-k", "1", "--transient", "0", "--out", str(scratch / "diag")]
    if agent == "grid":
        return [[*grid[:grid.index("--epochs") + 1], "2", *grid[grid.index("--epochs") + 2:]],  # resumes the grid
                [*grid, "--report-only"]]
    return [
        ["train", "--task", "ChaosCartPole-v0", "--agent", agent, "--env-steps", "480", "--resume", "--no-progress",
         "--out", str(run)],
        compare,
        diagnose,
        ["render", "--run", str(run), "--max-steps", "2", "--width", "16", "--height", "16",
         "--out", str(scratch / "episode.gif")],
    ]


@pytest.mark.parametrize("agent", ["full", "ppo", "grid"])
def test_a_payload_planted_in_any_file_of_a_run_folder_never_runs(agent, folders, tmp_path):
    root, compare, grid = folders
    # the grid's folder is named after its pole count and flows
    run = next((root / "grid").glob("poles1-*")) if agent == "grid" else \
        root / "cmp" / "runs" / f"ChaosCartPole-v0-{agent}-seed0"
    files = sorted(p for p in run.iterdir() if p.is_file() and p.name != ".lock")
    assert {"config.json", "metrics.csv"} <= {p.name for p in files} and len(files) >= 3, files
    saved = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    tried = 0
    for path in files:
        marker = tmp_path / f"ran-{path.name}"
        for kind, content in plants(saved[path], path.name, marker).items():
            for argv in readers(root, compare, grid, run, agent):
                for p in list(run.rglob("*")):  # the folder as trained, but for the planted file
                    if p.is_file() and p not in saved:
                        p.unlink()
                for p, original in saved.items():
                    p.write_bytes(original)
                path.write_bytes(content)
                run_command(argv)
                assert not marker.exists(), f"{' '.join(argv[:2])} ran the payload planted in {path.name} ({kind})"
                tried += 1
    # the planted files are real payloads: unpickling one runs it
    pickle.loads(pickle.dumps(Payload(str(tmp_path / "sanity"))))
    assert (tmp_path / "sanity").exists() and tried >= 3 * 2
    for p, original in saved.items():
        p.write_bytes(original)
