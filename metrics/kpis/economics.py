"""Unit economics and ROI (KPIS.md §5): CAC, retention cost, CLV, CLV:CAC and CRM ROI.

Spend is entered per month, so these KPIs exist for months, quarters and years, not weeks.
"""

from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncMonth
from django.utils.translation import gettext_lazy as _

from accounts.models import Seat
from crm.models import CompanySettings, CrmCostItem, Deal
from metrics.kpis import facts
from metrics.kpis.base import (
    COMPANY_ONLY,
    MONTHLY_AND_LONGER,
    Better,
    Context,
    Family,
    Kpi,
    Row,
    Section,
    Unit,
)
from metrics.kpis.builders import HUNDRED, dec, divide, grouped, rows_from
from metrics.kpis.details import ClvDetail, RoiDetail
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, Drill, Part, dataset_part
from metrics.kpis.retention import RETAINED, _churned
from metrics.kpis.shared import (
    ACTIVITY,
    CLOSED_DEALS,
    INVALID_LOST,
    LOST,
    NEW_CUSTOMERS,
    SPEND,
    WON,
    customer_activity,
    live,
)
from metrics.models import Scope
from metrics.periods import Period, local_midnight, reporting_tz, shift_date
from metrics.stats import difference_interval

CAC_SCOPES = (Scope.COMPANY, Scope.SOURCE)
NEW_CUSTOMERS_PART = dataset_part(NEW_CUSTOMERS, "new", DENOMINATOR, label=_("New customers"))


def _cac_values(ctx: Context) -> dict[tuple[str, Any, str, str], tuple[Decimal | None, Decimal, Decimal]]:
    """(CAC, acquisition spend, new customers) per period and company/source scope."""

    def build() -> dict[tuple[str, Any, str, str], tuple[Decimal | None, Decimal, Decimal]]:
        spend, new = grouped(ctx, SPEND), grouped(ctx, NEW_CUSTOMERS)
        out = {}
        for key in {*spend, *new}:
            if key[2] not in CAC_SCOPES or key[0] not in MONTHLY_AND_LONGER:
                continue
            s = spend.get(key, {})
            cost, customers = dec(s.get("acquisition")), dec(new.get(key, {}).get("new"))
            # No spend entered is "no data", not a CAC of 0.
            out[key] = (divide(cost, customers) if s.get("acquisition_entries") else None, cost, customers)
        return out

    return ctx.memo("cac", build)


