"""Reads for the manager pages beside the dashboard: adoption, segments and channels, before/after go-live.

Trends come from snapshot rows; the per-person adoption table counts one period's login and usage events
with one grouped query each (bounded by the number of staff, not by the history).
"""

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, DateTimeField, OuterRef, Q, Subquery, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import LoginEvent, UsageEvent, User
from crm.models import CompanySettings, CrmCostItem, Source
from metrics.models import CustomerRfm, KpiSnapshot, Scope
from metrics.periods import Period, period_of, reporting_tz

STAFF_VIA = (UsageEvent.Via.WEB, UsageEvent.Via.API)
INACTIVE_AFTER_DAYS = 14
ADOPTION_SORTS = ("name", "active_days", "logins", "created", "updated", "last_active")
GO_LIVE_KPIS = (
    "revenue_won",
    "win_rate",
    "sales_cycle_median",
    "churn_rate",
    "frt_median",
    "sla_attainment",
    "nps_relationship",
    "csat",
    "field_completeness",
)
ACQUISITION_KPIS = ("new_customers", "lead_conversion", "win_rate", "cac")


def adoption_rows(*, period: Period, sort: str = "name") -> list[dict[str, Any]]:
    """Per staff member in ``period``: active days, logins, records created and updated, last active."""
    in_period = {"at__gte": period.start, "at__lt": period.end}
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
    logins = dict(
        LoginEvent.objects.filter(**in_period)
        .order_by()
        .values("user")
        .annotate(n=Count("id"))
        .values_list("user", "n")
    )
    usage = {
        row["user"]: row
        for row in UsageEvent.objects.filter(via__in=STAFF_VIA, **in_period)
        .order_by()
        .values("user")
        .annotate(
            created=Count("id", filter=Q(verb=UsageEvent.Verb.CREATE)),
            updated=Count("id", filter=~Q(verb=UsageEvent.Verb.CREATE)),
            active_days=Count(TruncDate("at", tzinfo=reporting_tz()), distinct=True),
        )
    }
    now = timezone.now()
    rows = []
    for user in staff:
        used = usage.get(user.pk, {})
        last_active = max(filter(None, (user.last_action, user.last_login_at)), default=None)
        rows.append(
            {
                "user": user,
                "name": str(user),
                "active_days": used.get("active_days", 0),
                "logins": logins.get(user.pk, 0),
                "created": used.get("created", 0),
                "updated": used.get("updated", 0),
                "last_active": last_active,
                "inactive": last_active is None or now - last_active > timedelta(days=INACTIVE_AFTER_DAYS),
            }
        )
    key = sort.lstrip("-") if sort.lstrip("-") in ADOPTION_SORTS else "name"
    reverse = sort.startswith("-")
    rows.sort(key=lambda r: (r[key] is None, r[key] if r[key] is not None else 0), reverse=reverse)
    return rows


def source_rows(*, period: Period) -> list[dict[str, Any]]:
    """Acquisition by channel for ``period``: new customers, lead conversion, win rate and CAC per source."""
    snapshots = KpiSnapshot.objects.filter(
        kpi__in=ACQUISITION_KPIS,
        granularity=period.granularity,
        period_start=period.start,
        scope=Scope.SOURCE,
    ).values_list("kpi", "scope_id", "value")
    table: dict[str, dict[str, Decimal | None]] = defaultdict(dict)
    for kpi, source, value in snapshots:
        table[source][kpi] = value
    return [{"source": label, "code": code, **table.get(code, {})} for code, label in Source.choices]


def segment_summary(*, user: User, as_of: date | None, previous: date | None) -> list[dict[str, Any]]:
    """RFM segments on ``as_of``: size, share of revenue (12-month monetary) and change since ``previous``."""
    from crm.selectors import customer_list

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
        row = rows.get(code, {})
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


def go_live_comparison(*, months: int = 6) -> dict[str, Any]:
    """Headline KPIs: the mean of ``months`` monthly values before the go-live month against after it."""
    from metrics.kpis import registry

    settings_row = CompanySettings.load()
    go_live = settings_row.go_live_date
    result: dict[str, Any] = {"go_live": go_live, "months": months, "rows": [], "settings": settings_row}
    result["costs"] = list(CrmCostItem.objects.order_by("start_month", "name"))
    result["roi"] = (
        KpiSnapshot.objects.filter(
            kpi="crm_roi", scope=Scope.COMPANY, value__isnull=False, granularity="year"
        )
        .order_by("-period_start")
        .first()
    )
    if go_live is None:
        return result
    first = period_of(go_live, "month")
    before_start, after_end = first.previous(months).start, first.next(months).start
    values: dict[str, dict[str, list[Decimal]]] = defaultdict(lambda: {"before": [], "after": []})
    for kpi, start, value in KpiSnapshot.objects.filter(
        kpi__in=GO_LIVE_KPIS,
        granularity="month",
        scope=Scope.COMPANY,
        value__isnull=False,
        period_start__gte=before_start,
        period_start__lt=after_end,
    ).values_list("kpi", "period_start", "value"):
        values[kpi]["before" if start < first.start else "after"].append(value)
    kpis = registry()
    for code in GO_LIVE_KPIS:
        if code not in kpis:
            continue
        before, after = values[code]["before"], values[code]["after"]
        mean_before = sum(before) / len(before) if before else None
        mean_after = sum(after) / len(after) if after else None
        result["rows"].append(
            {
                "kpi": kpis[code],
                "before": mean_before,
                "after": mean_after,
                "n_before": len(before),
                "n_after": len(after),
            }
        )
    return result
