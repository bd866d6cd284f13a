"""pass@k: Chen et al.'s unbiased estimator, checked on cases computed by hand."""

import pytest

from rftkit.eval.pass_at_k import ks_up_to, pass_at_k


def test_pass_at_k_by_hand():
    assert pass_at_k(4, 1, 1) == 0.25  # c / n
    assert pass_at_k(4, 1, 2) == 0.5  # 1 - C(3, 2) / C(4, 2) = 1 - 3/6
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)  # 1 - C(3, 2) / C(5, 2) = 1 - 3/10
    assert pass_at_k(16, 0, 16) == 0.0 and pass_at_k(16, 1, 16) == 1.0 and pass_at_k(16, 16, 1) == 1.0
    assert pass_at_k(16, 3, 1) == 3 / 16


def test_pass_at_k_refuses_impossible_counts():
    for n, c, k in ((4, 5, 1), (4, 1, 5), (4, 1, 0), (4, -1, 1)):
        with pytest.raises(ValueError, match="pass_at_k"):
            pass_at_k(n, c, k)


def test_reported_ks():
    assert ks_up_to(16) == [1, 2, 4, 8, 16] and ks_up_to(12) == [1, 2, 4, 8, 12] and ks_up_to(1) == [1]
