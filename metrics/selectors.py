"""Every read of the metrics app. Dashboard reads touch only snapshot rows; drill-downs return live,
access-scoped records through the CRM selectors (``customer_list``, ``deal_list``, ``ticket_list``).
"""

from datetime import date, datetime

from django.db.models import Count, QuerySet

from accounts.models import User
from crm.selectors import customer_list
from metrics.kpis import get_kpi, registry
from metrics.kpis.base import Kpi
from metrics.models import CustomerRfm, KpiSnapshot, KpiTarget, Scope, SnapshotRun
from metrics.periods import period_of


class DrilldownError(ValueError):
    """The drill-down request does not fit the KPI (unknown KPI or part, or a scope it has no data for)."""


def kpi_definitions(*, family: str | None = None) -> list[Kpi]:
    """Every KPI definition in registry order, optionally of one family."""
    return [k for k in registry().values() if family is None or k.family == family]


def kpi_series(
    *,
    kpi: str,
    granularity: str,
    scope: str = Scope.COMPANY,
    scope_id: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[KpiSnapshot]:
    """Snapshot rows of one KPI and scope, oldest period first; ``[since, until)`` on the period start."""
    qs = KpiSnapshot.objects.filter(kpi=kpi, granularity=granularity, scope=scope, scope_id=scope_id)
    if since is not None:
        qs = qs.filter(period_start__gte=since)
    if until is not None:
        qs = qs.filter(period_start__lt=until)
    return qs.order_by("period_start")


def kpi_period_values(
    *,
    granularity: str,
    period_start: datetime,
    scope: str = Scope.COMPANY,
    scope_id: str = "",
    kpis: list[str] | None = None,
) -> dict[str, KpiSnapshot]:
    """Every KPI's snapshot for one period and scope, by KPI code (the dashboard cards)."""
    qs = KpiSnapshot.objects.filter(
        granularity=granularity, period_start=period_start, scope=scope, scope_id=scope_id
    )
    if kpis is not None:
        qs = qs.filter(kpi__in=kpis)
    return {s.kpi: s for s in qs}


def kpi_breakdown(
    *, user: User, kpi: str, granularity: str, period_start: datetime, scope: str
) -> QuerySet[KpiSnapshot]:
    """One KPI's snapshots for one period across the teams, users or sources ``user`` may see."""
    qs = KpiSnapshot.objects.filter(kpi=kpi, granularity=granularity, period_start=period_start, scope=scope)
    if not user.is_manager:
        qs = qs.filter(scope=Scope.USER, scope_id=str(user.pk)) if scope == Scope.USER else qs.none()
    return qs.order_by("scope_id")


def kpi_targets(
    *,
    kpi: str,
    granularity: str,
    scope: str = Scope.COMPANY,
    scope_id: str = "",
    since: datetime | None = None,
) -> QuerySet[KpiTarget]:
    """Targets of one KPI and scope, oldest period first."""
    qs = KpiTarget.objects.filter(kpi=kpi, granularity=granularity, scope=scope, scope_id=scope_id)
    if since is not None:
        qs = qs.filter(period_start__gte=since)
    return qs.order_by("period_start")


def snapshot_run_latest(*, kind: str | None = None, finished: bool = True) -> SnapshotRun | None:
    """The latest run (of ``kind``); with ``finished``, the latest that completed: "data as of"."""
    qs = SnapshotRun.objects.all()
    if kind is not None:
        qs = qs.filter(kind=kind)
    if finished:
        qs = qs.filter(status=SnapshotRun.Status.OK)
    return qs.order_by("-started_at", "-id").first()


def kpi_drilldown(
    *,
    user: User,
    kpi_code: str,
    granularity: str,
    period_start: datetime | date,
    scope: str = Scope.COMPANY,
    scope_id: str = "",
    part: str = "numerator",
) -> QuerySet:
    """The live records behind one of a KPI's numbers (``part``: numerator, denominator, …), scoped to
    ``user``.

    Records always come through the CRM's access selectors, so a rep sees only their own customers'
    records whatever the scope asked for.
    """
    try:
        kpi = get_kpi(kpi_code)
    except KeyError as exc:
        raise DrilldownError(f"unknown KPI {kpi_code!r}") from exc
    if scope not in kpi.scopes:
        raise DrilldownError(f"{kpi_code} has no {scope} scope")
    drill = kpi.drilldown
    if drill is None:
        raise DrilldownError(f"{kpi_code} has no records to drill into")
    if part not in drill.parts:
        raise DrilldownError(f"part must be one of {tuple(drill.parts)}")
    return drill.records(user, period_of(period_start, granularity), scope, scope_id, part)


def rfm_as_of_dates() -> list[date]:
    """The dates that have an RFM snapshot, newest first."""
    return list(CustomerRfm.objects.order_by("-as_of").values_list("as_of", flat=True).distinct())


def rfm_segment_counts(*, user: User, as_of: date | None = None) -> dict[str, int]:
    """Customers per RFM segment on ``as_of`` (the latest snapshot by default), among those ``user`` sees."""
    as_of = as_of or next(iter(rfm_as_of_dates()), None)
    if as_of is None:
        return {}
    rows = (
        customer_rfm_list(user=user, as_of=as_of)
        .order_by()
        .values("segment")
        .annotate(n=Count("id"))
        .order_by()
    )
    return {r["segment"]: r["n"] for r in rows}


def rfm_movement(*, user: User, before: date, after: date) -> dict[tuple[str, str], int]:
    """How many customers moved from each segment on ``before`` to each segment on ``after``."""
    visible = customer_list(user=user).values("pk")
    earlier = CustomerRfm.objects.filter(as_of=before, customer__in=visible)
    later = dict(
        CustomerRfm.objects.filter(as_of=after, customer__in=visible).values_list("customer_id", "segment")
    )
    moves: dict[tuple[str, str], int] = {}
    for customer_id, segment in earlier.values_list("customer_id", "segment"):
        key = (segment, later.get(customer_id, ""))
        moves[key] = moves.get(key, 0) + 1
    return moves


def customer_rfm_list(*, user: User, as_of: date, segment: str | None = None) -> QuerySet[CustomerRfm]:
    """RFM scores on ``as_of`` of the customers ``user`` may see, best first."""
    qs = CustomerRfm.objects.filter(as_of=as_of, customer__in=customer_list(user=user).values("pk"))
    if segment:
        qs = qs.filter(segment=segment)
    return qs.select_related("customer").order_by("-r", "-f", "-m", "customer_id")
