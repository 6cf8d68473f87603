"""analysis.stats: intervals and corrections against values worked out by hand or by scipy."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from analysis import stats


def test_t_interval_matches_the_textbook_formula() -> None:
    x = [0.61, 0.64, 0.60, 0.66, 0.63]
    iv = stats.t_interval(x)
    mean = sum(x) / 5
    sd = math.sqrt(sum((v - mean) ** 2 for v in x) / 4)
    half = sps.t.ppf(0.975, 4) * sd / math.sqrt(5)
    assert iv.n == 5
    assert iv.mean == pytest.approx(mean)
    assert iv.std == pytest.approx(sd)
    assert (iv.ci_low, iv.ci_high) == pytest.approx((mean - half, mean + half))


def test_constant_differences_give_a_zero_width_interval_on_that_value() -> None:
    # 0.85 - 0.80 is 0.04999999999999993 in floating point; the interval must still hold 0.05 itself.
    iv = stats.t_interval([0.85 - 0.80, 0.75 - 0.70, 0.95 - 0.90])
    assert iv.ci_low <= 0.05 <= iv.ci_high and iv.excludes_zero
    assert iv.p_value == 0.0
    zero = stats.t_interval([0.0, 0.0, 0.0])
    assert (zero.ci_low, zero.ci_high, zero.p_value) == (0.0, 0.0, 1.0)


def test_one_value_has_no_interval() -> None:
    iv = stats.t_interval([0.7])
    assert iv.n == 1 and iv.mean == 0.7 and math.isnan(iv.ci_low) and math.isnan(iv.p_value)


def test_holm_matches_the_step_down_procedure() -> None:
    # sorted p: 0.01, 0.02, 0.04 -> 3*0.01=0.03, 2*0.02=0.04, 1*0.04=0.04 (kept monotone)
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    adjusted = stats.holm([0.5, float("nan"), 0.4])
    assert adjusted[0] == pytest.approx(0.8) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.8)
    assert stats.holm([0.9, 0.8]) == [1.0, 1.0]


def test_verdict_names_the_winner_first_and_in_points() -> None:
    iv = stats.t_interval([-0.02, -0.015, -0.018, -0.021])  # a - b negative: b wins
    line = stats.verdict("bn_position", "before_relu", "after_relu", iv, 0.001, "test_accuracy")
    assert line.startswith("bn_position: after_relu beats before_relu by 1.9 points")
    assert "95 % CI 1.4 to 2.3" in line
    noisy = stats.t_interval([0.01, -0.02, 0.015, -0.01])
    line = stats.verdict("optimizer", "adam", "sgd", noisy, 0.9, "test_accuracy")
    assert "no difference detected" in line


def test_an_interval_is_cut_to_where_the_mean_can_lie() -> None:
    wide = stats.t_interval([0.1, 0.9])  # two seeds: t quantile 12.7
    assert wide.ci_low < 0 and wide.ci_high > 1
    cut = stats.t_interval([0.1, 0.9], stats.ACCURACY)
    assert (cut.ci_low, cut.ci_high) == (0.0, 1.0) and cut.mean == wide.mean and cut.p_value == wide.p_value


def test_verdict_flags_an_unadjusted_interval_that_the_holm_test_overrules() -> None:
    clear = stats.t_interval([0.12, 0.14, 0.13])  # excludes 0 on its own
    line = stats.verdict("bn_position", "after_relu", "none", clear, 0.17, "test_accuracy")
    assert "no difference detected" in line and "unadjusted CI excludes 0" in line
    noisy = stats.t_interval([0.01, -0.02, 0.015, -0.01])
    assert "unadjusted" not in stats.verdict("optimizer", "adam", "sgd", noisy, 0.9, "test_accuracy")