def _cac(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    values = _cac_values(ctx)

    def fn(_v: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
        cac, cost, customers = values.get(
            (period.granularity, period.first_day, scope, scope_id), (None, 0, 0)
        )
        return cac, dec(cost), dec(customers), int(customers), None

    return rows_from(ctx, kpi, {key: {} for key in values}, fn)


CAC = Kpi(
    code="cac",
    family=Family.ECONOMICS,
    label=_("Customer acquisition cost (CAC)"),
    unit=Unit.CURRENCY,
    better=Better.DOWN,
    formula=_(
        "(marketing + sales spend of the months in the period) ÷ new customers of the period; per source: "
        "the "
        "spend booked on that channel ÷ that channel's new customers; no spend entered → no value"
    ),
    compute=_cac,
    scopes=CAC_SCOPES,
    granularities=MONTHLY_AND_LONGER,
    drill=Drill(
        {
            NUMERATOR: dataset_part(SPEND, "acquisition", NUMERATOR, label=_("Marketing and sales spend")),
            DENOMINATOR: NEW_CUSTOMERS_PART,
        }
    ),
    sections=frozenset({Section.CHANNELS}),
)


def _retention_cost(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    spend, activity = grouped(ctx, SPEND), customer_activity(ctx)

    def fn(_v: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
        key = (period.granularity, period.first_day, scope, scope_id)
        s = spend.get(key, {})
        cost, retained = dec(s.get("retention")), Decimal(activity.get(key, {}).get("retained", 0))
        return (
            (divide(cost, retained) if s.get("retention_entries") else None),
            cost,
            retained,
            int(retained),
            None,
        )

    return rows_from(ctx, kpi, {}, fn)


RETENTION_COST = Kpi(
    code="retention_cost_per_customer",
    family=Family.ECONOMICS,
    label=_("Retention cost per retained customer"),
    unit=Unit.CURRENCY,
    better=Better.DOWN,
    formula=_("retention spend of the months in the period ÷ customers retained over the period (set-based)"),
    compute=_retention_cost,
    scopes=COMPANY_ONLY,
    granularities=MONTHLY_AND_LONGER,
    drill=Drill(
        {
            NUMERATOR: dataset_part(SPEND, "retention", NUMERATOR, label=_("Retention spend")),
            DENOMINATOR: replace(RETAINED, gives=DENOMINATOR),
        }
    ),
)


ClvValues = dict[tuple[str, date], tuple[Decimal | None, Decimal | None, Decimal | None, ClvDetail]]


def _clv_values(ctx: Context) -> ClvValues:
    """(CLV, ARPA × margin, churn fraction, details) per company period."""

    def build() -> ClvValues:
        margin = CompanySettings.load().gross_margin_percent / HUNDRED
        won, activity = grouped(ctx, CLOSED_DEALS), customer_activity(ctx)
        out = {}
        for g in ctx.granularities:
            for period in ctx.periods[g]:
                key = (g, period.first_day, Scope.COMPANY, "")
                a = activity.get(key, {})
                revenue = dec(won.get(key, {}).get("won_amount"))
                arpa = divide(revenue, Decimal(a.get("during", 0)))
                churn = divide(Decimal(a.get("churned", 0)), Decimal(a.get("start", 0)))
                value = arpa * margin / churn if arpa is not None and churn else None
                details = ClvDetail(
                    revenue=float(revenue),
                    churned=a.get("churned", 0),
                    arpa=float(arpa) if arpa is not None else None,
                    gross_margin_percent=float(margin * HUNDRED),
                    churn_rate_percent=float(churn * HUNDRED) if churn is not None else None,
                    active_customers=a.get("during", 0),
                )
                out[(g, period.first_day)] = (
                    value,
                    arpa * margin if arpa is not None else None,
                    churn,
                    details,
                )
        return out

    return ctx.memo("clv", build)


def _clv(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    values = _clv_values(ctx)

    def fn(_v: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
        value, num, den, details = values[(period.granularity, period.first_day)]
        return value, num, den, details.active_customers, details

    return rows_from(ctx, kpi, {}, fn)


CLV = Kpi(
    code="clv",
    family=Family.ECONOMICS,
    label=_("Customer lifetime value (CLV)"),
    unit=Unit.CURRENCY,
    better=Better.UP,
    formula=_(
        "ARPA × gross margin % ÷ churn rate of the same period; ARPA = revenue won ÷ customers active in the "
        "period; no churn → no value"
    ),
    compute=_clv,
    scopes=COMPANY_ONLY,
    drill=Drill(
        {
            NUMERATOR: dataset_part(CLOSED_DEALS, "won_amount", "revenue", label=_("Won in the period")),
            DENOMINATOR: Part(_churned, "churned", label=_("Churned in the period")),
        }
    ),
    detail=ClvDetail,
)


def _clv_cac(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    clv, cac = _clv_values(ctx), _cac_values(ctx)

    def fn(_v: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
        lifetime = clv[(period.granularity, period.first_day)][0]
        acquisition = cac.get((period.granularity, period.first_day, Scope.COMPANY, ""), (None, 0, 0))[0]
        value = divide(lifetime, acquisition) if lifetime is not None and acquisition is not None else None
        return value, lifetime, acquisition, None, None

    return rows_from(ctx, kpi, {}, fn)


CLV_CAC = Kpi(
    code="clv_cac_ratio",
    family=Family.ECONOMICS,
    label=_("CLV : CAC"),
    unit=Unit.RATIO,
    better=Better.UP,
    formula=_("CLV ÷ CAC of the same period (rule of thumb: ≥ 3); either missing → no value"),
    compute=_clv_cac,
    scopes=COMPANY_ONLY,
    granularities=MONTHLY_AND_LONGER,
    # No records of its own: its numbers are the CLV and the CAC of the period (see their pages).
)


def _month_list(first: date, last: date) -> list[date]:
    months, month = [], first.replace(day=1)
    while month <= last:
        months.append(month)
        month = shift_date(month, "month", 1)
    return months


def _roi_inputs(ctx: Context, go_live: date) -> dict[str, Any]:
    """Monthly closed deals since a year before go-live, licensed users per month end, CRM cost items."""
    baseline_start = shift_date(go_live.replace(day=1), "month", -12)
    seats = list(Seat.objects.filter(user__is_service_account=False).values_list("started_at", "ended_at"))
    last = ctx.now.astimezone(reporting_tz()).date()
    licensed = {}
    for month in _month_list(go_live, last):
        end = local_midnight(shift_date(month, "month", 1))
        licensed[month] = sum(1 for s, e in seats if s < end and (e is None or e >= end))
    return {
        "baseline_start": baseline_start,
        "closed": _closed_by_month(ctx, baseline_start, shift_date(last.replace(day=1), "month", 1)),
        "licensed": licensed,
        "costs": list(CrmCostItem.objects.all()),
    }


def _closed_by_month(ctx: Context, first: date, after: date) -> dict[date, dict[str, Any]]:
    """Won and closed deals and the closed amount per month in [first, after).

    Read from the revenue dataset: its periods when this run has every month, its month facts in an
    incremental run, else (a partial range) straight from the deals.
    """
    months = _month_list(first, shift_date(after, "month", -1))
    values: Mapping[date, Mapping[str, Any]]
    if all(ctx.period("month", m) for m in months):
        data = grouped(ctx, CLOSED_DEALS)
        values = {m: data.get(("month", m, Scope.COMPANY, ""), {}) for m in months}
    elif ctx.incremental:
        grouped(ctx, CLOSED_DEALS)  # brings the facts up to date first
        values = facts.month_totals(CLOSED_DEALS, first, after)
    else:
        rows = (
            Deal.objects.filter(
                live("customer__"),
                status__in=[WON, LOST],
                closed_at__gte=local_midnight(first),
                closed_at__lt=local_midnight(after),
            )
            .exclude(INVALID_LOST)
            .annotate(month=TruncMonth("closed_at", tzinfo=reporting_tz()))
            .order_by()
            .values("month")
            .annotate(won=Count("id", filter=Q(status=WON)), closed=Count("id"), closed_amount=Sum("amount"))
        )
        values = {row["month"].date(): row for row in rows}
    return {
        # Counts as integers, whether they came from the records or (as Decimals) from the facts.
        month: {
            "won": int(v.get("won") or 0),
            "closed": int(v.get("closed") or 0),
            "amount": v.get("closed_amount"),
        }
        for month, v in values.items()
    }


def _cost_until(items: list[CrmCostItem], end_month: date) -> Decimal:
    """CRM costs incurred up to and including ``end_month``: one-off items once, monthly items per month."""
    total = Decimal(0)
    for item in items:
        if item.start_month > end_month:
            continue
        if item.kind == CrmCostItem.Kind.ONE_OFF:
            total += item.amount
        else:
            last = min(item.end_month or end_month, end_month)
            total += item.amount * len(_month_list(item.start_month, last))
    return total


def _crm_roi(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    company = CompanySettings.load()
    go_live = company.go_live_date
    inputs = (
        ctx.memo("roi_inputs", lambda: _roi_inputs(ctx, go_live), reads=(CLOSED_DEALS.name,))
        if go_live
        else None
    )
    today = ctx.now.astimezone(reporting_tz()).date()

    def fn(_v: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple | None:
        if inputs is None or go_live is None:  # the inputs are read only with a go-live date
            return None, None, None, None, RoiDetail(missing="go_live_date")
        last_month = min(shift_date(period.next().first_day, "month", -1), today.replace(day=1))
        if last_month < go_live.replace(day=1):
            return None, None, None, None, RoiDetail(before_go_live=True)
        live_months = _month_list(go_live, last_month)
        base_months = _month_list(inputs["baseline_start"], shift_date(go_live.replace(day=1), "month", -1))

        def counts(months: list[date]) -> tuple[int, int, Decimal]:
            rows = [inputs["closed"].get(m, {}) for m in months]
            won, closed = sum(r.get("won", 0) for r in rows), sum(r.get("closed", 0) for r in rows)
            return won, closed, sum((dec(r.get("amount")) for r in rows), Decimal(0))

        live_won, live_closed, closed_amount = counts(live_months)
        base_won, base_closed, _base_amount = counts(base_months)
        live_rate, base_rate = (
            divide(Decimal(live_won), Decimal(live_closed)),
            divide(Decimal(base_won), Decimal(base_closed)),
        )
        margin = company.gross_margin_percent / HUNDRED
        uplift = (
            (live_rate - base_rate) * closed_amount * margin
            if live_rate is not None and base_rate is not None
            else Decimal(0)
        )
        user_months = sum(inputs["licensed"].get(m, 0) for m in live_months)
        time_saved = company.hours_saved_per_user_month * company.loaded_hourly_rate * user_months
        gains = uplift + time_saved
        costs = _cost_until(inputs["costs"], last_month)
        monthly_gain = gains / len(live_months)
        # The win-rate uplift is a measurement with an error: its 95 % interval (Newcombe), and the ROI
        # each end of it gives, everything else equal (KPIS.md §10.2).
        interval = difference_interval(live_won, live_closed, base_won, base_closed)
        roi_range = None
        if interval is not None and costs:
            roi_range = tuple(
                float((Decimal(str(bound)) * closed_amount * margin + time_saved - costs) / costs * HUNDRED)
                for bound in interval
            )
        details = RoiDetail(
            horizon=(go_live.isoformat(), last_month.isoformat()),
            costs=float(costs),
            gains=float(gains),
            time_saved_value=float(time_saved),
            licensed_user_months=user_months,
            win_rate_after_go_live=float(live_rate * HUNDRED) if live_rate is not None else None,
            win_rate_baseline=float(base_rate * HUNDRED) if base_rate is not None else None,
            baseline_months=(base_months[0].isoformat(), base_months[-1].isoformat()),
            closed_amount=float(closed_amount),
            gross_margin_percent=float(company.gross_margin_percent),
            payback_months=float(costs / monthly_gain) if monthly_gain > 0 else None,
            win_rate_uplift_low=None if interval is None else interval[0] * 100,
            win_rate_uplift_high=None if interval is None else interval[1] * 100,
            roi_low=None if roi_range is None else roi_range[0],
            roi_high=None if roi_range is None else roi_range[1],
        )
        return divide(gains - costs, costs, HUNDRED), gains - costs, costs, len(live_months), details

    return rows_from(ctx, kpi, {}, fn)


CRM_ROI = Kpi(
    code="crm_roi",
    family=Family.ECONOMICS,
    label=_("CRM ROI"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "(gains − costs) ÷ costs from go-live to the end of the period; costs = CRM cost items so far; "
        "gains = "
        "(win rate since go-live − win rate of the 12 months before) × closed amount × gross margin + hours "
        "saved per licensed user and month × loaded hourly rate; inputs in the details"
    ),
    compute=_crm_roi,
    scopes=COMPANY_ONLY,
    granularities=MONTHLY_AND_LONGER,
    detail=RoiDetail,
    sections=frozenset({Section.GO_LIVE_ROI}),
)

# The datasets these KPIs read.
DATASETS = [SPEND, CLOSED_DEALS, NEW_CUSTOMERS, ACTIVITY]

KPIS = [CAC, RETENTION_COST, CLV, CLV_CAC, CRM_ROI]
