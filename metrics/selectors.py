"""Every read of the metrics app, in one place.

Snapshot reads (series, targets, breakdowns, the runs behind "data as of") touch only the snapshot tables:
a dashboard page costs the same at any data size. Drill-downs return live records through the CRM's
access selectors (``customer_list``, ``deal_list``, ``ticket_list``, …). The manager pages' tables
(adoption per person, channels, RFM segments, before/after go-live) are read here too.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from typing import Any, NamedTuple

from django.core.paginator import Page
from django.db import connection
from django.db.models import Count, DateTimeField, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.sql.where import WhereNode
from django.utils import timezone
from psycopg import sql as pg

from accounts.models import LoginEvent, StaffFeedback, UsageEvent, User
from crm.custom_fields.models import CustomField
from crm.models import CompanySettings, CrmCostItem
from crm.selectors import customer_list
from metrics.kpis import custom, get_kpi, in_section
from metrics.kpis.base import Kpi, Section
from metrics.models import CustomerRfm, KpiSnapshot, KpiTarget, Scope, SnapshotRun
from metrics.periods import Period, period_of


class DrilldownError(ValueError):
    """The drill-down request does not fit the KPI (unknown KPI or part, or a scope it has no data for)."""


# Snapshots and targets
# ---------------------------------------------------------------------------------------------------------


class SnapshotValues(NamedTuple):
    """What the pages read of a snapshot row (cheaper than model instances: hundreds per page)."""

    value: Decimal | None
    numerator: Decimal | None
    denominator: Decimal | None
    sample_size: int | None
    extra: dict
    is_provisional: bool
    computed_at: datetime
    definition_version: int


def _over_periods(
    model: type[KpiSnapshot] | type[KpiTarget],
    kpis: Iterable[str],
    granularity: str,
    periods: Sequence[Period],
    scope: str,
    scope_id: str,
) -> QuerySet:
    """Rows of ``model`` for ``kpis`` and one scope from the first of ``periods`` to the end of the last."""
    return model.objects.filter(
        kpi__in=list(kpis),
        granularity=granularity,
        scope=scope,
        scope_id=scope_id,
        period_start__gte=min(p.start for p in periods),
        period_start__lt=max(p.end for p in periods),
    )


def kpi_series(
    *, kpis: Iterable[str], granularity: str, periods: Sequence[Period], scope: str, scope_id: str = ""
) -> dict[str, dict[date, SnapshotValues]]:
    """Snapshots of ``kpis`` for one scope and ``periods``, by code and first day of the period (1 query)."""
    if not periods:
        return {}
    rows = _over_periods(KpiSnapshot, kpis, granularity, periods, scope, scope_id).values_list(
        "kpi", "period_start", *SnapshotValues._fields
    )
    day_of = {p.start: p.first_day for p in periods}
    series: dict[str, dict[date, SnapshotValues]] = {}
    for kpi, start, *columns in rows:
        day = day_of.get(start) or period_of(start, granularity).first_day
        series.setdefault(kpi, {})[day] = SnapshotValues(*columns)
    return series


def kpi_targets(
    *, kpis: Iterable[str], granularity: str, periods: Sequence[Period], scope: str, scope_id: str = ""
) -> dict[str, dict[date, KpiTarget]]:
    """Targets of ``kpis`` for one scope and ``periods``, by code and first day of the period (1 query)."""
    if not periods:
        return {}
    rows = _over_periods(KpiTarget, kpis, granularity, periods, scope, scope_id)
    targets: dict[str, dict[date, KpiTarget]] = {}
    for row in rows:
        targets.setdefault(row.kpi, {})[period_of(row.period_start, granularity).first_day] = row
    return targets


def kpi_points(
    *, kpi: str, granularity: str, periods: Sequence[Period], scope: str, scope_id: str = ""
) -> list[dict[str, Any]]:
    """One point per period of ``periods`` for one KPI and scope: its first day, the snapshot's value,
    numerator, denominator and sample size and the target's value (None where there is none): 2 queries."""
    series = kpi_series(kpis=[kpi], granularity=granularity, periods=periods, scope=scope, scope_id=scope_id)
    targets = kpi_targets(
        kpis=[kpi], granularity=granularity, periods=periods, scope=scope, scope_id=scope_id
    )
    points = []
    for period in periods:
        values = series.get(kpi, {}).get(period.first_day)
        target = targets.get(kpi, {}).get(period.first_day)
        points.append(
            {
                "period_start": period.first_day,
                "value": getattr(values, "value", None),
                "numerator": getattr(values, "numerator", None),
                "denominator": getattr(values, "denominator", None),
                "sample_size": getattr(values, "sample_size", None),
                "target": None if target is None else target.value,
            }
        )
    return points


