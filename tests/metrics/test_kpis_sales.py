"""Sales KPIs against hand-worked values (KPIS.md §4). Times are Europe/Berlin wall-clock times."""

from datetime import date
from decimal import Decimal

import pytest

from crm import services
from crm.models import Customer, Deal, PipelineStage
from metrics.models import Scope
from tests.factories import make_closed_deal, make_customer, make_deal, make_team, make_user, stage
from tests.metrics.kit import MARCH, NOW, compute, d, detail, local, row, value

pytestmark = pytest.mark.django_db

APRIL = date(2026, 4, 1)
FEBRUARY = date(2026, 2, 1)
WON, LOST = PipelineStage.Kind.WON, PipelineStage.Kind.LOST


def move(deal: Deal, kind: str, at, order: int | None = None, reason: str = "") -> Deal:
    return services.deal_move_stage(
        deal=deal, stage=stage(kind, order), actor=deal.owner, at=at, lost_reason=reason
    )


@pytest.fixture
def closed_deals():
    """Rep A (team T) and rep B with the deals of the revenue, win-rate and deal-size tests."""
    team = make_team()
    rep_a, rep_b = make_user(team=team), make_user()
    cust_a = make_customer(rep_a, at=local(2025, 1, 1))
    cust_b = make_customer(rep_b, at=local(2025, 1, 1))
    created = local(2026, 1, 2)
    # Closed exactly at the start of March in Berlin: March, not February.
    boundary = make_closed_deal(
        cust_a, created=created, closed=local(2026, 3, 1), amount=Decimal(1000), source="referral"
    )
    make_closed_deal(cust_a, created=created, closed=local(2026, 3, 15), amount=Decimal(3000))
    # One second before midnight: February.
    make_closed_deal(cust_a, created=created, closed=local(2026, 2, 28, 23, 59, 59), amount=Decimal(2000))
    make_closed_deal(cust_b, won=False, created=created, closed=local(2026, 3, 10))
    # Lost as a duplicate: data hygiene, not a lost sale.
    make_closed_deal(
        cust_b, won=False, created=created, closed=local(2026, 3, 11), lost_reason="Duplicate deal"
    )
    # Won in March, reopened later in March: not won.
    reopened = make_closed_deal(cust_a, created=created, closed=local(2026, 3, 5), amount=Decimal(9000))
    move(reopened, PipelineStage.Kind.OPEN, local(2026, 3, 20))
    # Won in January, reopened in February, finally won in March: counts in March only.
    rewon = make_closed_deal(cust_a, created=created, closed=local(2026, 1, 20), amount=Decimal(4000))
    move(rewon, PipelineStage.Kind.OPEN, local(2026, 2, 3))
    move(rewon, WON, local(2026, 3, 25))
    # Won without an amount: a won deal, but not in the deal-size figures.
    make_closed_deal(cust_a, created=created, closed=local(2026, 3, 26), amount=None)
    # Internal and merged customers never count.
    internal = make_customer(rep_a, at=local(2025, 1, 1), is_internal=True)
    make_closed_deal(internal, created=created, closed=local(2026, 3, 12), amount=Decimal(50_000))
    duplicate = make_customer(rep_a, at=local(2025, 1, 1))
    make_closed_deal(duplicate, created=created, closed=local(2026, 3, 12), amount=Decimal(70_000))
    Customer.objects.filter(pk=duplicate.pk).update(merged_into=cust_a)
    return {"team": team, "rep_a": rep_a, "rep_b": rep_b, "boundary": boundary, "customer": cust_a}


def test_revenue_and_deals_won_count_final_state_and_boundaries(closed_deals):
    # March: 1000 (00:00 on the 1st) + 3000 + 4000 (won again) + the amount-less deal = 8000 from 4 deals;
    # 9000 was reopened, 2000 closed 23:59:59 on 28 Feb, internal/merged customers are excluded.
    assert value("revenue_won") == d("8000")
    assert value("deals_won") == d("4")
    assert row("revenue_won").sample_size == 4
    assert value("revenue_won", first_day=FEBRUARY) == d("2000")
    assert value("revenue_won", Scope.USER, closed_deals["rep_a"].pk) == d("8000")
    assert value("revenue_won", Scope.TEAM, closed_deals["team"].pk) == d("8000")
    # An empty period reads 0 for a count (not "no data").
    assert value("deals_won", first_day=APRIL) == d("0")


