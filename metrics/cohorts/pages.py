"""The cohorts and revenue retention page (KPIS.md §10.9), from snapshot rows only: two reads of the snapshot
table whatever the size of the data (the KPIs themselves are computed by their own nightly task)."""

from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext as _

from metrics import charts, dashboard, selectors
from metrics.kpis.customer_history import BUCKETS
from metrics.kpis.details import CohortDetail, WaterfallDetail
from metrics.kpis.revenue_retention import (
    BUCKET_LABELS,
    COHORT_RETENTION,
    GROSS_REVENUE_RETENTION,
    NET_REVENUE_RETENTION,
    REVENUE_WATERFALL,
)
from metrics.periods import Period, period_of

REVENUE_KPIS = (NET_REVENUE_RETENTION, GROSS_REVENUE_RETENTION, REVENUE_WATERFALL)
# Lost revenue is drawn going down.
LOSSES = ("contraction", "churned")


def cohorts_context(*, filters: dashboard.Filters, cohorts: int) -> dict[str, Any]:
    """The page for the filters' period and scope: revenue retention (cards, waterfall, trend) and the
    last ``cohorts`` months of cohorts (heatmap and table)."""
    revenue, heatmap = revenue_context(filters), heatmap_context(filters, cohorts)
    computed = [at for at in (revenue.pop("computed_at"), heatmap.pop("computed_at")) if at is not None]
    return {
        **revenue,
        **heatmap,
        "filters": filters,
        "computed_at": max(computed) if computed else None,
        "waterfall_kpi": REVENUE_WATERFALL,
        "cohort_kpi": COHORT_RETENTION,
    }


def revenue_context(filters: dashboard.Filters) -> dict[str, Any]:
    """NRR, GRR and the waterfall of the shown period (one query for their series)."""
    series = dashboard.load_series(filters, list(REVENUE_KPIS))
    current, previous = filters.period.first_day, filters.period.previous().first_day
    exposure = dashboard.period_exposure(filters.period)
    cards = []
    for kpi in REVENUE_KPIS:
        rows = series.get(kpi.code, {})
        cards.append(
            dashboard.Card(
                kpi=kpi,
                snapshot=rows.get(current),
                previous=rows.get(previous),
                target=None,
                series=[
                    (p.first_day, rows[p.first_day].value if p.first_day in rows else None)
                    for p in filters.periods
                ],
                exposure=exposure,
                period=filters.period,
            )
        )
    snapshot = series.get(REVENUE_WATERFALL.code, {}).get(current)
    waterfall = REVENUE_WATERFALL.details_of(snapshot.extra) if snapshot else None
    buckets: list[dict[str, Any]] = []
    chart = None
    if isinstance(waterfall, WaterfallDetail) and waterfall.current is not None:
        counts = {
            "new": waterfall.new_customers,
            "expansion": waterfall.expanded,
            "contraction": waterfall.contracted,
            "churned": waterfall.lost,
            "reactivated": waterfall.reactivated_customers,
        }
        buckets = [
            {
                "name": name,
                "label": BUCKET_LABELS[name],
                "amount": getattr(waterfall, name) or 0,
                "customers": counts[name] or 0,
                "loss": name in LOSSES,
            }
            for name in BUCKETS
        ]
        chart = charts.waterfall_chart(
            title="{before} → {now}".format(**_labels(filters.period)),
            steps=[
                (_labels(filters.period)["before"], waterfall.previous or 0, "absolute"),
                *((str(b["label"]), -b["amount"] if b["loss"] else b["amount"], "relative") for b in buckets),
                (_labels(filters.period)["now"], waterfall.current, "total"),
            ],
            currency=settings.CRM_CURRENCY,
        )
    trend = charts.lines_chart(
        title=_("Revenue retention over 12-month windows"),
        periods=filters.periods,
        lines=[
            (str(kpi.label), series.get(kpi.code, {}), "y")
            for kpi in (NET_REVENUE_RETENTION, GROSS_REVENUE_RETENTION)
        ],
        y_title="%",
    )
    spans_label = None
    if isinstance(waterfall, WaterfallDetail) and waterfall.spans:
        spans_label = _("%(now)s against %(before)s") % {
            "now": _days(*waterfall.spans[2:]),
            "before": _days(*waterfall.spans[:2]),
        }
    return {
        "cards": cards,
        "spans_label": spans_label,
        "waterfall": waterfall,
        "waterfall_chart": chart,
        "buckets": buckets,
        "trend": trend,
        "computed_at": _latest(row for rows in series.values() for row in rows.values()),
    }


def _days(first: str, until: str) -> str:
    """A half-open span of local days, as its first and last day."""
    days = (date.fromisoformat(first), date.fromisoformat(until) - timedelta(days=1))
    return " – ".join(date_format(day, "SHORT_DATE_FORMAT") for day in days)


def _labels(period: Period) -> dict[str, str]:
    """The two bars' names: the period before (the same days of it while the period runs) and the period."""
    before = charts.period_label(period.previous())
    if period.start <= timezone.now() < period.end:
        before = _("%(period)s, same days") % {"period": before}
    return {"before": before, "now": charts.axis_label(period)}


def heatmap_context(filters: dashboard.Filters, count: int) -> dict[str, Any]:
    """The last ``count`` monthly cohorts up to the month the shown period ends in (or this month), in the
    filters' scope (one query): a row per cohort with customers, its share active at the end of each month
    since, oldest first."""
    until = min(filters.period.end - timedelta(microseconds=1), timezone.now())
    last = period_of(until, "month")
    months = [last.previous(steps) for steps in range(count - 1, -1, -1)]
    found = selectors.kpi_series(
        kpis=[COHORT_RETENTION.code],
        granularity="month",
        periods=months,
        scope=filters.scope,
        scope_id=filters.scope_id,
    ).get(COHORT_RETENTION.code, {})
    rows: list[dict[str, Any]] = []
    for period in months:
        snapshot = found.get(period.first_day)
        if snapshot is None or not snapshot.sample_size:
            continue
        size = snapshot.sample_size
        details = COHORT_RETENTION.details_of(snapshot.extra)
        active = list(details.active or ()) if isinstance(details, CohortDetail) else []
        row: dict[str, Any] = {
            "period": period,
            "label": charts.period_label(period),
            "size": size,
            "active": active,
            "shares": [round(100 * a / size, 1) for a in active],
            "low": size < COHORT_RETENTION.min_sample,
            "snapshot": snapshot,
            "value": dashboard.format_value(COHORT_RETENTION, snapshot.value),
        }
        rows.append(row)
    width = max((len(row["shares"]) for row in rows), default=0)
    for row in rows:
        row["cells"] = [*row["shares"], *[None] * (width - len(row["shares"]))]
    return {
        "cohorts": rows,
        "cohort_months": list(range(width)),
        "cohort_count": count,
        "heatmap": charts.cohort_heatmap(
            title=_("Share of each cohort active at the end of each month since it joined"),
            rows=rows,
            months=width,
            low_n=COHORT_RETENTION.min_sample,
        ),
        "computed_at": _latest(found.values()),
    }


def _latest(snapshots: Any) -> datetime | None:
    return max((s.computed_at for s in snapshots), default=None)
