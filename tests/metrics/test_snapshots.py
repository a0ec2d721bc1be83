"""The snapshot service, the Celery tasks and the RFM refresh: upserts, idempotency, locking, query budget."""

from datetime import date, timedelta
from decimal import Decimal

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm.models import Deal
from metrics import tasks
from metrics.kpis import family_datasets, registry
from metrics.kpis.base import Context, Run
from metrics.models import CustomerRfm, KpiSnapshot, Scope, SnapshotRun
from metrics.periods import local_midnight
from metrics.services import RECOMPUTE_LOCK, RecomputeError, rfm_refresh, snapshots_recompute
from tests.factories import make_agent, make_closed_deal, make_customer, make_ticket, make_user
from tests.metrics.kit import local

pytestmark = pytest.mark.django_db

MARCH, APRIL = local(2026, 3, 1), local(2026, 4, 1)


def table() -> list[tuple]:
    """The snapshot table without ids and computation times, in key order."""
    fields = [f.name for f in KpiSnapshot._meta.fields if f.name not in ("id", "computed_at")]
    return list(
        KpiSnapshot.objects.order_by("kpi", "granularity", "scope", "scope_id", "period_start").values_list(
            *fields
        )
    )


@pytest.fixture
def recent_data(no_auto_assign):
    """A little of everything in the last weeks, so the recent periods have numbers."""
    now = timezone.now()
    rep = make_user()
    customer = make_customer(rep, at=now - timedelta(days=400))
    make_closed_deal(
        customer, created=now - timedelta(days=20), closed=now - timedelta(days=3), amount=Decimal(500)
    )
    make_closed_deal(customer, created=now - timedelta(days=20), closed=now - timedelta(days=2), won=False)
    make_ticket(customer, at=now - timedelta(days=1), assignee=make_agent())
    return rep


def test_recompute_writes_every_kpi_with_null_for_empty_denominators():
    run = snapshots_recompute(start=MARCH, end=APRIL, granularities=["month"], now=local(2026, 6, 15))
    assert run.status == SnapshotRun.Status.OK
    assert run.rows == KpiSnapshot.objects.count() > 0
    win_rate = KpiSnapshot.objects.get(kpi="win_rate", granularity="month", scope=Scope.COMPANY)
    assert (win_rate.value, win_rate.numerator, win_rate.denominator) == (None, 0, 0)
    deals_won = KpiSnapshot.objects.get(kpi="deals_won", granularity="month", scope=Scope.COMPANY)
    assert deals_won.value == 0
    # Data-quality KPIs describe the present, so a past month gets none.
    assert not KpiSnapshot.objects.filter(kpi="duplicate_rate").exists()
    assert win_rate.period_start == MARCH and win_rate.period_end == APRIL


def test_recompute_rejects_nonsense():
    with pytest.raises(RecomputeError):
        snapshots_recompute(start=APRIL, end=MARCH)
    with pytest.raises(RecomputeError):
        snapshots_recompute(start=MARCH, end=APRIL, granularities=["fortnight"])
    with pytest.raises(RecomputeError):
        snapshots_recompute(start=MARCH, end=APRIL, kpis=["happiness"])


def test_recompute_removes_rows_a_scope_no_longer_has():
    rep_a, rep_b = make_user(), make_user()
    deal = make_closed_deal(
        make_customer(rep_a, at=local(2025, 1, 1)), created=local(2026, 3, 2), closed=local(2026, 3, 3)
    )
    snapshots_recompute(
        start=MARCH, end=APRIL, granularities=["month"], kpis=["revenue_won"], now=local(2026, 6, 15)
    )
    assert KpiSnapshot.objects.filter(kpi="revenue_won", scope=Scope.USER, scope_id=str(rep_a.pk)).exists()
    Deal.objects.filter(pk=deal.pk).update(owner=rep_b)
    snapshots_recompute(
        start=MARCH, end=APRIL, granularities=["month"], kpis=["revenue_won"], now=local(2026, 6, 15)
    )
    users = set(
        KpiSnapshot.objects.filter(kpi="revenue_won", scope=Scope.USER).values_list("scope_id", flat=True)
    )
    assert users == {str(rep_b.pk)}


def test_each_task_twice_gives_the_same_snapshots(recent_data):
    start, end = (timezone.now() - timedelta(days=60)).date().isoformat(), timezone.now().date().isoformat()
    for run in (
        lambda: tasks.recompute_kpi_snapshots("week", start, end),
        lambda: tasks.recompute_kpi_snapshots(None, start, end, ["win_rate", "backlog"]),
        tasks.recompute_recent_kpi_snapshots,
        tasks.rebuild_all_kpi_snapshots,
    ):
        run()
        first = table()
        run()
        assert table() == first
    assert len(first) > 100
    assert KpiSnapshot.objects.filter(kpi="revenue_won", value=Decimal(500)).exists()
    tasks.refresh_rfm_segments()
    rfm = list(CustomerRfm.objects.values_list("customer_id", "as_of", "r", "f", "m", "segment"))
    tasks.refresh_rfm_segments()
    assert list(CustomerRfm.objects.values_list("customer_id", "as_of", "r", "f", "m", "segment")) == rfm
    assert SnapshotRun.objects.filter(status=SnapshotRun.Status.OK).count() == 10