# The scopes whose rows are one person's numbers.
PERSONAL_SCOPES = (Scope.USER, Scope.AGENT)


def kpi_breakdown(
    *, user: User, kpi: str, granularity: str, period_start: datetime, scope: str
) -> QuerySet[KpiSnapshot]:
    """One KPI's snapshots for one period across the teams, users or sources ``user`` may see: a manager
    all of them, anyone else their own row of a per-person (or per-agent) breakdown."""
    qs = KpiSnapshot.objects.filter(kpi=kpi, granularity=granularity, period_start=period_start, scope=scope)
    if not user.is_manager:
        qs = qs.filter(scope_id=str(user.pk)) if scope in PERSONAL_SCOPES else qs.none()
    return qs.order_by("scope_id")


def kpi_custom_breakdown(
    *,
    user: User,
    kpi: Kpi,
    field: CustomField,
    granularity: str,
    first_day: date,
    until: date,
    scope: str,
    scope_id: str,
) -> list[KpiSnapshot]:
    """One KPI per option of a custom choice field over the days [first_day, until) of ``scope``, live
    from the records (``metrics.kpis.custom``): a manager's from all of them, anyone else's from those
    they may see. Unsaved snapshots, one grouped query."""
    return custom.breakdown(
        kpi=kpi,
        field=field,
        user=user,
        granularity=granularity,
        first_day=first_day,
        until=until,
        scope=scope,
        scope_id=scope_id,
    )


def kpi_segments(
    *,
    user: User,
    kpis: Iterable[str],
    granularity: str,
    period_starts: Sequence[datetime],
    scope: str,
    scope_ids: Iterable[str] | None = None,
) -> dict[tuple[str, datetime], dict[str, SnapshotValues]]:
    """Snapshots of ``kpis`` per team, user or source (``scope``; of ``scope_ids`` only, if given) for
    a few periods, by (code, period start) and scope id: one query. Managers only (a breakdown shows
    other people's numbers); anyone else gets nothing."""
    if not user.is_manager:
        return {}
    qs = KpiSnapshot.objects.filter(
        kpi__in=list(kpis), granularity=granularity, period_start__in=list(period_starts), scope=scope
    )
    if scope_ids is not None:
        qs = qs.filter(scope_id__in=list(scope_ids))
    found: dict[tuple[str, datetime], dict[str, SnapshotValues]] = defaultdict(dict)
    rows = qs.values_list("kpi", "period_start", "scope_id", *SnapshotValues._fields)
    for kpi, start, scope_id, *columns in rows:
        found[(kpi, start)][scope_id] = SnapshotValues(*columns)
    return dict(found)


def kpi_values_by_scope(
    *, kpis: Iterable[str], granularity: str, period_start: datetime, scope: str
) -> dict[str, dict[str, Decimal | None]]:
    """The values of ``kpis`` for one period, per id of ``scope`` (e.g. per person): one query."""
    rows = KpiSnapshot.objects.filter(
        kpi__in=list(kpis), granularity=granularity, period_start=period_start, scope=scope
    ).values_list("kpi", "scope_id", "value")
    values: dict[str, dict[str, Decimal | None]] = defaultdict(dict)
    for kpi, scope_id, value in rows:
        values[scope_id][kpi] = value
    return dict(values)


