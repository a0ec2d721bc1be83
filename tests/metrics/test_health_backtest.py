"""The backtest's arithmetic by hand (metrics.health.backtest): AUC with ties, its noise margin, lift,
precision, recall and the verdict. No database."""

import math
from datetime import date
from decimal import Decimal

import pytest

from metrics.health.backtest import Backtest, Cell, auc, auc_noise_margin, evaluate, verdict_of
from metrics.health.models import CustomerHealthRun
from metrics.health.services import backtest_month_starts

Verdict = CustomerHealthRun.Verdict
D = Decimal


def test_auc_counts_a_tie_as_half_a_win():
    # score: (churned, stayed). Pairs churned × stayed = 3 × 4 = 12.
    # Churned at 10 (2 of them): 3 stayers above (1 at 20, 2 at 30) → 6 wins; 1 stayer tied → 2 × ½ = 1.
    # Churned at 20 (1): 2 stayers above → 2 wins; 1 tied → ½.   (6 + 1 + 2 + ½) / 12 = 9.5 / 12.
    histogram = {D(10): (2, 1), D(20): (1, 1), D(30): (0, 2)}
    assert auc(histogram) == pytest.approx(9.5 / 12)


def test_auc_is_one_half_when_every_score_is_the_same_and_zero_when_reversed():
    assert auc({D("50.0"): (7, 30)}) == 0.5
    assert auc({D(10): (0, 5), D(90): (4, 0)}) == 0.0
    assert auc({D(10): (4, 0), D(90): (0, 5)}) == 1.0


def test_auc_without_both_outcomes_is_unknown():
    assert auc({D(10): (0, 5)}) is None
    assert auc({}) is None
    assert auc_noise_margin(0, 5) is None


def test_auc_noise_margin_is_the_null_standard_error_times_1_96():
    # √((3 + 4 + 1) / (12 × 3 × 4)) = √(8 / 144) = 0.235702…
    assert auc_noise_margin(3, 4) == pytest.approx(1.96 * math.sqrt(8 / 144))
    assert auc_noise_margin(100, 900) == pytest.approx(1.96 * math.sqrt(1001 / (12 * 100 * 900)))


def _cells() -> list[Cell]:
    """Two month starts. Month 1: 10 critical (4 churn), 20 at risk (2 churn), 70 healthy (1 churns).
    Month 2: 5 critical (3 churn), 95 healthy (2 churn)."""
    return [
        Cell(1, "critical", D("20.0"), True, 4),
        Cell(1, "critical", D("20.0"), False, 6),
        Cell(1, "at_risk", D("50.0"), True, 2),
        Cell(1, "at_risk", D("50.0"), False, 18),
        Cell(1, "healthy", D("80.0"), True, 1),
        Cell(1, "healthy", D("80.0"), False, 69),
        Cell(2, "critical", D("20.0"), True, 3),
        Cell(2, "critical", D("20.0"), False, 2),
        Cell(2, "healthy", D("90.0"), True, 2),
        Cell(2, "healthy", D("90.0"), False, 93),
    ]


def test_evaluate_by_hand():
    result = evaluate(_cells(), [date(2026, 1, 1), date(2026, 2, 1)])
    # 200 observations, 12 churned: base rate 6 %. Flagged: 10 + 20 + 5 = 35, of them 4 + 2 + 3 = 9 churned.
    assert (result.observations, result.churned, result.flagged, result.churned_flagged) == (200, 12, 35, 9)
    assert result.base_rate == pytest.approx(0.06)
    assert result.precision == pytest.approx(9 / 35)
    assert result.recall == pytest.approx(9 / 12)
    assert result.lift == pytest.approx((9 / 35) / 0.06)  # 4.29×
    assert [(b.band, b.observations, b.churned) for b in result.bands] == [
        ("healthy", 165, 3),
        ("at_risk", 20, 2),
        ("critical", 15, 7),
    ]
    first, second = result.months
    assert (first.day, first.observations, first.flagged, first.churned, first.churned_flagged) == (
        date(2026, 1, 1), 100, 30, 7, 6,
    )  # fmt: skip
    assert first.flagged_rate == pytest.approx(0.2) and first.others_rate == pytest.approx(1 / 70)
    assert (second.observations, second.flagged, second.churned, second.churned_flagged) == (100, 5, 5, 3)
    # AUC: churned 7 at 20, 2 at 50, 1 at 80, 2 at 90; stayed 8 at 20, 18 at 50, 69 at 80, 93 at 90 (188).
    # At 20: 7 × (180 + 8 / 2) = 1288; at 50: 2 × (162 + 9) = 342; at 80: 1 × (93 + 34.5) = 127.5;
    # at 90: 2 × (0 + 46.5) = 93.  (1288 + 342 + 127.5 + 93) / (12 × 188) = 1850.5 / 2256.
    assert result.auc == pytest.approx(1850.5 / 2256)
    assert result.auc_margin == pytest.approx(1.96 * math.sqrt(201 / (12 * 12 * 188)))
    assert result.verdict == Verdict.BEATS


def test_backtest_reads_back_what_it_stores():
    result = evaluate(_cells(), [date(2026, 1, 1), date(2026, 2, 1)])
    again = Backtest.from_json(result.to_json())
    assert again == result
    assert Backtest.from_json(None) == Backtest()


@pytest.mark.parametrize(
    ("churned", "stayed", "flagged", "lift", "auc_value", "margin", "expected"),
    [
        (9, 500, 40, 3.0, 0.9, 0.1, Verdict.TOO_FEW),  # fewer than 10 churned
        (50, 9, 40, 3.0, 0.9, 0.1, Verdict.TOO_FEW),  # fewer than 10 stayed
        (50, 500, 0, None, 0.9, 0.1, Verdict.FAILS),  # nobody flagged
        (50, 500, 40, 1.0, 0.9, 0.1, Verdict.FAILS),  # lift not above 1
        (50, 500, 40, 2.0, 0.6, 0.1, Verdict.FAILS),  # AUC within the noise of 0.5
        (50, 500, 40, 2.0, 0.600001, 0.1, Verdict.BEATS),
        (50, 500, 40, 0.8, 0.3, 0.1, Verdict.FAILS),  # worse than chance
    ],
)
def test_verdict(churned, stayed, flagged, lift, auc_value, margin, expected):
    found = verdict_of(
        churned=churned, stayed=stayed, flagged=flagged, lift=lift, auc_value=auc_value, margin=margin
    )
    assert found == expected


def test_backtest_month_starts_are_the_last_twelve_whose_90_days_are_over():
    # 15 June: 1 March + 90 days = 30 May is over; 1 April + 90 days = 30 June is not.
    months = backtest_month_starts(date(2026, 6, 15))
    assert months[0] == date(2025, 4, 1) and months[-1] == date(2026, 3, 1) and len(months) == 12
    # On the 90th day after a month start, its 90 days are just over.
    assert backtest_month_starts(date(2026, 5, 30))[-1] == date(2026, 3, 1)
    assert backtest_month_starts(date(2026, 5, 29))[-1] == date(2026, 2, 1)
