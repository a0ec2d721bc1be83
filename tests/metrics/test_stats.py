"""The significance tests of KPIS.md §10.2 against published worked examples and reference values."""

import math
import statistics

import pytest

from metrics import stats


def test_fisher_exact_lady_tasting_tea():
    # Fisher (1935): 3 of 4 cups with milk first named right. Tables with these margins have the
    # probabilities 1, 16, 36, 16, 1 (÷ 70); those no more likely than 16/70 add up to 34/70.
    assert stats.fisher_exact(3, 1, 1, 3) == pytest.approx(34 / 70)
    assert stats.fisher_exact(4, 0, 0, 4) == pytest.approx(2 / 70)
    assert stats.fisher_exact(2, 2, 2, 2) == pytest.approx(1.0)
    # Reference value from scipy.stats.fisher_exact([[7, 2], [1, 9]]).
    assert stats.fisher_exact(7, 2, 1, 9) == pytest.approx(0.005477494641581328, rel=1e-9)


def test_two_proportions_z_test_worked_by_hand():
    # 45 of 100 against 30 of 100: pooled p = 0.375, se = √(0.375 · 0.625 · 0.02) = 0.068465,
    # z = 0.15 / 0.068465 = 2.1909, two-sided p = erfc(2.1909 / √2) = 0.02846.
    assert stats.two_proportions(45, 100, 30, 100) == pytest.approx(0.02846, abs=5e-5)
    assert stats.two_proportions(45, 100, 30, 100) < stats.ALPHA
    # Symmetric, and no difference is no evidence.
    assert stats.two_proportions(30, 100, 45, 100) == pytest.approx(stats.two_proportions(45, 100, 30, 100))
    assert stats.two_proportions(20, 80, 20, 80) == pytest.approx(1.0)


def test_two_proportions_uses_fishers_test_at_small_counts():
    # Expected cells below 5: the exact test, not the normal approximation.
    assert stats.two_proportions(3, 4, 1, 4) == pytest.approx(stats.fisher_exact(3, 1, 1, 3))
    # A win rate of 1 of 1 against 0 of 1 proves nothing.
    assert stats.two_proportions(1, 1, 0, 1) == pytest.approx(1.0)
    assert stats.two_proportions(0, 0, 3, 10) is None


def test_exact_binomial_test_mendels_peas():
    # R, ?binom.test: 682 of 925 peas against Mendel's 3 : 1 gives p-value = 0.3825.
    assert stats.binomial_two_sided(682, 925, 0.75) == pytest.approx(0.3825, abs=5e-5)


def _binomial_by_summing(k, n, p):
    """The definition itself: every outcome no more likely than k, added up one by one."""
    pmf = [math.comb(n, x) * p**x * (1 - p) ** (n - x) for x in range(n + 1)]
    return min(1.0, sum(q for q in pmf if q <= pmf[k] * (1 + 1e-7)))


@pytest.mark.parametrize(
    ("k", "n", "p"), [(3, 20, 0.5), (17, 20, 0.5), (0, 10, 0.3), (10, 10, 0.3), (40, 100, 0.55), (9, 30, 0.1)]
)
def test_exact_binomial_tails_match_the_definition(k, n, p):
    assert stats.binomial_two_sided(k, n, p) == pytest.approx(_binomial_by_summing(k, n, p), rel=1e-6)


def test_poisson_rates_exact_conditional_test():
    # R, ?poisson.test, "comparison of event rates": 11 events in 800 person-years against
    # 6 + 8 + 7 = 21 in 1083 + 1050 + 878 = 3011 gives p-value = 0.07967.
    assert stats.poisson_rates(11, 800, 21, 3011) == pytest.approx(0.07967, abs=5e-5)
    # Like-for-like spans: 30 deals won against 12 over the same 6 days is real; 13 against 12 is not.
    assert stats.poisson_rates(30, 6, 12, 6) < stats.ALPHA
    assert stats.poisson_rates(13, 6, 12, 6) > 0.5
    assert stats.poisson_rates(0, 6, 0, 6) == pytest.approx(1.0)
    assert stats.poisson_rates(3, 0, 2, 6) is None


def test_student_t_distribution_table_values():
    # The familiar two-sided 5 % critical values: 2.228 at 10 degrees of freedom, 1.960 as df → ∞.
    assert stats.t_two_sided(2.228, 10) == pytest.approx(0.05, abs=2e-4)
    assert stats.t_two_sided(2.086, 20) == pytest.approx(0.05, abs=2e-4)
    assert stats.t_two_sided(1.96, 1e7) == pytest.approx(0.05, abs=2e-4)
    assert stats.t_two_sided(0.0, 5) == pytest.approx(1.0)


def test_welch_t_test_wikipedia_example():
    # Wikipedia, "Welch's t-test", example 1: t = −2.46, ν ≈ 25.0, p = 0.021.
    a1 = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
    a2 = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
    p = stats.welch(
        statistics.mean(a1), statistics.stdev(a1), len(a1), statistics.mean(a2), statistics.stdev(a2), len(a2)
    )
    assert p == pytest.approx(0.021, abs=5e-4)
    assert stats.welch(5.0, 1.0, 1, 4.0, 1.0, 30) is None  # one answer has no spread
    # Reference value from scipy.stats.ttest_ind_from_stats(4.2, 1.1, 40, 3.7, 1.4, 35, equal_var=False).
    assert stats.welch(4.2, 1.1, 40, 3.7, 1.4, 35) == pytest.approx(0.09348960257186366, rel=1e-9)


def test_nps_difference():
    # NPS 30 (se 5.52) against NPS 10 (se 5.9): z = 20 / 8.08 = 2.475, p = 0.0133.
    se1, se2 = 5.52, 5.9
    expected = math.erfc(20 / math.hypot(se1, se2) / math.sqrt(2))
    assert stats.nps_difference(30, se1, 10, se2) == pytest.approx(expected)
    assert stats.nps_difference(30, se1, 10, se2) < stats.ALPHA
    assert stats.nps_difference(100, 0, 100, 0) is None


@pytest.mark.parametrize(
    ("x1", "n1", "x2", "n2", "low", "high"),
    [
        # Newcombe (1998), Statistics in Medicine 17:873–890, table II, method 10 (hybrid score).
        (56, 70, 48, 80, 0.0524, 0.3339),
        (9, 10, 3, 10, 0.1705, 0.8090),
        (6, 7, 2, 7, 0.0582, 0.8062),
        (5, 56, 0, 29, -0.0381, 0.1926),
    ],
)
def test_difference_of_two_proportions_newcombes_worked_examples(x1, n1, x2, n2, low, high):
    assert stats.difference_interval(x1, n1, x2, n2) == pytest.approx((low, high), abs=2e-4)


def test_difference_interval_needs_both_samples():
    assert stats.difference_interval(3, 4, 0, 0) is None


def test_difference_interval_takes_counts_read_from_the_database():
    from decimal import Decimal

    counts = (Decimal(56), Decimal(70), Decimal(48), Decimal(80))
    assert stats.difference_interval(*counts) == stats.difference_interval(56, 70, 48, 80)