def test_revenue_for_a_week_and_a_year(closed_deals):
    # ISO week of Monday 23 March 2026 holds only the re-won 4000 deal (25 Mar) and the amount-less one.
    assert value("revenue_won", granularity="week", first_day=date(2026, 3, 23)) == d("4000")
    assert value("revenue_won", granularity="year", first_day=date(2026, 1, 1)) == d("10000")


def test_win_rate(closed_deals):
    # March: won 4, lost 1 (the duplicate is left out) → 4 / 5 = 80 %.
    r = row("win_rate")
    assert (r.numerator, r.denominator) == (4, 5)
    assert value("win_rate") == d("80")
    # Rep B: 0 won of 1 closed = 0 %, which is not "no data".
    assert value("win_rate", Scope.USER, closed_deals["rep_b"].pk) == d("0")
    # Source: the referral deal alone → 100 %.
    assert value("win_rate", Scope.SOURCE, "referral") == d("100")
    # Nothing closed in April → NULL.
    assert row("win_rate", first_day=APRIL).value is None


def test_average_and_median_deal_size(closed_deals):
    # Priced won deals in March: 1000, 3000, 4000 → mean 2666.666667, median 3000.
    assert value("avg_deal_size") == d("2666.666667")
    assert value("median_deal_size") == d("3000")
    assert row("median_deal_size").sample_size == 3
    assert row("avg_deal_size", first_day=APRIL).value is None
    assert row("median_deal_size", first_day=APRIL).value is None


def test_sales_cycle_median_and_p90():
    customer = make_customer(at=local(2025, 1, 1))
    for days in (0, 10, 20, 30, 40):
        make_closed_deal(customer, created=local(2026, 3, 20, 9) - _days(days), closed=local(2026, 3, 20, 9))
    # Cycles 0, 10, 20, 30, 40 days: median 20; p90 = 30 + 0.6 × 10 = 36 (linear interpolation).
    assert value("sales_cycle_median") == d("20")
    assert value("sales_cycle_p90") == d("36")
    assert detail(row("sales_cycle_median").extra) == {"mean": 20.0}
    assert row("sales_cycle_median", first_day=APRIL).value is None


def _days(n: int):
    from datetime import timedelta

    return timedelta(days=n)


@pytest.fixture
def pipeline_history():
    customer = make_customer(at=local(2025, 1, 1))
    lead_in, proposal, negotiation = stage("open", 10), stage("open", 30), stage("open", 40)
    # p1: 1000 in Lead in (10 %) from 10 Feb, Proposal (50 %) from 10 Mar.
    p1 = make_deal(customer, amount=Decimal(1000), at=local(2026, 2, 10), stage=lead_in)
    move(p1, "open", local(2026, 3, 10), order=30)
    # p2: created and won in March with a 60 % override: never open at a month end.
    p2 = make_deal(
        customer, amount=Decimal(2000), at=local(2026, 3, 5), stage=stage("open", 20), probability=60
    )
    move(p2, WON, local(2026, 3, 20))
    # p3: 4000 in Lead in since January, lost in April: open at the end of February and March.
    p3 = make_deal(customer, amount=Decimal(4000), at=local(2026, 1, 5), stage=lead_in)
    move(p3, LOST, local(2026, 4, 2), reason="No budget")
    # p4: won in February, reopened into Negotiation (75 %) one second before April.
    p4 = make_deal(customer, amount=Decimal(500), at=local(2026, 2, 1), stage=proposal)
    move(p4, WON, local(2026, 2, 15))
    move(p4, "open", local(2026, 3, 31, 23, 59, 59), order=40)
    assert negotiation.probability == 75


def test_pipeline_value_and_weighted_pipeline_from_history(pipeline_history):
    # End of February: p1 1000 (10 %) + p3 4000 (10 %) → 5000, weighted 100 + 400 = 500.
    assert value("pipeline_value", first_day=FEBRUARY) == d("5000")
    assert value("weighted_pipeline", first_day=FEBRUARY) == d("500")
    # End of March: p1 1000 (50 %) + p3 4000 (10 %) + p4 500 (75 %) → 5500; 500 + 400 + 375 = 1275.
    assert value("pipeline_value") == d("5500")
    assert value("weighted_pipeline") == d("1275")
    assert row("pipeline_value").sample_size == 3
    # End of April: p1 and p4 only (p3 lost on 2 April) → 1500; 500 + 375 = 875.
    assert value("pipeline_value", first_day=APRIL) == d("1500")
    assert value("weighted_pipeline", first_day=APRIL) == d("875")


