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


def test_a_tiny_protocol_run_writes_a_run_folder_per_pole_count_and_is_read_back(tmp_path):
    protocol = reproduce.Protocol(states=8, epochs=2, horizon=10, physics="equations")
    rows = reproduce.reproduce(tmp_path, [1], ["R", "C"], ["NONE", "NORM"], seeds=2, protocol=protocol,
                               progress=False, checkpoint_every=1)
    assert len(rows) == 2 * 2 * 2 * 2  # flows x clips x seeds x epochs
    for name in ("results.md", "stable_bptt.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert not (tmp_path / "results.csv").exists()  # the data is each group's metrics.csv
    folder = tmp_path / "poles1-RC"  # one group, one program, for every run of one pole count
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "checkpoint.npz", "checkpoint.prev.npz",
                                                        "config.json", "metrics.csv"]
    config = json.loads((folder / "config.json").read_text())
    assert config["epochs"] == 2 and config["clips"] == ["NONE", "NORM"] and config["physics"] == "equations"
    assert config["adam"] == "keras" and config["dtype"] == "float32"
    with open(folder / "metrics.csv", newline="") as f:
        written = list(csv.DictReader(f))
    assert len(written) == 16 and {r["clip"] for r in written} == {"NONE", "NORM"}
    assert all(np.isfinite(float(r["test_loss"])) and 0 <= float(r["test_loss"]) <= 2 for r in written)
    assert all(float(r["max_abs_force"]) < 1000 for r in written)  # the force bound never binds
    # read back from metrics.csv: every finished epoch, its values exactly those the program gave
    read = reproduce.read_group(tmp_path, 1, ["R", "C"])
    assert [(r["flow"], r["clip"], r["seed"], r["epoch"], r["test_loss"]) for r in read] == [
        (r["flow"], r["clip"], r["seed"], r["epoch"], r["test_loss"]) for r in rows]
    combined = [r for r in rows if r["flow"] == "C"]
    assert all(0 <= r["fraction_zeroed"] <= 1 for r in combined)
    assert all(np.isnan(r["fraction_zeroed"]) for r in rows if r["flow"] == "R")
    # the seeds are different initialisations
    first = {(r["clip"], r["seed"]): r["test_loss"] for r in rows if r["flow"] == "R" and r["epoch"] == 2}
    assert len(first) == 4 and first["NONE", 0] != first["NONE", 1]
    table = (tmp_path / "results.md").read_text()
    assert "| 1 | NONE |" in table and "| 1 | NORM |" in table and "closed-form equations" in table

    # finished groups are read back, not redone
    stamp = (folder / "metrics.csv").stat().st_mtime_ns
    again = reproduce.reproduce(tmp_path, [1], ["R", "C"], ["NONE", "NORM"], seeds=2, protocol=protocol,
                                progress=False)
    assert (folder / "metrics.csv").stat().st_mtime_ns == stamp
    assert [r["test_loss"] for r in again] == [r["test_loss"] for r in rows]

    # other settings into the same folder are refused, not mixed
    with pytest.raises(ValueError, match="config differs in"):
        reproduce.reproduce(tmp_path, [1], ["R", "C"], ["NONE"], seeds=3, protocol=protocol, progress=False)

    # a torn last row (a kill in mid-write) is dropped with a warning; more epochs resume the group
    with open(folder / "metrics.csv", "a") as f:
        f.write("1,R,NO")
    longer = reproduce.Protocol(states=8, epochs=3, horizon=10, physics="equations")
    with pytest.warns(UserWarning, match="torn row"):
        more = reproduce.reproduce(tmp_path, [1], ["R", "C"], ["NONE", "NORM"], seeds=2, protocol=longer,
                                   progress=False)
    assert len(more) == 24 and [r["test_loss"] for r in more[:16]] == [r["test_loss"] for r in rows]


def test_report_only_on_a_folder_without_epochs_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="no finished epoch"):
        reproduce.reproduce(tmp_path / "new", [3], ["R"], ["NONE"], 3, reproduce.Protocol(), report_only=True)
    assert not (tmp_path / "new").exists()


def test_command_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "--help"])
    assert exit_.value.code == 0
    assert "stable-bptt" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "stable-bptt", "--flows", "R,X", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "--flows: unknown X; valid: R, M, S, C" in capsys.readouterr().err