def rep_names(*, team: Any = None) -> dict[str, str]:
    """Names of the sales reps (of ``team``), by id as snapshot scope ids spell it."""
    people = User.objects.filter(role=User.Role.REP)
    if team is not None:
        people = people.filter(team=team)
    return {
        str(pk): f"{first} {last}".strip() or username
        for pk, first, last, username in people.values_list("pk", "first_name", "last_name", "username")
    }


def kpi_latest(*, kpi: str, granularity: str, scope: str = Scope.COMPANY) -> KpiSnapshot | None:
    """The latest snapshot of ``kpi`` that has a value."""
    return (
        KpiSnapshot.objects.filter(kpi=kpi, granularity=granularity, scope=scope, value__isnull=False)
        .order_by("-period_start")
        .first()
    )


# Runs: "data as of", health and progress
# ---------------------------------------------------------------------------------------------------------


def snapshot_runs_health() -> tuple[SnapshotRun | None, SnapshotRun | None]:
    """(the last successful run, the latest run that was not skipped): "data as of" and whether it failed."""
    last_ok = SnapshotRun.objects.filter(status=SnapshotRun.Status.OK).order_by("-finished_at", "-id").first()
    latest = (
        SnapshotRun.objects.exclude(status=SnapshotRun.Status.SKIPPED).order_by("-started_at", "-id").first()
    )
    return last_ok, latest


def snapshot_run_since(*, since: datetime) -> SnapshotRun | None:
    """The latest KPI run started at ``since`` or after it (the RFM refresh is not one)."""
    return (
        SnapshotRun.objects.filter(started_at__gte=since - timedelta(seconds=2))
        .exclude(kind=SnapshotRun.Kind.RFM)
        .order_by("-started_at", "-id")
        .first()
    )


def snapshot_run_last_duration(*, kind: str) -> float | None:
    """How long the last successful run of ``kind`` took, in seconds."""
    return (
        SnapshotRun.objects.filter(kind=kind, status=SnapshotRun.Status.OK, duration_seconds__isnull=False)
        .order_by("-started_at")
        .values_list("duration_seconds", flat=True)
        .first()
    )


# Drill-downs
# ---------------------------------------------------------------------------------------------------------


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


def drill_page(*, records: QuerySet, number: Any, per_page: int, cap: int) -> Page:
    """One page of a drill-down's ``records``, in their order, counted up to ``cap``.

    A drill-down's conditions (subqueries: renewed by a later deal, status at the period's end) fool the
    planner's estimates: asked for the newest 25, it walks every deal by creation time looking for the few
    that match (13 s for the renewal rate at 1 M deals). So one unsorted query finds at most ``cap`` + 1
    matches with the columns they sort by, Python sorts them, and the page reads its 25 rows by id. More
    than ``cap``: SQL sorts the matching ids and the page reads those 25 by id.
    """
    from accounts.web import CappedPaginator

    ordering = [*(records.query.order_by or records.model._meta.ordering), "-pk"]
    if not all(isinstance(o, str) and o.lstrip("-").replace("__", "").isidentifier() for o in ordering):
        return CappedPaginator(records, per_page).get_page(number)
    names = [o.lstrip("-") for o in ordering]
    found = list(records.order_by().values_list("pk", *names)[: cap + 1])
    if len(found) > cap:
        # Sorted in SQL, by the ids alone: a top-N of narrow rows, not a sort of every matching row with
        # its customer and owner joined (an external sort of a quarter's deals at a million).
        page = CappedPaginator(records.values_list("pk", flat=True), per_page).get_page(number)
    else:
        # PostgreSQL's order: NULLs last going up, first going down. Stable sorts, last key first.
        for i in reversed(range(len(names))):
            descending = ordering[i].startswith("-")
            present = [row for row in found if row[i + 1] is not None]
            present.sort(key=itemgetter(i + 1), reverse=descending)
            missing = [row for row in found if row[i + 1] is None]
            found = missing + present if descending else present + missing
        ids = [row[0] for row in found]
        page = CappedPaginator(ids, per_page, count=len(ids)).get_page(number)
    page.object_list = list(page.object_list)
    by_id = records.all()
    by_id.query.where = WhereNode()  # the ids came through the conditions and the access rules
    rows = {record.pk: record for record in by_id.filter(pk__in=page.object_list)}
    page.object_list = [rows[pk] for pk in page.object_list if pk in rows]
    return page