def test_a_running_month_compares_its_pipeline_with_the_pipeline_at_the_same_day_of_the_month_before(
    pipeline_history,
):
    """KPIS.md §10.1, stocks: on 5 April the pipeline now is compared with the pipeline at the start of
    6 March (p1 1000 at 10 %, p3 4000 at 10 %, p2 2000 created on 5 March with its 60 % override), not
    with the end of March."""
    now = local(2026, 4, 5, 12)
    pipeline = compute("pipeline_value", first_day=APRIL, now=now, also=(MARCH,))[(Scope.COMPANY, "")]
    compared = pipeline.extra.compared
    assert (compared["value"], compared["n"], compared["from"], compared["until"]) == (
        7000.0,
        3,
        "2026-03-01",
        "2026-03-06",
    )
    weighted = compute("weighted_pipeline", first_day=APRIL, now=now, also=(MARCH,))[(Scope.COMPANY, "")]
    assert weighted.extra.compared["value"] == 100.0 + 400.0 + 1200.0
    # The whole of March ended at 5500: a month that has ended carries nothing.
    assert value("pipeline_value") == d("5500")


def test_pipeline_value_of_a_month_computed_alone_equals_within_a_range(pipeline_history):
    alone = value("pipeline_value")
    together = value("pipeline_value", also=(date(2025, 11, 1), date(2025, 12, 1), FEBRUARY))
    assert alone == together == d("5500")


def test_weighted_forecast_for_the_current_period():
    now = local(2026, 3, 20, 12)
    customer = make_customer(at=local(2025, 1, 1))
    make_closed_deal(customer, created=local(2026, 3, 1), closed=local(2026, 3, 10), amount=Decimal(3000))
    make_deal(
        customer,
        amount=Decimal(1000),
        at=local(2026, 3, 2),
        stage=stage("open", 30),
        expected_close_date=date(2026, 3, 28),
    )
    make_deal(
        customer,
        amount=Decimal(2000),
        at=local(2026, 3, 2),
        stage=stage("open", 10),
        probability=40,
        expected_close_date=date(2026, 3, 31),
    )
    make_deal(
        customer,
        amount=Decimal(5000),
        at=local(2026, 3, 2),
        stage=stage("open", 10),
        expected_close_date=date(2026, 4, 1),
    )
    # Won to date 3000 + 1000 × 50 % + 2000 × 40 % = 4300 (the deal due 1 April is April's).
    r = row("forecast_weighted", now=now)
    assert r.value == Decimal(4300)
    assert detail(r.extra) == {"won_to_date": 3000.0, "open_weighted": 1300.0}
    # Only the current period has a forecast.
    assert row("forecast_weighted", first_day=FEBRUARY, now=now) is None


def test_sales_growth_period_over_period_and_year_over_year(closed_deals):
    make_closed_deal(
        closed_deals["customer"], created=local(2025, 3, 1), closed=local(2025, 3, 10), amount=Decimal(4000)
    )
    # March 8000 vs February 2000 → +300 %; vs March 2025 4000 → +100 %.
    assert value("sales_growth_pop") == d("300")
    assert value("sales_growth_yoy") == d("100")
    r = row("sales_growth_pop")
    assert (r.numerator, r.denominator) == (8000, 2000)
    # February 2025 had nothing → growth of March 2025 is NULL ("new"), not infinite.
    assert row("sales_growth_pop", first_day=date(2025, 3, 1)).value is None


def test_sales_growth_like_for_like_for_the_unfinished_period():
    customer = make_customer(at=local(2025, 1, 1))
    now = local(2026, 3, 10, 12)
    make_closed_deal(customer, created=local(2026, 2, 1), closed=local(2026, 2, 5), amount=Decimal(1000))
    make_closed_deal(customer, created=local(2026, 2, 1), closed=local(2026, 2, 20), amount=Decimal(5000))
    make_closed_deal(customer, created=local(2026, 2, 1), closed=local(2026, 3, 3), amount=Decimal(1500))
    # 1–10 March 12:00 (1500) against 1–10 February 12:00 (1000), not all of February (6000): +50 %.
    r = row("sales_growth_pop", now=now)
    assert r.value == Decimal(50)
    assert r.extra.like_for_like is True
    assert r.provisional is True


