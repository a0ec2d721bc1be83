"""Pipeline velocity (KPIS.md §10.7): open deals × win rate × average deal size ÷ sales cycle, each factor
its own KPI of the same period and scope. Worked out by hand in a reporting zone fourteen hours ahead of
UTC (a deal won at 00:00 on 1 April there is won on 31 March in UTC: it belongs to April)."""

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from crm import services
from metrics.kpis import get_kpi
from metrics.kpis.velocity import VELOCITY, velocity_of
from metrics.models import KpiSnapshot, Scope
from metrics.periods import Period
from metrics.services import snapshots_recompute
from metrics.velocity.pages import Factor, _effects
from tests.factories import make_agent, make_customer, make_deal, make_manager, make_team, make_user, stage
from tests.metrics.kit import compute

pytestmark = pytest.mark.django_db

ZONE = ZoneInfo("Pacific/Kiritimati")  # UTC+14
MARCH, APRIL, MAY = date(2026, 3, 1), date(2026, 4, 1), date(2026, 5, 1)
JUNE = datetime(2026, 6, 15, 12, tzinfo=ZONE)


def kt(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=ZONE)


@pytest.fixture(autouse=True)
def _reporting_zone(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


def _won(customer, created: datetime, closed: datetime, amount: str):
    deal = make_deal(customer, amount=Decimal(amount), at=created)
    return services.deal_move_stage(deal=deal, stage=stage("won"), actor=customer.owner, at=closed)


@pytest.fixture
def sales():
    """Rep A (team North): three deals won in March after 10, 20 and 30 days (1 000, 2 000, 3 000), one
    lost, two open, and one won at 00:00 on 1 April after 12 days (4 000). Rep B (team South): one open."""
    rep_a, rep_b = make_user(team=make_team(name="North")), make_user(team=make_team(name="South"))
    a = make_customer(rep_a, at=kt(1, 5))
    b = make_customer(rep_b, at=kt(1, 5))
    _won(a, kt(3, 1), kt(3, 11), "1000")
    _won(a, kt(2, 25), kt(3, 17), "2000")
    _won(a, kt(2, 20), kt(3, 22), "3000")
    lost = make_deal(a, amount=Decimal("500"), at=kt(3, 2))
    services.deal_move_stage(
        deal=lost, stage=stage("lost"), actor=rep_a, at=kt(3, 25), lost_reason="Price too high"
    )
    _won(a, kt(3, 20, 0), kt(4, 1, 0), "4000")  # 10:00 UTC on 31 March: April's all the same
    make_deal(a, amount=Decimal("100"), at=kt(3, 5))
    make_deal(a, amount=Decimal("200"), at=kt(3, 26))
    make_deal(b, amount=Decimal("300"), at=kt(3, 10))
    return {"a": rep_a, "b": rep_b}


def _rows(first_day: date, now: datetime = JUNE, also: tuple[date, ...] = ()):
    return compute(VELOCITY.code, first_day=first_day, now=now, also=also)


def test_velocity_is_the_product_of_its_factors_worked_out_by_hand(sales):
    rows = _rows(MARCH)
    company = rows[(Scope.COMPANY, "")]
    # 4 open at the end of March (the deal won at 00:00 on 1 April was still open), 3 of 4 closed won,
    # 6 000 ÷ 3 won, cycles 10 / 20 / 30 days: 4 × 0.75 × 2 000 ÷ 20.
    assert company.value == Decimal(300)
    assert (company.numerator, company.denominator, company.sample_size) == (Decimal(6000), Decimal(20), 4)
    details = company.extra
    assert (details.open_deals, details.won, details.closed, details.win_rate) == (4, 3, 4, 75.0)
    assert (details.avg_deal_size, details.won_priced, details.won_priced_amount) == (2000.0, 3, 6000.0)
    assert (details.cycle_days, details.cycle_n) == (20.0, 3)
    rep_a, rep_b = sales["a"], sales["b"]
    assert rows[(Scope.USER, str(rep_a.pk))].value == Decimal(225)  # 3 open
    assert rows[(Scope.TEAM, str(rep_a.team_id))].value == Decimal(225)
    # Rep B has an open deal but closed none: no win rate, so no velocity (not 0).
    b = rows[(Scope.USER, str(rep_b.pk))]
    assert b.value is None and b.extra.open_deals == 1 and b.extra.closed == 0
    assert rows[(Scope.TEAM, str(rep_b.team_id))].value is None


def test_the_deal_won_at_midnight_counts_in_april(sales):
    april = _rows(APRIL)[(Scope.COMPANY, "")]
    # Won 1 of 1 (4 000 after 12 days); O1, O2 and B's deal open at the end of April: 3 × 1 × 4 000 ÷ 12.
    assert (april.extra.won, april.extra.closed, april.extra.cycle_days) == (1, 1, 12.0)
    assert april.value == Decimal(1000)


def test_no_velocity_without_a_factor_or_with_a_cycle_of_zero_days(sales):
    february = _rows(date(2026, 2, 1))[(Scope.COMPANY, "")]
    assert february.value is None and february.extra.closed == 0 and february.extra.open_deals == 2
    customer = make_customer(sales["a"], at=kt(1, 5))
    _won(customer, kt(5, 5), kt(5, 5), "700")  # won the moment it was created
    may = _rows(MAY)[(Scope.COMPANY, "")]
    assert may.extra.cycle_days == 0.0 and may.extra.win_rate == 100.0
    assert may.value is None and may.numerator == Decimal(3 * 700)
    assert velocity_of(3, None, Decimal(1), Decimal(1)) == (None, None)
    assert velocity_of(3, Decimal(50), Decimal(1000), None) == (None, Decimal(1500))
    assert velocity_of(0, Decimal(50), Decimal(1000), Decimal(10)) == (Decimal(0), Decimal(0))


def test_a_running_month_is_compared_with_the_same_days_of_the_one_before(sales):
    rows = _rows(APRIL, now=kt(4, 15), also=(MARCH,))
    compared = rows[(Scope.COMPANY, "")].extra.compared
    # 1–15 March: won 1 of 1 (1 000 after 10 days), 5 open on 16 March at 00:00.
    assert (compared["from"], compared["until"], compared["days"]) == ("2026-03-01", "2026-03-16", 15)
    assert Decimal(str(compared["value"])) == Decimal(5 * 1000 / 10)
    assert compared["n"] == 1


def test_every_snapshot_agrees_with_its_factors_snapshots(sales):
    snapshots_recompute(
        start=date(2026, 2, 1), end=date(2026, 5, 1), granularities=["week", "month"], now=JUNE
    )
    factors = {
        code: {
            (s.granularity, s.period_start, s.scope, s.scope_id): s
            for s in KpiSnapshot.objects.filter(kpi=code)
        }
        for code in ("pipeline_value", "win_rate", "avg_deal_size", "sales_cycle_median")
    }
    checked = 0
    for snap in KpiSnapshot.objects.filter(kpi=VELOCITY.code):
        key = (snap.granularity, snap.period_start, snap.scope, snap.scope_id)
        found = {code: rows.get(key) for code, rows in factors.items()}
        details = VELOCITY.details_of(snap.extra)
        assert details.open_deals == (found["pipeline_value"].sample_size if found["pipeline_value"] else 0)
        for code, name in (("win_rate", "win_rate"), ("avg_deal_size", "avg_deal_size"),
                           ("sales_cycle_median", "cycle_days")):  # fmt: skip
            own = found[code].value if found[code] else None
            mine = getattr(details, name)
            assert (own is None and mine is None) or abs(Decimal(str(mine)) - own) < Decimal("0.000001")
        expected, _ = velocity_of(
            details.open_deals,
            *(None if v is None else Decimal(str(v)) for v in (details.win_rate, details.avg_deal_size,
                                                                 details.cycle_days)),
        )  # fmt: skip
        assert (snap.value is None) == (expected is None)
        if expected is not None:
            assert abs(snap.value - expected) < Decimal("0.0001")
            checked += 1
    assert checked >= 4


def test_the_records_behind_each_factor_give_its_number(sales):
    period = Period("month", MARCH)
    row = _rows(MARCH)[(Scope.COMPANY, "")]
    manager = make_manager()
    drill = VELOCITY.drilldown
    assert set(drill.parts) == {"open", "won", "closed", "priced", "cycle"}
    for name, part in drill.parts.items():
        records = part.records(manager, period, Scope.COMPANY, "")
        for gives, total in part.checks:
            assert Decimal(str(total(records, period, Scope.COMPANY, ""))) == Decimal(
                str(getattr(row.extra, gives))
            ), (name, gives)
    # A rep's drill-down lists only the deals of their own customers, whatever the scope asked for.
    rep_b = sales["b"]
    seen = drill.parts["open"].records(rep_b, period, Scope.COMPANY, "")
    assert {d.owner_id for d in seen} == {rep_b.pk}


@pytest.fixture
def velocity_snapshots(sales):
    snapshots_recompute(start=date(2026, 3, 1), end=date(2026, 5, 1), granularities=["month"], now=JUNE)
    return sales


def _page(client, user, headers=None, **params):
    if user is not None:
        client.force_login(user)
    url = reverse("metrics:kpi_detail", args=[VELOCITY.code])
    return client.get(url, {"period": "2026-03-01", **params}, headers=headers)


def test_the_page_shows_the_four_factors_and_which_moved(
    client, velocity_snapshots, django_assert_max_num_queries
):
    manager = make_manager()
    client.force_login(manager)
    with django_assert_max_num_queries(20):
        response = _page(client, None, period="2026-04-01")
    body = response.content.decode()
    assert response.status_code == 200
    assert 'id="velocity-factors"' in body
    for label in ("Open deals", "Win rate", "Average deal size", "Sales cycle (median)"):
        assert label in body
    # 300 → 1 000 a day: ln(1000/300) = ln(3/4) + ln(100/75) + ln(4000/2000) + ln(20/12), each log's share
    # of the 700: open deals −167, win rate +167, deal size +403, the shorter cycle +297.
    assert "1,000 EUR/day" in body
    assert "Moved most by Average deal size: +403 EUR/day." in body
    assert "−167 EUR/day of the change" in body and "+297 EUR/day of the change" in body
    # March is compared with February, which had no win rate: no share to give.
    assert "Moved most by" not in _page(client, manager).content.decode()


def test_the_factors_shares_add_up_to_the_change_of_velocity():
    factors = [
        Factor(VELOCITY, name, "open", None, Decimal(now), Decimal(before), "", None)
        for name, now, before in (("o", 3, 4), ("w", 100, 75), ("a", 4000, 2000), ("c", 12, 20))
    ]
    _effects(factors)
    assert sum(f.effect for f in factors) == pytest.approx(Decimal(700), abs=Decimal("0.000001"))
    assert factors[0].effect == pytest.approx(-factors[1].effect)  # ×3/4 and ×4/3 cancel out
    same = [Factor(VELOCITY, "o", "open", None, Decimal(v), Decimal(v), "", None) for v in (3, 50, 10, 5)]
    _effects(same)
    assert [f.effect for f in same] == [0, 0, 0, 0]
    missing = [Factor(VELOCITY, "o", "open", None, Decimal(1), None, "", None) for _ in range(4)]
    _effects(missing)
    assert [f.effect for f in missing] == [None] * 4


def test_a_rep_sees_their_own_velocity_and_records(client, velocity_snapshots, django_assert_max_num_queries):
    rep_a = velocity_snapshots["a"]
    client.force_login(rep_a)
    with django_assert_max_num_queries(20):
        response = _page(client, None, part="open", rep=velocity_snapshots["b"].pk)
    body = response.content.decode()
    assert response.status_code == 200
    assert "225 EUR/day" in body  # their own, not the company's 300 nor B's
    response = _page(
        client, rep_a, part="open", rep=velocity_snapshots["b"].pk, headers={"HX-Request": "true"}
    )
    assert "<html" not in response.content.decode()


@pytest.mark.parametrize(
    "params",
    [
        {"part": "\x00"},
        {"part": "x" * 10_000},
        {"part": "numerator"},
        {"page": "-1"},
        {"page": "9" * 40},
        {"period": "0001-01-01"},
        {"period": "9999-12-31"},
        {"granularity": "fortnight"},
        {"stage": "9" * 40},
    ],
)
def test_bad_query_parameters_never_fail_the_page(client, velocity_snapshots, params):
    assert _page(client, make_manager(), **params).status_code == 200


def test_an_agent_sees_no_deals_behind_velocity(client, velocity_snapshots):
    response = _page(client, make_agent(), part="won")
    assert response.status_code == 200
    assert "No records in this period." in response.content.decode()


def test_velocity_is_muted_below_the_win_rates_minimum_and_computed_by_the_snapshot_runs():
    kpi = get_kpi(VELOCITY.code)
    assert (kpi.min_sample, kpi.significance, kpi.own_task) == (10, "none", False)