def test_a_second_concurrent_run_is_skipped():
    settings = connection.settings_dict
    other = psycopg.connect(
        dbname=settings["NAME"],
        user=settings["USER"],
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        password=settings["PASSWORD"] or None,
        autocommit=True,
    )
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [RECOMPUTE_LOCK])  # a run in progress elsewhere
        run = snapshots_recompute(start=MARCH, end=APRIL, granularities=["month"])
        assert run.status == SnapshotRun.Status.SKIPPED
        assert not KpiSnapshot.objects.exists()
        other.execute("SELECT pg_advisory_unlock(%s)", [RECOMPUTE_LOCK])
        assert (
            snapshots_recompute(start=MARCH, end=APRIL, granularities=["month"]).status
            == SnapshotRun.Status.OK
        )
    finally:
        other.close()


def test_query_count_does_not_grow_with_periods_or_scopes():
    def queries(start, end, granularities) -> int:
        with CaptureQueriesContext(connection) as captured:
            snapshots_recompute(start=start, end=end, granularities=granularities, now=local(2026, 6, 15))
        return len(captured)

    customer = make_customer(at=local(2025, 1, 1))
    make_closed_deal(customer, created=local(2026, 3, 2), closed=local(2026, 3, 3))
    one = queries(MARCH, APRIL, ["month"])
    for _ in range(5):
        make_closed_deal(
            make_customer(at=local(2025, 1, 1)), created=local(2024, 3, 2), closed=local(2026, 2, 3)
        )
    many = queries(local(2023, 1, 1), local(2026, 6, 15), None)
    assert many <= one + 2 * len(registry())  # a few KPIs only query when their periods exist
    # A few statements per dataset (scan, store its facts, add up its periods), none per period or scope.
    assert many < 10 * len(family_datasets(Context(Run(periods={}, now=local(2026, 6, 15)))))


def test_query_budget_of_one_kpi_is_fixed(django_assert_max_num_queries):
    for i in range(10):
        customer = make_customer(at=local(2025, 1, 1))
        make_closed_deal(customer, created=local(2026, 1, 2), closed=local(2026, 1 + i % 5, 3))
    # + the alerts' evaluation after the run (metrics.alerts): a fixed handful when nothing fires (the lock,
    # the targets, the control charts of a granularity whose window the range reaches, the resolve step).
    with django_assert_max_num_queries(36):
        snapshots_recompute(start=local(2024, 1, 1), end=local(2026, 6, 1), kpis=["win_rate", "revenue_won"])


def test_recompute_survives_a_cache_outage(settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    assert (
        snapshots_recompute(start=MARCH, end=APRIL, granularities=["month"]).status == SnapshotRun.Status.OK
    )


def test_rfm_quintiles_segments_and_kept_snapshots():
    as_of = date(2026, 6, 15)
    start = local_midnight(as_of)
    plan = {5: [10, 15, 20, 25, 30], 4: [50, 55, 60, 65], 3: [100, 105, 110], 2: [200, 205], 1: [300]}
    customers = {}
    for score, days_ago in plan.items():
        customers[score] = make_customer(at=local(2024, 1, 1))
        for days in days_ago:
            make_closed_deal(
                customers[score],
                created=local(2024, 6, 1),
                closed=start - timedelta(days=days),
                amount=Decimal(100),
            )
    old = make_customer(at=local(2024, 1, 1))
    make_closed_deal(old, created=local(2024, 6, 1), closed=start - timedelta(days=400))
    rfm_refresh(as_of=as_of)
    scores = {r.customer_id: r for r in CustomerRfm.objects.filter(as_of=as_of)}
    # Five buyers → one per quintile on each axis: most recent, most frequent, biggest spender = 5.
    assert [(scores[c.pk].r, scores[c.pk].f, scores[c.pk].m) for c in customers.values()] == [
        (5, 5, 5),
        (4, 4, 4),
        (3, 3, 3),
        (2, 2, 2),
        (1, 1, 1),
    ]
    segments = [scores[customers[s].pk].segment for s in (5, 4, 3, 2, 1)]
    assert segments == ["champions", "champions", "attention", "hibernating", "lost"]
    assert scores[customers[5].pk].recency_days == 10
    assert scores[customers[5].pk].monetary == Decimal(500)
    assert scores[old.pk].segment == "no_recent" and scores[old.pk].r is None
    # The first scoring also scores the first of last month, so movement has something to compare with.
    assert set(CustomerRfm.objects.values_list("as_of", flat=True)) == {date(2026, 5, 1), as_of}
    for day in (date(2026, 6, 1), date(2026, 6, 14), date(2026, 6, 16)):
        rfm_refresh(as_of=day)
    # Kept: month starts and the snapshot before the latest (for movement); 14 June is dropped.
    assert set(CustomerRfm.objects.values_list("as_of", flat=True)) == {
        date(2026, 5, 1),
        date(2026, 6, 1),
        as_of,
        date(2026, 6, 16),
    }