def test_funnel_conversion_of_a_creation_cohort():
    customer = make_customer(at=local(2025, 1, 1))
    at = local(2026, 3, 2)
    f1 = make_deal(customer, at=at, stage=stage("open", 10))
    move(f1, "open", local(2026, 3, 3), order=20)
    move(f1, "open", local(2026, 3, 4), order=30)
    move(f1, WON, local(2026, 3, 5))
    f2 = make_deal(customer, at=at, stage=stage("open", 10))
    move(f2, "open", local(2026, 3, 3), order=20)
    move(f2, LOST, local(2026, 3, 6), reason="No budget")
    make_deal(customer, at=at, stage=stage("open", 30))  # entered at Proposal: earlier stages implied
    f4 = make_deal(customer, at=at, stage=stage("open", 10))
    move(f4, "open", local(2026, 3, 3), order=30)
    move(f4, "open", local(2026, 3, 8), order=20)  # moved back: Proposal stays reached
    make_deal(customer, at=local(2026, 4, 1), stage=stage("open", 10))  # April cohort
    # Reached: Lead in 4, Qualified 4, Proposal 3 (f1, f3, f4), Negotiation 1 (f1, won), Won 1 → 1 / 4 = 25 %.
    r = row("funnel_conversion")
    assert r.value == Decimal(25)
    steps = {s["stage"]: s for s in r.extra.stages}
    assert [s["reached"] for s in r.extra.stages] == [4, 4, 3, 1, 1]
    assert steps["Proposal"]["to_next"] == pytest.approx(33.3333, abs=1e-3)
    assert steps["Qualified"]["in_progress"] == 1
    assert row("funnel_conversion", first_day=FEBRUARY).value is None
    # Computed with a period two years earlier, the scan covers years: it reads the whole stage history
    # instead of that of the range's deals first (sales.FUNNEL_FILTER_DAYS), with the same result.
    long = row("funnel_conversion", also=(date(2024, 3, 1),))
    assert (long.value, long.extra) == (r.value, r.extra)
    year = row("funnel_conversion", granularity="year", first_day=date(2026, 1, 1))
    assert [s["reached"] for s in year.extra.stages] == [5, 4, 3, 1, 1]  # with the April deal
    assert year.value == Decimal(20)


def test_lead_conversion_within_90_days():
    rep = make_user()
    created = local(2026, 3, 5)
    fast = make_customer(rep, status=Customer.Status.LEAD, at=created, source="website")
    services.customer_set_status(customer=fast, status="active", actor=None, at=local(2026, 4, 4))
    slow = make_customer(rep, status=Customer.Status.LEAD, at=created, source="website")
    services.customer_set_status(customer=slow, status="active", actor=None, at=local(2026, 6, 14))
    make_customer(rep, status=Customer.Status.LEAD, at=created, source="event")
    make_customer(rep, status=Customer.Status.ACTIVE, at=created)  # created as a customer: not a lead
    # 1 of 3 leads converted within 90 days (the other after 101 days) → 33.333333 %.
    assert value("lead_conversion") == d("33.333333")
    assert value("lead_conversion", Scope.SOURCE, "website") == d("50")
    assert value("lead_conversion", Scope.SOURCE, "event") == d("0")
    assert row("lead_conversion", first_day=APRIL).value is None
    # March's 90-day window closed on 30 June: still provisional on 15 June.
    assert row("lead_conversion").provisional is True


