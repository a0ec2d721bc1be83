"""The product's promise, checked for every KPI: each number equals the records behind it.

One company (the demo seeder's, in a reporting zone fourteen hours ahead of UTC) with the cases that break
such promises: a deal won, reopened and won again later; a merged customer; events exactly on a period
boundary; an internal customer. Every KPI with a drill-down is recomputed at week and month granularity,
then for every scope (company, team, person, and the channel, survey kind, trigger, support agent and
customer segment where a KPI has them) the drill-down's records must give the snapshot's numerator and
denominator (or sample size), by the KPI's declared rule (``Kpi.reconcile``).
"""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.models import User
from crm import services
from crm.data import merge
from crm.models import Customer, Deal, PipelineStage
from metrics.forecasts.services import forecasts_reconstruct
from metrics.health.services import health_refresh
from metrics.kpis import registry
from metrics.models import KpiSnapshot, Scope
from metrics.periods import local_midnight, period_of
from metrics.services import snapshots_recompute

pytestmark = pytest.mark.django_db

ZONE = "Pacific/Kiritimati"  # UTC+14: a local day starts at 10:00 the day before in UTC
UNTIL = date(2026, 3, 1)
GRANULARITIES = ("week", "month")


def _stage(kind: str) -> PipelineStage:
    return PipelineStage.objects.filter(pipeline__is_default=True, kind=kind).order_by("order").first()


def _won(customer: Customer, *, created, closed, title: str, amount: str = "700") -> Deal:
    deal = services.deal_create(
        actor=customer.owner, customer=customer, title=title, amount=Decimal(amount), at=created
    )
    return services.deal_move_stage(deal=deal, stage=_stage("won"), actor=customer.owner, at=closed)


@pytest.fixture
def company(settings):
    """The demo company, two months of history recomputed at week and month, plus the hard cases."""
    settings.TIME_ZONE = ZONE
    call_command("seed_demo", "--size", "tiny", "--until", UNTIL.isoformat(), "--no-progress", "--seed", "3")
    manager = User.objects.filter(role=User.Role.MANAGER).first()
    first_of_february = local_midnight(date(2026, 2, 1))  # 00:00:00 local: February's, not January's
    monday = local_midnight(date(2026, 2, 16))
    a, b, c, d = Customer.objects.filter(status="active", merged_into__isnull=True).order_by("pk")[:4]
    # Won exactly on a month boundary and on a week boundary.
    _won(a, created=first_of_february - timedelta(days=10), closed=first_of_february, title="Month boundary")
    _won(b, created=monday - timedelta(days=10), closed=monday, title="Week boundary")
    # Won in January, reopened in February, won again later in February: it counts in February only.
    deal = _won(c, created=local_midnight(date(2026, 1, 5)), closed=local_midnight(date(2026, 1, 20)),
                title="Reopened", amount="900")  # fmt: skip
    deal = services.deal_move_stage(
        deal=deal, stage=_stage("open"), actor=c.owner, at=local_midnight(date(2026, 2, 3))
    )
    services.deal_move_stage(
        deal=deal, stage=_stage("won"), actor=c.owner, at=local_midnight(date(2026, 2, 20))
    )
    # A ticket created and answered on a boundary.
    ticket = services.ticket_create(
        actor=manager, customer=d, subject="Boundary", at=monday - timedelta(days=3)
    )
    services.ticket_reply(ticket=ticket, actor=manager, body="On it", public=True, at=monday)
    # A merged customer: its records move to the survivor, it leaves every KPI.
    merge.customer_merge(survivor=a, merged=d, actor=manager)
    # An internal customer's won deal counts nowhere.
    internal = services.customer_create(
        actor=manager, name="Our own test GmbH", owner=a.owner, is_internal=True, status="active",
        at=first_of_february - timedelta(days=30),
    )  # fmt: skip
    opened = first_of_february - timedelta(days=5)
    _won(
        internal, created=opened, closed=first_of_february + timedelta(hours=1), title="Internal", amount="5"
    )
    # Forecasts frozen for the history's weeks and months, from its stage history (the accuracy and bias
    # KPIs and their drill-downs).
    january = local_midnight(date(2026, 1, 1))
    forecasts_reconstruct(since=january, until=local_midnight(UNTIL), granularities=GRANULARITIES)
    # Today's health scores, which the health KPIs of the current periods read (KPIS.md §10.10).
    health_refresh()
    # The history's last two months, and the current periods (KPIs of the state now).
    now = timezone.now()
    snapshots_recompute(start=date(2026, 1, 1), end=UNTIL, granularities=GRANULARITIES, now=now)
    current = min(period_of(now, g).start for g in GRANULARITIES)
    snapshots_recompute(start=current, end=now, granularities=GRANULARITIES, now=now)
    return manager


def _expected(snap: KpiSnapshot, gives: str) -> Decimal | None:
    if gives in ("numerator", "denominator", "value", "sample_size"):
        found = getattr(snap, gives)
    else:
        found = (snap.extra or {}).get(gives)
    return None if found is None else Decimal(str(found))


def _same(expected: Decimal | None, got: Decimal | int | float | None) -> bool:
    if expected is None or got is None:
        return expected is None and got in (None, 0)
    return abs(Decimal(str(got)) - expected) <= Decimal("0.01") * max(1, abs(expected)) / 100


def test_every_drilldown_gives_its_numbers(company):
    mismatches = []
    checked = 0
    scopes = set()
    for kpi in registry().values():
        drill = kpi.drilldown
        if drill is None:
            continue
        rows = KpiSnapshot.objects.filter(kpi=kpi.code, granularity__in=GRANULARITIES)
        for snap in rows:
            period = period_of(snap.period_start, snap.granularity)
            for name, part in drill.parts.items():
                records = part.records(company, period, snap.scope, snap.scope_id)
                for gives, total in part.checks:
                    got = total(records, period, snap.scope, snap.scope_id)
                    expected = _expected(snap, gives)
                    checked += 1
                    scopes.add(snap.scope)
                    if not _same(expected, got):
                        mismatches.append((kpi.code, snap.granularity, str(period.first_day), snap.scope,
                                           snap.scope_id, name, gives, expected, got))  # fmt: skip
    by_kpi = {}
    for m in mismatches:
        by_kpi.setdefault(m[0], []).append(m)
    report = "\n".join(f"{code}: {len(ms)} e.g. {ms[0][1:]}" for code, ms in by_kpi.items())
    print(f"\nchecked {checked} numbers\n{report}")
    assert not mismatches, report
    assert scopes == set(Scope.values)  # every kind of breakdown was among them


def test_the_hard_cases_land_where_they_belong(company):
    def won_titles(month: date) -> set[str]:
        drill = registry()["revenue_won"].drilldown
        records = drill.records(
            company, period_of(local_midnight(month), "month"), Scope.COMPANY, "", "numerator"
        )
        return set(records.values_list("title", flat=True))

    january, february = won_titles(date(2026, 1, 1)), won_titles(date(2026, 2, 1))
    assert {"Month boundary", "Week boundary", "Reopened"} <= february
    assert not {"Month boundary", "Reopened", "Internal"} & january
    assert "Internal" not in february
