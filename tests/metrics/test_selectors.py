"""Snapshot reads and drill-downs: the records behind a number, filtered by the CRM's access rules."""

from datetime import date
from decimal import Decimal

import pytest
from django.utils import timezone

from crm import services
from crm.models import Deal
from metrics.kpis import registry
from metrics.models import KpiSnapshot, Scope
from metrics.periods import Period
from metrics.selectors import (
    DrilldownError,
    drill_page,
    kpi_breakdown,
    kpi_drilldown,
    kpi_series,
    kpi_values_by_scope,
    snapshot_runs_health,
)
from metrics.services import snapshots_recompute
from tests.factories import (
    make_agent,
    make_closed_deal,
    make_customer,
    make_deal,
    make_manager,
    make_ticket,
    make_user,
    stage,
)
from tests.metrics.kit import local

pytestmark = pytest.mark.django_db

MARCH = date(2026, 3, 1)


@pytest.fixture
def two_reps(no_auto_assign):
    rep_a, rep_b = make_user(), make_user()
    deals = {}
    for rep in (rep_a, rep_b):
        customer = make_customer(rep, at=local(2025, 1, 1))
        deals[rep.pk] = make_closed_deal(customer, created=local(2026, 3, 2), closed=local(2026, 3, 10))
        make_closed_deal(customer, created=local(2026, 3, 2), closed=local(2026, 3, 11), won=False)
        make_ticket(customer, at=local(2026, 3, 4), category="complaint")
    return rep_a, rep_b, deals


def drill(
    user, code: str, part: str = "numerator", scope: str = Scope.COMPANY, scope_id: str = ""
) -> set[int]:
    qs = kpi_drilldown(
        user=user,
        kpi_code=code,
        granularity="month",
        period_start=MARCH,
        scope=scope,
        scope_id=scope_id,
        part=part,
    )
    return set(qs.values_list("pk", flat=True))


def test_drilldown_rep_sees_only_own_records(two_reps):
    rep_a, rep_b, deals = two_reps
    manager = make_manager()
    assert drill(manager, "revenue_won") == {deals[rep_a.pk].pk, deals[rep_b.pk].pk}
    assert drill(rep_a, "revenue_won") == {deals[rep_a.pk].pk}
    # Asking for the other rep's scope shows nothing of theirs.
    assert drill(rep_a, "revenue_won", scope=Scope.USER, scope_id=str(rep_b.pk)) == set()
    # Denominator of the win rate: the rep's won and lost deals.
    assert len(drill(rep_a, "win_rate", part="denominator")) == 2
    assert len(drill(manager, "complaint_rate")) == 2
    assert len(drill(rep_a, "complaint_rate")) == 1


def test_a_kpis_records_come_newest_first_by_the_date_that_counts_them(no_auto_assign):
    rep, other = make_user(), make_user()
    customer = make_customer(rep, at=local(2025, 1, 1))
    # Created in the opposite order to their closing: the list follows the closing.
    closed = [
        make_closed_deal(
            customer, created=local(2026, 2, 28 - day), closed=local(2026, 3, 2 + day), won=day % 2 == 0
        )
        for day in range(6)
    ]
    make_closed_deal(make_customer(other), created=local(2026, 3, 1), closed=local(2026, 3, 20))
    make_closed_deal(customer, created=local(2026, 2, 1), closed=local(2026, 4, 2))  # closed in April
    for user, expected in ((rep, closed), (make_manager(), None)):
        records = kpi_drilldown(
            user=user, kpi_code="win_rate", granularity="month", period_start=MARCH, part="denominator"
        )
        ids = list(records.values_list("pk", flat=True))
        if expected is not None:
            assert ids == [d.pk for d in reversed(expected)]
        else:
            assert len(ids) == 7  # the other rep's deal too, for the manager
        # Beyond the cap, SQL sorts the ids: the same order.
        page = drill_page(records=records, number=1, per_page=4, cap=2)
        assert [d.pk for d in page.object_list] == ids[:4]