def test_forecast_accuracy_of_a_past_period():
    customer = make_customer(at=local(2025, 1, 1))
    # Open at the start of March and expected in March: 1000 at 50 % + 2000 at 10 % → forecast 700.
    make_deal(
        customer,
        amount=Decimal(1000),
        at=local(2026, 2, 1),
        stage=stage("open", 30),
        expected_close_date=date(2026, 3, 20),
    )
    fa2 = make_deal(
        customer,
        amount=Decimal(2000),
        at=local(2026, 2, 1),
        stage=stage("open", 10),
        expected_close_date=date(2026, 3, 25),
    )
    move(fa2, "open", local(2026, 3, 10), order=40)
    move(fa2, WON, local(2026, 3, 20))
    # Created in March: not in the forecast made at its start, but won in it.
    fa3 = make_deal(
        customer, amount=Decimal(3000), at=local(2026, 3, 5), expected_close_date=date(2026, 3, 30)
    )
    move(fa3, WON, local(2026, 3, 22))
    make_deal(customer, amount=Decimal(8000), at=local(2026, 2, 1), expected_close_date=date(2026, 4, 10))
    # Won 5000 against 700 said: 1 − |5000 − 700| / 5000 = 14 %.
    r = row("forecast_accuracy")
    assert (r.numerator, r.denominator) == (700, 5000)
    assert r.value == Decimal(14)
    # April: nothing won → NULL; the current period has no accuracy yet.
    assert row("forecast_accuracy", first_day=APRIL).value is None
    assert row("forecast_accuracy", first_day=date(2026, 6, 1)) is None


def test_new_customers_by_source():
    rep = make_user()
    make_customer(rep, at=local(2026, 3, 1), source="referral")
    make_customer(rep, at=local(2026, 2, 28, 23, 59, 59), source="referral")
    make_customer(rep, at=local(2026, 3, 31, 23, 0), source="ads")
    assert value("new_customers") == d("2")
    assert value("new_customers", Scope.SOURCE, "referral") == d("1")
    assert value("new_customers", first_day=FEBRUARY) == d("1")


def test_sales_rows_are_computed_for_every_scope_in_one_go(closed_deals):
    rows = compute("win_rate", also=(FEBRUARY, APRIL))
    assert {scope for scope, _id in rows} == {Scope.COMPANY, Scope.TEAM, Scope.USER, Scope.SOURCE}
    assert NOW.year == 2026


def test_a_running_month_carries_the_same_days_of_the_month_before():
    """KPIS.md §10.1: on 10 March at noon, March to date is compared with 1–10 February, not all of it."""
    rep = make_user(team=make_team())
    customer = make_customer(rep, at=local(2025, 1, 1))
    created = local(2026, 1, 5)
    for closed in (local(2026, 2, 1), local(2026, 2, 10, 23)):  # inside 1–10 February
        make_closed_deal(customer, created=created, closed=closed, amount=Decimal(1000))
    make_closed_deal(customer, won=False, created=created, closed=local(2026, 2, 5))
    make_closed_deal(customer, created=created, closed=local(2026, 2, 11), amount=Decimal(9000))  # after it
    make_closed_deal(customer, created=created, closed=local(2026, 3, 2), amount=Decimal(500))
    rows = compute("deals_won", now=local(2026, 3, 10, 12), also=(FEBRUARY,))
    compared = rows[(Scope.COMPANY, "")].extra.compared
    assert (compared["value"], compared["from"], compared["until"], compared["days"]) == (
        2.0,
        "2026-02-01",
        "2026-02-11",
        10,
    )
    assert rows[(Scope.USER, str(rep.pk))].extra.compared["value"] == 2.0
    assert rows[(Scope.TEAM, str(rep.team_id))].extra.compared["value"] == 2.0
    win_rate = compute("win_rate", now=local(2026, 3, 10, 12), also=(FEBRUARY,))[(Scope.COMPANY, "")]
    assert (win_rate.extra.compared["numerator"], win_rate.extra.compared["denominator"]) == (2.0, 3.0)
    revenue = compute("revenue_won", now=local(2026, 3, 10, 12), also=(FEBRUARY,))[(Scope.COMPANY, "")]
    assert revenue.extra.compared["value"] == 2000.0
    # A median too, from the records of those days: the cycles of the deals won on 1 and 10 February
    # (27 and 36 days and 23 hours), not of the one won on the 11th.
    cycle = compute("sales_cycle_median", now=local(2026, 3, 10, 12), also=(FEBRUARY,))
    compared = cycle[(Scope.COMPANY, "")].extra.compared
    assert compared["n"] == 2 and compared["value"] == pytest.approx((27 + 36 + 23 / 24) / 2, abs=0.01)
    assert cycle[(Scope.USER, str(rep.pk))].extra.compared["n"] == 2
    # A month that has ended compares with the whole month before: nothing to carry.
    assert compute("deals_won", now=local(2026, 4, 2), also=(FEBRUARY,))[(Scope.COMPANY, "")].extra is None
