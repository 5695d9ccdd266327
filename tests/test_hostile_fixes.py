"""Defects found by benchmarks/hostile.py (issue 21's recount), each with the test that failed before its fix."""

import numpy as np
import pytest

from chaosgym.gym_adapters import check_actions


@pytest.mark.parametrize("actions, where", [
    (np.array([[0.0], [np.nan]], np.float32), "1 of 2 entries, the first nan at index (1, 0)"),
    (np.full((1000, 3), np.inf, np.float32), "3000 of 3000 entries, the first inf at index (0, 0)"),
    (np.array([-np.inf], np.float32), "1 of 1 entries, the first -inf at index (0,)"),
])
def test_a_non_finite_action_is_one_line_naming_where(actions, where):
    with pytest.raises(ValueError) as error:
        check_actions(actions, actions.shape)
    message = str(error.value)
    assert "\n" not in message and where in message and "nothing was stepped" in message