# Adoption per person
# ---------------------------------------------------------------------------------------------------------

STAFF_VIA = (UsageEvent.Via.WEB, UsageEvent.Via.API)
INACTIVE_AFTER_DAYS = 14
ADOPTION_SORTS = ("name", "active_days", "logins", "actions", "created", "last_active")


def staff_adoption_rows(*, period: Period, sort: str = "name") -> list[dict[str, Any]]:
    """Per staff member in ``period``: active days, sign-ins, actions (web and API), records created on
    the web, last active.

    The counts come from the KPI engine's usage facts (per person and day, month or week; as fresh as the
    last KPI run), never from the raw events: a year costs what a week costs. Last active is each
    person's latest event, one index lookup each.
    """
    from metrics.kpis.adoption import USAGE
    from metrics.kpis.facts import day_totals, month_totals_by_user, whole_months

    staff = list(
        User.objects.filter(is_service_account=False, is_active=True)
        .select_related("team")
        .annotate(
            last_action=Subquery(
                UsageEvent.objects.filter(user=OuterRef("pk"), via__in=STAFF_VIA)
                .order_by("-at")
                .values("at")[:1],
                output_field=DateTimeField(),
            ),
            last_login_at=Subquery(
                LoginEvent.objects.filter(user=OuterRef("pk")).order_by("-at").values("at")[:1],
                output_field=DateTimeField(),
            ),
        )
    )
    first, after = period.first_day, period.next().first_day
    months = whole_months(first, after)
    usage: Mapping[str, Mapping[str, Decimal]]
    if months and months[0] == first and _month_after(months[-1]) == after:
        usage = month_totals_by_user(USAGE, months)
    else:
        totals = day_totals([USAGE], first, after, team_of={})[USAGE.name]
        usage = {scope_id: values for (scope, scope_id), values in totals.items() if scope == Scope.USER}
    now = timezone.now()
    rows = []
    for user in staff:
        used = usage.get(str(user.pk), {})
        last_active = max(filter(None, (user.last_action, user.last_login_at)), default=None)
        rows.append(
            {
                "user": user,
                "name": str(user),
                "active_days": int(used.get("days", 0)),
                "logins": int(used.get("logins", 0)),
                "actions": int(used.get("actions", 0)),
                "created": int(used.get("creates", 0)),
                "last_active": last_active,
                "inactive": last_active is None or now - last_active > timedelta(days=INACTIVE_AFTER_DAYS),
            }
        )
    key = sort.lstrip("-") if sort.lstrip("-") in ADOPTION_SORTS else "name"
    reverse = sort.startswith("-")
    rows.sort(key=lambda r: (r[key] is None, r[key] if r[key] is not None else 0), reverse=reverse)
    return rows


def _month_after(first_day: date) -> date:
    return Period("month", first_day).next().first_day


# Channels, segments, before and after go-live
# ---------------------------------------------------------------------------------------------------------


def channel_series(*, period: Period) -> dict[str, dict[str, dict[date, SnapshotValues]]]:
    """The channel KPIs (Section.CHANNELS) per source for ``period`` and the one before it, by source,
    code and first day of the period: one query."""
    codes = [kpi.code for kpi in in_section(Section.CHANNELS)]
    periods = [period.previous(), period]
    rows = KpiSnapshot.objects.filter(
        kpi__in=codes,
        granularity=period.granularity,
        scope=Scope.SOURCE,
        period_start__in=[p.start for p in periods],
    ).values_list("scope_id", "kpi", "period_start", *SnapshotValues._fields)
    day_of = {p.start: p.first_day for p in periods}
    series: dict[str, dict[str, dict[date, SnapshotValues]]] = {}
    for source, kpi, start, *columns in rows:
        series.setdefault(source, {}).setdefault(kpi, {})[day_of[start]] = SnapshotValues(*columns)
    return series