def test_every_kpi_drills_down_for_every_part(two_reps):
    rep_a, _rep_b, _deals = two_reps
    manager, agent = make_manager(), make_agent()
    for code, kpi in registry().items():
        if kpi.drilldown is None:
            continue
        for user in (manager, rep_a, agent):
            for part in kpi.drilldown.parts:
                qs = kpi_drilldown(
                    user=user, kpi_code=code, granularity="month", period_start=MARCH, part=part
                )
                list(qs[:5])
    assert drill(rep_a, "churn_rate", part="denominator") == set(rep_a.customers.values_list("pk", flat=True))


def test_pipeline_drilldown_lists_the_deals_open_at_the_end_of_the_period(no_auto_assign):
    rep = make_user()
    customer = make_customer(rep, at=local(2025, 1, 1))
    make_closed_deal(customer, created=local(2026, 2, 1), closed=local(2026, 2, 20))  # closed before
    still_open = make_deal(customer, at=local(2026, 3, 2))
    won_later = make_closed_deal(customer, created=local(2026, 3, 3), closed=local(2026, 4, 5))
    reopened = make_closed_deal(customer, created=local(2026, 3, 1), closed=local(2026, 3, 10))
    reopened = services.deal_move_stage(deal=reopened, stage=stage("open"), actor=rep, at=local(2026, 3, 15))
    services.deal_move_stage(
        deal=reopened, stage=stage("lost"), actor=rep, at=local(2026, 4, 10), lost_reason="Budget"
    )
    make_deal(customer, at=local(2026, 4, 2))  # created after March

    assert drill(rep, "pipeline_value") == {still_open.pk, won_later.pk, reopened.pk}
    assert drill(rep, "weighted_pipeline") == {still_open.pk, won_later.pk, reopened.pk}
    # The current period shows the pipeline as it is now: the deals open now.
    now = timezone.now()
    current = kpi_drilldown(user=rep, kpi_code="pipeline_value", granularity="month", period_start=now)
    open_now = set(Deal.objects.filter(status="open").values_list("pk", flat=True))
    assert set(current.values_list("pk", flat=True)) == open_now
    assert still_open.pk in open_now and won_later.pk not in open_now


def test_drilldown_rejects_unknown_requests(two_reps):
    rep_a, _rep_b, _deals = two_reps
    with pytest.raises(DrilldownError):
        drill(rep_a, "happiness")
    with pytest.raises(DrilldownError):
        drill(rep_a, "win_rate", part="everything")
    with pytest.raises(DrilldownError):
        drill(rep_a, "crm_roi")
    with pytest.raises(DrilldownError):
        drill(rep_a, "cac", scope=Scope.USER, scope_id=str(rep_a.pk))


def test_series_and_period_reads_touch_only_snapshots(two_reps, django_assert_num_queries):
    rep_a, rep_b, _deals = two_reps
    snapshots_recompute(
        start=local(2026, 1, 1), end=local(2026, 5, 1), granularities=["month"], now=local(2026, 6, 15)
    )
    months = [Period("month", date(2026, m, 1)) for m in (1, 2, 3, 4)]
    with django_assert_num_queries(1):
        series = kpi_series(
            kpis=["win_rate", "deals_won"], granularity="month", periods=months, scope=Scope.COMPANY
        )
    assert sorted(series["win_rate"]) == [p.first_day for p in months]
    assert (
        series["win_rate"][MARCH].value == Decimal(50) and series["win_rate"][date(2026, 1, 1)].value is None
    )
    assert series["deals_won"][MARCH].value == 2
    by_rep = kpi_values_by_scope(
        kpis=["deals_won"], granularity="month", period_start=local(2026, 3, 1), scope="user"
    )
    assert by_rep == {str(rep_a.pk): {"deals_won": 1}, str(rep_b.pk): {"deals_won": 1}}
    manager = make_manager()
    assert (
        kpi_breakdown(
            user=manager,
            kpi="deals_won",
            granularity="month",
            period_start=local(2026, 3, 1),
            scope=Scope.USER,
        ).count()
        == 2
    )
    own = kpi_breakdown(
        user=rep_a, kpi="deals_won", granularity="month", period_start=local(2026, 3, 1), scope=Scope.USER
    )
    assert list(own.values_list("scope_id", flat=True)) == [str(rep_a.pk)]
    last_ok, latest = snapshot_runs_health()
    assert last_ok == latest and last_ok.rows == KpiSnapshot.objects.count()
    assert rep_b.pk != rep_a.pk
