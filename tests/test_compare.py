"""`chaosgym compare` end to end on a tiny budget: every file, with sane contents."""

import csv

import numpy as np
import pytest

from chaosgym.agents import compare
from chaosgym.cli import main

pytest.importorskip("stable_baselines3")


def test_compare_writes_results_summary_and_curves_of_every_agent(tmp_path, monkeypatch, capsys):
    figures = []
    real_close = compare.plt.close
    monkeypatch.setattr(compare.plt, "close", lambda fig: (figures.append(fig), real_close(fig)))
    out = tmp_path / "cmp"
    argv = ["compare", "--tasks", "ChaosCartPole-v0", "--agents", "full,ppo", "--seeds", "1",
            "--env-steps", "4800", "--eval-episodes", "4", "--out", str(out)]
    assert main(argv) == 0

    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for agent in ("full", "ppo"):
        curve = [r for r in rows if r["agent"] == agent and r["kind"] == "curve"]
        final = [r for r in rows if r["agent"] == agent and r["kind"] == "final"]
        assert len(curve) >= 2 and len(final) == 1
        assert all(np.isfinite(float(r["eval_score"])) for r in curve + final), f"{agent}: unevaluated rows"
        assert float(curve[0]["env_steps"]) == 0 and 0 < float(curve[-1]["env_steps"]) <= 4800 + 1024
        times = [float(r["wall_time"]) for r in curve]
        assert times == sorted(times)
        assert -100 <= float(final[0]["eval_score"]) <= 100  # mean cos of the pole, summed over 100 steps

    summary = (out / "summary.md").read_text()
    assert "| full |" in summary and "| ppo |" in summary and "Threshold: evaluation score ≥ 50" in summary
    assert (out / "curves_ChaosCartPole-v0.png").stat().st_size > 10_000
    assert "wrote" in capsys.readouterr().out

    # one line per agent in each panel, every point finite (SB3 logs unevaluated rows too)
    [figure] = figures
    for axes in figure.axes:
        lines = axes.get_lines()
        assert [line.get_label() for line in lines] == ["full", "ppo"]
        assert all(np.isfinite(line.get_ydata()).all() for line in lines)

    # a second call reads the finished runs back instead of training again
    assert main(argv) == 0
    with open(out / "results.csv", newline="") as f:
        assert [r["eval_score"] for r in csv.DictReader(f)] == [r["eval_score"] for r in rows]
