"""trainer/metrics.py: spread statistics and the maximum over ranks, by hand."""

import pytest

from stackbench.trainer import metrics


def test_spread_by_hand():
    s = metrics.spread([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
    assert s["median"] == 6.0 and s["p10"] == pytest.approx(2.0) and s["p90"] == pytest.approx(10.0)
    assert s["cv"] == pytest.approx((110 / 11) ** 0.5 / 6.0)
    assert metrics.spread([])["median"] is None
    assert metrics.max_over_ranks([{"a": 1, "b": None}, {"a": 3, "b": None}]) == {"a": 3, "b": None}
