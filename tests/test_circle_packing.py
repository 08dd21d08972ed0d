"""The circle-packing evaluator's geometry: validity is recomputed, and the feedback says where the
sum is being lost."""

import numpy as np
import pytest

from evaluators.api import CandidateInvalid
from evaluators.circle_packing.evaluator import check_packing, radius_slack

GRID = np.array([[0.1 + 0.2 * i, 0.1 + 0.2 * j] for i in range(5) for j in range(5)] + [[0.2, 0.2]])


def grid_radii():
    r = np.full(26, 0.1)
    r[-1] = np.sqrt(2) * 0.1 - 0.1  # the gap between four touching circles
    return r


def test_a_tight_valid_packing_is_summed_and_has_no_slack():
    total, violation = check_packing(GRID, grid_radii())
    assert total == pytest.approx(2.5 + np.sqrt(2) * 0.1 - 0.1)
    assert violation < 1e-9
    assert radius_slack(GRID, grid_radii()) == pytest.approx(0.0, abs=1e-12)


def test_slack_is_what_growing_each_circle_in_turn_adds():
    r = grid_radii()
    r[:5] = 0.05  # five circles of the first column at half size: each can grow back to 0.1
    assert radius_slack(GRID, r) == pytest.approx(5 * 0.05)
    assert check_packing(GRID, r)[0] == pytest.approx(check_packing(GRID, grid_radii())[0] - 0.25)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda c, r: (c[:25], r[:25]), "shape"),
        (lambda c, r: (c, np.where(np.arange(26) == 3, np.nan, r)), "NaN"),
        (lambda c, r: (c, np.where(np.arange(26) == 3, -0.1, r)), "negative radius"),
        (lambda c, r: (c + [0.05, 0.0], r), "sticks out of the square"),
        (lambda c, r: (np.where(np.arange(26)[:, None] == 1, [0.1, 0.25], c), r), "circles 0 and 1 overlap"),
    ],
)
def test_invalid_packings_name_the_problem(mutate, reason):
    with pytest.raises(CandidateInvalid, match=reason):
        check_packing(*mutate(GRID.copy(), grid_radii()))
