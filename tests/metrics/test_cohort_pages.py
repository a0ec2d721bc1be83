"""The cohorts and revenue retention page, the KPIs' drill-downs and their task: access, bad input, the query
bound, idempotency, and each drill-down giving its snapshot's numbers."""

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from crm import services
from crm.models import Customer
from metrics.cohorts.services import cohort_snapshots_recompute
from metrics.kpis import get_kpi
from metrics.kpis.revenue_retention import KPIS
from metrics.models import KpiSnapshot, Scope
from metrics.periods import period_of
from metrics.services import snapshots_rebuild_all, snapshots_recompute_recent
from tests.factories import make_closed_deal, make_customer, make_manager, make_team, make_user
from tests.sweep_kit import encode_pairs

pytestmark = pytest.mark.django_db

CODES = [kpi.code for kpi in KPIS]
HOSTILE = ["\x00", "\ud800", "\\u0000", "0000-01-01", "9999-12-31", "0", "-1", "x" * 10_000, "9" * 40, "week"]


def won(customer: Customer, days_ago: int, amount: str) -> None:
    at = timezone.now() - timedelta(days=days_ago)
    make_closed_deal(customer, created=at, closed=at, amount=Decimal(amount))


@pytest.fixture
def world():
    """Two reps' customers who joined 14 months ago: Ann's bought again (expansion), Bob's churned."""
    now = timezone.now()
    ann, bob = make_user(username="ann", team=make_team()), make_user(username="bob", team=make_team())
    manager = make_manager(username="boss")
    mine = make_customer(ann, name="Own Customer GmbH", at=now - timedelta(days=430))
    won(mine, 420, "1000")
    won(mine, 60, "1500")
    secret = make_customer(bob, name="Secret Holdings AG", at=now - timedelta(days=430))
    won(secret, 425, "2000")
    won(secret, 300, "700")
    services.customer_set_status(customer=secret, status="churned", actor=None, at=now - timedelta(days=40))
    cohort_snapshots_recompute()
    return {
        "ann": ann,
        "bob": bob,
        "manager": manager,
        "joined": period_of(now - timedelta(days=430), "month"),
    }


def _cohort_row(response, world):
    return next(row for row in response.context["cohorts"] if row["period"] == world["joined"])


def test_the_page_shows_the_heatmap_and_the_waterfall_from_snapshots(
    client, world, django_assert_max_num_queries
):
    client.force_login(world["manager"])
    with django_assert_max_num_queries(12):
        response = client.get(reverse("metrics:cohorts"), {"granularity": "year"})
    assert response.status_code == 200
    row = _cohort_row(response, world)
    assert row["size"] == 2 and row["active"][0] == 2
    assert response.context["heatmap"]["data"][0]["type"] == "heatmap"
    assert b"chart-cohorts" in response.content and b"chart-waterfall" in response.content
    waterfall = response.context["waterfall"]
    assert waterfall.previous + waterfall.new + waterfall.expansion - waterfall.contraction - (
        waterfall.churned
    ) + waterfall.reactivated == pytest.approx(waterfall.current)
    # Low-n cohorts are drawn apart (grey): two customers are fewer than the minimum.
    assert [trace["showscale"] for trace in response.context["heatmap"]["data"]] == [True, False]


def test_the_page_costs_the_same_with_more_customers(client, world, django_assert_max_num_queries):
    for n in range(30):
        customer = make_customer(world["ann"], at=timezone.now() - timedelta(days=200 + n))
        won(customer, 190, "100")
    cohort_snapshots_recompute()
    client.force_login(world["manager"])
    with django_assert_max_num_queries(12):
        assert client.get(reverse("metrics:cohorts"), {"cohorts": 36}).status_code == 200


def test_a_rep_sees_only_their_own_customers_cohorts(client, world):
    client.force_login(world["ann"])
    # Asking for another rep's numbers changes nothing: a rep always gets their own.
    response = client.get(reverse("metrics:cohorts"), {"rep": world["bob"].pk, "team": "1"})
    assert response.status_code == 200
    assert response.context["filters"].scope == Scope.USER
    assert response.context["filters"].scope_id == str(world["ann"].pk)
    assert _cohort_row(response, world)["size"] == 1