def campaign_kpi_values(
    *, kpis: Iterable[str], period: Period, campaign_id: int | None = None
) -> dict[str, dict[str, Decimal | None]]:
    """The values of the campaign KPIs ``kpis`` for ``period``, by campaign id ("" for all campaigns
    together) and code; of one campaign only if ``campaign_id`` is given: one query."""
    rows = KpiSnapshot.objects.filter(
        kpi__in=list(kpis), granularity=period.granularity, period_start=period.start
    )
    if campaign_id is not None:
        rows = rows.filter(scope=Scope.CAMPAIGN, scope_id=str(campaign_id))
    else:
        rows = rows.filter(Q(scope=Scope.CAMPAIGN) | Q(scope=Scope.COMPANY, scope_id=""))
    found: dict[str, dict[str, Decimal | None]] = {}
    for scope_id, code, value in rows.values_list("scope_id", "kpi", "value"):
        found.setdefault(scope_id, {})[code] = value
    return found


def rfm_as_of_dates() -> list[date]:
    """The dates that have an RFM snapshot, newest first."""
    return list(CustomerRfm.objects.order_by("-as_of").values_list("as_of", flat=True).distinct())


def rfm_comparison_date(*, as_of_dates: Sequence[date]) -> date | None:
    """What the newest scoring is compared with: the latest first-of-month scoring at least four weeks
    older (movement over a month, not since last night), else the scoring before it."""
    if len(as_of_dates) < 2:
        return None
    latest = as_of_dates[0]
    monthly = [d for d in as_of_dates[1:] if d.day == 1 and (latest - d).days >= 28]
    return monthly[0] if monthly else as_of_dates[1]


def rfm_segment_summary(*, user: User, as_of: date | None, previous: date | None) -> list[dict[str, Any]]:
    """RFM segments on ``as_of``: size, share of revenue (12-month monetary) and change since ``previous``."""
    if as_of is None:
        return []
    visible = customer_list(user=user).values("pk")
    rows = {
        r["segment"]: r
        for r in CustomerRfm.objects.filter(as_of=as_of, customer__in=visible)
        .order_by()
        .values("segment")
        .annotate(n=Count("id"), revenue=Sum("monetary"))
    }
    before = {}
    if previous is not None:
        before = dict(
            CustomerRfm.objects.filter(as_of=previous, customer__in=visible)
            .order_by()
            .values("segment")
            .annotate(n=Count("id"))
            .values_list("segment", "n")
        )
    total_revenue = sum((r["revenue"] or 0) for r in rows.values()) or None
    summary = []
    for code, label in CustomerRfm.Segment.choices:
        row: Mapping[str, Any] = rows.get(code, {})
        n, revenue = row.get("n", 0), row.get("revenue") or Decimal(0)
        summary.append(
            {
                "code": code,
                "label": label,
                "count": n,
                "revenue": revenue,
                "share": (revenue / total_revenue * 100) if total_revenue else None,
                "change": n - before.get(code, 0) if previous is not None else None,
            }
        )
    return summary


def rfm_movement(*, user: User, before: date, after: date) -> dict[tuple[str, str], int]:
    """How many customers moved from each segment on ``before`` to each segment on ``after`` ("" for no
    longer scored): one grouped join in the database (tens of thousands of customers per scoring)."""
    visible, params = customer_list(user=user).order_by().values("pk").query.sql_with_params()
    query = pg.SQL("""
        SELECT e.segment, COALESCE(l.segment, ''), count(*)
        FROM {rfm} e LEFT JOIN {rfm} l ON l.customer_id = e.customer_id AND l.as_of = %s
        WHERE e.as_of = %s AND e.customer_id IN ({visible})
        GROUP BY 1, 2
    """).format(rfm=pg.Identifier(CustomerRfm._meta.db_table), visible=pg.SQL(visible))
    with connection.cursor() as cursor:
        cursor.execute(query, [after, before, *params])
        return {(a, b): n for a, b, n in cursor.fetchall()}


