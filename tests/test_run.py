"""`chaosgym.agents.run`: the run folder every agent writes."""

import pytest


def test_resuming_a_run_whose_config_is_gone_is_refused_and_keeps_its_checkpoint(tmp_path):
    from chaosgym.agents.config import for_task
    from chaosgym.agents.run import Run

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.csv").write_text("update\n0\n")
    (folder / "checkpoint.npz").write_bytes(b"the only copy")
    for resume in (True, False):
        with pytest.raises(FileExistsError, match="no config.json"):
            Run.open(folder, for_task("ChaosCartPole-v0", "full"), resume, lambda b: b)
    assert (folder / "checkpoint.npz").read_bytes() == b"the only copy"