@pytest.mark.parametrize("code", CODES)
def test_drilldowns_never_show_another_reps_customers(client, world, code):
    kpi = get_kpi(code)
    granularity = "month" if code == "cohort_retention" else "year"
    periods = (
        [world["joined"].first_day, timezone.localdate()]
        if granularity == "month"
        else [timezone.localdate()]
    )
    for role in ("ann", "manager"):
        client.force_login(world[role])
        for day in periods:
            for part in kpi.drilldown.parts:
                url = reverse("metrics:kpi_detail", args=[code])
                response = client.get(
                    url, {"granularity": granularity, "period": day.isoformat(), "part": part}
                )
                assert response.status_code == 200
                if role == "ann":
                    assert b"Secret Holdings" not in response.content, (code, part)
    client.force_login(world["ann"])
    export = client.get(
        reverse("metrics:kpi_export", args=[code]), {"granularity": granularity, "format": "csv"}
    )
    rows = list(
        csv.reader(
            io.StringIO(
                b"".join(export.streaming_content).decode() if export.streaming else export.content.decode()
            )
        )
    )
    assert all("Secret" not in cell for row in rows for cell in row)


def test_the_revenue_drilldowns_show_before_and_now(client, world):
    client.force_login(world["manager"])
    url = reverse("metrics:kpi_detail", args=["net_revenue_retention"])
    response = client.get(url, {"granularity": "month", "part": "numerator"})
    assert b"Own Customer GmbH" in response.content and b"1,000 \xe2\x86\x92 1,500" in response.content


@pytest.mark.parametrize("param", ["granularity", "period", "cohorts", "team", "rep"])
def test_bad_query_parameters_never_fail(client, world, param):
    for role in ("ann", "manager"):
        client.force_login(world[role])
        for value in HOSTILE:
            query = encode_pairs([(param, value)])  # byte-exact: a lone surrogate as its invalid bytes
            response = client.get(f"{reverse('metrics:cohorts')}?{query}")
            assert response.status_code == 200, (role, param, value[:20])


def test_a_bad_value_is_named_on_its_field(client, world):
    client.force_login(world["manager"])
    response = client.get(reverse("metrics:cohorts"), {"granularity": "week", "cohorts": "7"})
    form = response.context["form"]
    assert set(form.errors) == {"granularity", "cohorts"}
    assert b"field-error" in response.content
    # It falls back to the defaults: months, the last 24 cohorts.
    assert response.context["filters"].granularity == "month" and response.context["cohort_count"] == 24


def test_the_task_is_idempotent_and_the_regular_runs_leave_these_kpis_alone(world):
    def stored() -> list[tuple]:
        rows = KpiSnapshot.objects.filter(kpi__in=CODES).order_by(
            "kpi", "granularity", "scope", "scope_id", "period_start"
        )
        return list(
            rows.values_list("kpi", "granularity", "period_start", "scope", "scope_id", "value", "extra")
        )

    first = stored()
    assert first
    cohort_snapshots_recompute()
    assert stored() == first
    KpiSnapshot.objects.filter(kpi__in=CODES).delete()
    snapshots_rebuild_all()
    snapshots_recompute_recent()
    assert not KpiSnapshot.objects.filter(kpi__in=CODES).exists()


def _same(expected, got) -> bool:
    expected = None if expected is None else Decimal(str(expected))
    if expected is None or got is None:
        return expected in (None, 0) and got in (None, 0)
    return abs(Decimal(str(got)) - expected) <= Decimal("0.01")


def test_every_drilldown_gives_its_snapshots_numbers(world):
    checked = 0
    for kpi in KPIS:
        for snap in KpiSnapshot.objects.filter(kpi=kpi.code):
            period = period_of(snap.period_start, snap.granularity)
            for part in kpi.drilldown.parts.values():
                records = part.records(world["manager"], period, snap.scope, snap.scope_id)
                for gives, total in part.checks:
                    expected = (
                        getattr(snap, gives)
                        if gives in ("numerator", "denominator")
                        else snap.extra.get(gives)
                    )
                    got = total(records, period, snap.scope, snap.scope_id)
                    assert _same(expected, got), (kpi.code, str(period), snap.scope, gives, expected, got)
                    checked += 1
    assert checked > 100