def customer_rfm_list(*, user: User, as_of: date, segment: str | None = None) -> QuerySet[CustomerRfm]:
    """RFM scores on ``as_of`` of the customers ``user`` may see, best first."""
    qs = CustomerRfm.objects.filter(as_of=as_of, customer__in=customer_list(user=user).values("pk"))
    if segment:
        qs = qs.filter(segment=segment)
    return qs.select_related("customer").order_by("-r", "-f", "-m", "customer_id")


def go_live_comparison(*, months: int = 6) -> dict[str, Any]:
    """The go-live KPIs (Section.GO_LIVE): the mean of ``months`` monthly values before the go-live month
    against after it, with the costs and the latest yearly CRM ROI (Section.GO_LIVE_ROI)."""
    settings_row = CompanySettings.load()
    go_live = settings_row.go_live_date
    roi = next(iter(in_section(Section.GO_LIVE_ROI)), None)
    result: dict[str, Any] = {"go_live": go_live, "months": months, "rows": [], "settings": settings_row}
    result["costs"] = list(CrmCostItem.objects.order_by("start_month", "name"))
    result["roi_kpi"] = roi
    result["roi"] = kpi_latest(kpi=roi.code, granularity="year") if roi else None
    if go_live is None:
        return result
    kpis = in_section(Section.GO_LIVE)
    first = period_of(go_live, "month")
    # Before, after, and (a seasonality check) the after months one year earlier.
    windows = {
        "before": (first.previous(months).start, first.start),
        "after": (first.start, first.next(months).start),
        "year_earlier": (first.previous(12).start, first.previous(12 - months).start),
    }
    months_of: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for code, start, value, numerator, denominator, sample_size in KpiSnapshot.objects.filter(
        kpi__in=[k.code for k in kpis],
        granularity="month",
        scope=Scope.COMPANY,
        value__isnull=False,
        period_start__gte=min(lo for lo, _hi in windows.values()),
        period_start__lt=windows["after"][1],
    ).values_list("kpi", "period_start", "value", "numerator", "denominator", "sample_size"):
        for name, (lo, hi) in windows.items():
            if lo <= start < hi:
                months_of[code][name].append((value, numerator, denominator, sample_size))
    for kpi in kpis:
        pooled = {name: _pooled(months_of[kpi.code][name]) for name in windows}
        result["rows"].append(
            {
                "kpi": kpi,
                **{name: values.value if values else None for name, values in pooled.items()},
                "pooled": pooled,
                "n_before": len(months_of[kpi.code]["before"]),
                "n_after": len(months_of[kpi.code]["after"]),
            }
        )
    return result


def _pooled(months: list[tuple]) -> SnapshotValues | None:
    """Monthly values taken together: their mean, and the sums of their numerators, denominators and
    samples (what a test of before against after reads)."""
    if not months:
        return None

    def total(i: int) -> Decimal | None:
        parts = [m[i] for m in months]
        return None if any(p is None for p in parts) else sum(parts)

    samples = [m[3] for m in months]
    n = None if any(s is None for s in samples) else sum(samples)
    mean = sum(m[0] for m in months) / len(months)
    # A count's months add up (its value is a count); the extra carries that total for its test.
    return SnapshotValues(mean, total(1), total(2), n, {"total": total(0)}, False, timezone.now(), 0)


def staff_feedback_list(*, limit: int = 50) -> QuerySet[StaffFeedback]:
    """The newest ``limit`` feedback notes of the staff, with their authors (for the adoption page)."""
    return StaffFeedback.objects.select_related("user").order_by("-created_at")[:limit]


def kpi_target_list(*, scope: str, scope_id: str) -> QuerySet[KpiTarget]:
    """Every target set for one scope, newest period first."""
    return KpiTarget.objects.filter(scope=scope, scope_id=scope_id).order_by("-period_start", "kpi")
