"""`chaosgym reproduce stable-bptt`: the paper's data, a tiny run of the protocol, read-back and resume."""

import csv
import json

import numpy as np
import pytest

from chaosgym.agents import reproduce
from chaosgym.agents.cli import main


def test_paper_states_are_the_papers_draw():
    train, test = reproduce.paper_states(3)
    assert train.shape == test.shape == (256, 4, 2) and train.dtype == np.float32
    # np.random.seed(42); np.random.rand() is 0.3745401188...: the first training x
    assert train[0, 0, 0] == pytest.approx(np.float32(0.37454012) * 2 - 1)
    assert not np.allclose(train, test)
    for states in (train, test):
        assert np.all(np.abs(states[:, 0, :]) <= 1) and np.all(np.abs(states[:, 1:, 1]) <= 1)
        assert np.all(np.abs(states[:, 1:, 0] - np.pi) <= np.pi / 6 + 1e-6)


def test_smoothing_is_the_papers_moving_average():
    values = np.arange(1.0, 41.0)
    smooth = reproduce.smoothed(values, window=30)
    assert smooth.shape == values.shape
    assert smooth[0] == pytest.approx(1.0)  # the first value stands in for the epochs before it
    assert smooth[-1] == pytest.approx(np.mean(values[-30:]))
    assert smooth[1] == pytest.approx((29 * 1.0 + 2.0) / 30)


def test_the_table_along_training_shows_each_flow_at_the_same_epochs():
    # R ran 60 epochs at loss 0.5 + seed, C 30 epochs at 0.1 + seed: window 1 makes the values exact
    rows = [{"poles": 3, "flow": flow, "clip": "NONE", "seed": seed, "epoch": epoch, "test_loss": base + seed}
            for flow, base, epochs in (("R", 0.5, 60), ("C", 0.1, 30)) for seed in range(3)
            for epoch in range(1, epochs + 1)]
    table = reproduce.milestones_table(rows, [3], ["R", "C"], ["NONE", "NORM"], 32, window=1, milestones=(25, 50, 100))
    lines = table.splitlines()
    assert "| 25 | 800 | 1.5 [0.5, 2.5] | 1.1 [0.1, 2.1] |" in lines
    assert "| 50 | 1,600 | 1.5 [0.5, 2.5] | — |" in lines  # C has not reached epoch 50
    assert not any(line.startswith("| 100 |") for line in lines) and "NORM" not in table


@pytest.mark.slow  # compiles the R and C updates of the protocol
def test_a_tiny_protocol_run_writes_every_file_and_is_read_back(tmp_path):
    protocol = reproduce.Protocol(states=8, epochs=2, horizon=10)
    rows = reproduce.reproduce(tmp_path, [1], ["R", "C"], ["NONE", "NORM"], seeds=2, protocol=protocol,
                               progress=False, checkpoint_every=1)
    assert len(rows) == 2 * 2 * 2 * 2  # flows x clips x seeds x epochs
    for name in ("results.md", "results.csv", "stable_bptt.png"):
        assert (tmp_path / name).stat().st_size > 0
    for flow in ("R", "C"):
        folder = tmp_path / f"poles1-{flow}"
        config = json.loads((folder / "config.json").read_text())
        assert config["protocol"]["epochs"] == 2 and config["clips"] == ["NONE", "NORM"]
        with open(folder / "epochs.csv", newline="") as f:
            written = list(csv.DictReader(f))
        assert len(written) == 8 and {r["clip"] for r in written} == {"NONE", "NORM"}
        assert all(np.isfinite(float(r["test_loss"])) and 0 <= float(r["test_loss"]) <= 2 for r in written)
        assert all(float(r["max_abs_force"]) < 1000 for r in written)  # the force bound never binds
    combined = [r for r in rows if r["flow"] == "C"]
    assert all(0 <= r["fraction_zeroed"] <= 1 for r in combined)
    # the seeds are different initialisations; each clipping mode is a run of its own (in 2 tiny epochs
    # the gradient norm stays below 1, so NORM clipping has not bound yet and matches NONE)
    first = {(r["clip"], r["seed"]): r["test_loss"] for r in rows if r["flow"] == "R" and r["epoch"] == 2}
    assert len(first) == 4 and first["NONE", 0] != first["NONE", 1]
    table = (tmp_path / "results.md").read_text()
    assert "| 1 | NONE |" in table and "| 1 | NORM |" in table

    # finished groups are read back, not redone
    stamp = (tmp_path / "poles1-R" / "epochs.csv").stat().st_mtime_ns
    again = reproduce.reproduce(tmp_path, [1], ["R", "C"], ["NONE", "NORM"], seeds=2, protocol=protocol,
                                progress=False)
    assert (tmp_path / "poles1-R" / "epochs.csv").stat().st_mtime_ns == stamp
    assert [r["test_loss"] for r in again] == [r["test_loss"] for r in rows]

    # other settings into the same folder are refused, not mixed
    with pytest.raises(ValueError, match="holds runs of another configuration"):
        reproduce.reproduce(tmp_path, [1], ["R"], ["NONE"], seeds=3, protocol=protocol, progress=False)


def test_command_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "--help"])
    assert exit_.value.code == 0
    assert "stable-bptt" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "stable-bptt", "--flows", "R,X", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "unknown flow X; valid: R, M, S, C" in capsys.readouterr().err
