"""Cohorts and revenue retention from deals alone (KPIS.md §10.9, §3's non-subscription proxy).

Customer cohorts (logo retention by the month customers joined), NRR and GRR over 12-month windows, and the
revenue waterfall of a period against the period before. Each is a per-customer computation over the whole
history (``customer_history``), so these KPIs are computed by a task of their own (``own_task``:
``metrics.tasks.recompute_cohort_snapshots``), not by the every-few-minutes run or the nightly rebuild.

Scopes follow the customer's account owner (and the owner's team), not the deals' owners: NRR caps and
classifies each *customer*, who must sit in exactly one person's number for the people's numbers to add up
to the company's, and it is the customer's owner a rep's access follows (``customer_list``), so a rep's
drill-down lists exactly the customers their number counts.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import (
    DecimalField,
    Exists,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce, Least
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import pgettext_lazy

from accounts.models import User
from crm.models import Customer, Deal
from crm.selectors import customer_list
from metrics.kpis.base import (
    MIN_EVENTS,
    MONTHLY_AND_LONGER,
    Basis,
    Better,
    Chart,
    Context,
    Family,
    Kpi,
    Plot,
    Question,
    Row,
    Unit,
)
from metrics.kpis.builders import HUNDRED, divide, rows_from, scope_filter
from metrics.kpis.customer_history import (
    Movement,
    Retained,
    RunningSpans,
    buyers,
    cohorts,
    month_first,
    month_index,
    movements_between,
    movements_by_period,
    retention_between,
    retention_by_month_end,
    rollup,
    spans_of,
)
from metrics.kpis.dataset import ScopePaths
from metrics.kpis.details import CohortDetail, RevenueRetentionDetail, WaterfallDetail
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, Drill, Part, sum_of
from metrics.kpis.facts import teams_of_users
from metrics.kpis.retention import status_before
from metrics.kpis.shared import WON, live
from metrics.models import Scope
from metrics.periods import Period, local_date, local_midnight

OWNER_SCOPES: ScopePaths = {Scope.USER: "owner_id", Scope.TEAM: "owner__team_id"}
# The month after joining whose end a cohort's headline value is read at.
COHORT_MONTH = 12
REVENUE_RETENTION_CHART = Chart(
    "chart-revenue-retention", _("Revenue retention (12 months)"), "lines", order=64, y_title="%"
)


def _money(cents: int) -> Decimal:
    return Decimal(cents) / HUNDRED


def _day_span(span: tuple[Any, Any]) -> tuple[datetime, datetime]:
    return local_midnight(span[0]), local_midnight(span[1])


# Cohorts
# ---------------------------------------------------------------------------------------------------------


def read_month(cohort_first_day: Any, now: datetime) -> int | None:
    """The month after joining a cohort's value is read at: 12 once its end has passed, else the latest
    month that has ended (None: not even the month it joined)."""
    observed = month_index(local_date(now)) - 1 - month_index(cohort_first_day)
    return None if observed < 0 else min(COHORT_MONTH, observed)


def _cohort_rows(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    found = cohorts(ctx)
    data = {
        ("month", month_first(month), scope, scope_id): {"cohort": cohort}
        for (month, scope, scope_id), cohort in found.items()
    }

    def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple | None:
        if period.start > ctx.now:
            return None
        cohort = values.get("cohort")
        size = cohort.size if cohort else 0
        k = read_month(period.first_day, ctx.now)
        provisional = k is None or k < COHORT_MONTH
        if k is None or not cohort:
            return None, None, Decimal(size), size, None, provisional
        active = cohort.active[k]
        details = CohortDetail(active=tuple(cohort.active), month=k)
        return (
            divide(Decimal(active), Decimal(size), HUNDRED),
            Decimal(active),
            Decimal(size),
            size,
            details,
            provisional,
        )

    return rows_from(ctx, kpi, data, fn)


def _customers(user: User, scope: str, scope_id: str) -> QuerySet:
    return customer_list(user=user).filter(live(), scope_filter(scope, scope_id, OWNER_SCOPES))


def cohort_members(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """The customers who became customers in the cohort's month (``period``), as ``user`` may see them."""
    return _customers(user, scope, scope_id).filter(
        became_customer_at__gte=period.start, became_customer_at__lt=period.end
    )


def cohort_active(user: User, period: Period, scope: str, scope_id: str, month: int | None) -> QuerySet:
    """The cohort's members active at the end of ``month`` months after joining (0: the month they joined)."""
    if month is None:
        return Customer.objects.none()
    end = local_midnight(month_first(month_index(period.first_day) + month + 1))
    members = cohort_members(user, period, scope, scope_id)
    return members.annotate(status_then=status_before(end)).filter(status_then=Customer.Status.ACTIVE)


def _cohort_retained(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    return cohort_active(user, period, scope, scope_id, read_month(period.first_day, timezone.now()))


COHORT_RETENTION = Kpi(
    code="cohort_retention",
    family=Family.RETENTION,
    label=_("Cohort logo retention after 12 months"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "customers who became customers in the month (the cohort) and were active at the end of the 12th "
        "month after it ÷ the cohort; until that month has ended, the latest month that has (provisional); "
        "the cohorts page shows every month since, as a heatmap"
    ),
    compute=_cohort_rows,
    basis=Basis.COHORT,
    granularities=("month",),
    drill=Drill(
        {
            NUMERATOR: Part(_cohort_retained, NUMERATOR, label=_("Still active")),
            DENOMINATOR: Part(cohort_members, DENOMINATOR, label=_("The cohort")),
        }
    ),
    detail=CohortDetail,
    min_sample=MIN_EVENTS,
    own_task=True,
)


# Revenue per customer: what each period's figures compare
# ---------------------------------------------------------------------------------------------------------


def _rolled(by_owner: Mapping[Any, Any], team_of: Mapping[str, str], empty: Callable[[], Any]) -> dict:
    """Per-owner figures added up into every scope (company, team, person)."""
    out: dict[tuple[str, str], Any] = {}
    for owner, figures in by_owner.items():
        for key in rollup(owner, team_of):
            found = out.get(key)
            if found is None:
                found = out[key] = empty()
            found.merge(figures)
    return out


def _periods(ctx: Context, granularities: tuple[str, ...]) -> Iterator[tuple[Period, RunningSpans]]:
    for g in ctx.requested(granularities):
        for period in ctx.periods[g]:
            spans = spans_of(period, ctx.now)
            if spans is not None:
                yield period, spans


def _retention(ctx: Context) -> dict[tuple[str, Any, str, str], dict[str, Any]]:
    """Per period and scope: the base customers' revenue and its movement (``retained``) and the windows."""

    def build() -> dict[tuple[str, Any, str, str], dict[str, Any]]:
        found, team_of = buyers(ctx), ctx.memo("teams of users", teams_of_users)
        periods = list(_periods(ctx, MONTHLY_AND_LONGER))
        complete = [p for p, _s in periods if p.end <= ctx.now]
        by_end = retention_by_month_end(found, {month_index(p.next().first_day) for p in complete})
        out = {}
        for period, spans in periods:
            if period.end <= ctx.now:
                by_owner = by_end[month_index(period.next().first_day)]
            else:
                by_owner = retention_between(found, spans.earlier, spans.later)
            for (scope, scope_id), retained in _rolled(by_owner, team_of, Retained).items():
                out[(period.granularity, period.first_day, scope, scope_id)] = {"retained": retained}
        return out

    return ctx.memo("revenue retention", build)


def _retention_row(
    ctx: Context, gross: bool
) -> Callable[[Mapping[str, Any], Period, str, str], tuple | None]:
    def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple | None:
        spans = spans_of(period, ctx.now)
        if spans is None:
            return None
        r: Retained = values.get("retained") or Retained()
        numerator = r.kept if gross else r.now
        details = RevenueRetentionDetail(
            base=float(_money(r.base)),
            expansion=float(_money(r.expansion)),
            contraction=float(_money(r.contraction)),
            churned=float(_money(r.churned)),
            expanded=r.expanded,
            contracted=r.contracted,
            lost=r.lost,
            windows=(spans.earlier[0].isoformat(), spans.later[0].isoformat(), spans.later[1].isoformat()),
        )
        value = divide(Decimal(numerator), Decimal(r.base), HUNDRED)
        return value, _money(numerator), _money(r.base), r.customers, details

    return fn


def _nrr(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    return rows_from(ctx, kpi, _retention(ctx), _retention_row(ctx, gross=False))


def _grr(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    return rows_from(ctx, kpi, _retention(ctx), _retention_row(ctx, gross=True))


def _won(lo: datetime, hi: datetime) -> QuerySet:
    return Deal.objects.filter(status=WON, amount__gt=0, closed_at__gte=lo, closed_at__lt=hi)


def won_between(lo: datetime, hi: datetime) -> Coalesce:
    """A customer's won revenue in [lo, hi), as an annotation (0 when none)."""
    sums = (
        _won(lo, hi)
        .filter(customer=OuterRef("pk"))
        .order_by()
        .values("customer")
        .annotate(total=Sum("amount"))
        .values("total")[:1]
    )
    money = Deal._meta.get_field("amount")
    field = DecimalField(max_digits=money.max_digits, decimal_places=money.decimal_places)
    return Coalesce(Subquery(sums, output_field=field), Value(Decimal(0)), output_field=field)


def base_customers(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """The customers with revenue in the earlier 12 months (NRR's and GRR's base), with their revenue then
    (``revenue_before``) and in the later 12 months (``revenue_now``)."""
    spans = spans_of(period, timezone.now())
    if spans is None:
        return Customer.objects.none()
    earlier, later = _day_span(spans.earlier), _day_span(spans.later)
    return (
        _customers(user, scope, scope_id)
        .filter(pk__in=_won(*earlier).values("customer_id"))
        .annotate(revenue_before=won_between(*earlier), revenue_now=won_between(*later))
    )


BEFORE = (DENOMINATOR, sum_of(F("revenue_before")))
BASE_LABEL = _("Customers with revenue in the earlier 12 months")

NET_REVENUE_RETENTION = Kpi(
    code="net_revenue_retention",
    family=Family.RETENTION,
    label=_("Net revenue retention (NRR, 12 months)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "revenue won in the 12 months ending at the period's end from the customers who had revenue in "
        "the 12 months before ÷ their revenue in those earlier 12 months; customers new in the later 12 "
        "months are in neither; a running period's windows end today"
    ),
    compute=_nrr,
    granularities=MONTHLY_AND_LONGER,
    drill=Drill(
        {
            NUMERATOR: Part(
                base_customers, NUMERATOR, sum_of(F("revenue_now")), label=BASE_LABEL, also=(BEFORE,)
            )
        }
    ),
    detail=RevenueRetentionDetail,
    plots=(Plot(REVENUE_RETENTION_CHART, label=_("NRR")),),
    min_sample=MIN_EVENTS,
    question=Question.RETENTION,
    own_task=True,
)

GROSS_REVENUE_RETENTION = Kpi(
    code="gross_revenue_retention",
    family=Family.RETENTION,
    label=_("Gross revenue retention (GRR, 12 months)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "as NRR, each customer's later revenue capped at their earlier revenue, so expansion does not count: "
        "(earlier revenue − contraction − churned revenue) ÷ earlier revenue; at most 100 %"
    ),
    compute=_grr,
    granularities=MONTHLY_AND_LONGER,
    drill=Drill(
        {
            NUMERATOR: Part(
                base_customers,
                NUMERATOR,
                sum_of(Least("revenue_now", "revenue_before")),
                label=BASE_LABEL,
                also=(BEFORE,),
            )
        }
    ),
    detail=RevenueRetentionDetail,
    plots=(Plot(REVENUE_RETENTION_CHART, label=_("GRR")),),
    min_sample=MIN_EVENTS,
    own_task=True,
)


# The revenue waterfall
# ---------------------------------------------------------------------------------------------------------


def _movements(ctx: Context) -> dict[tuple[str, Any, str, str], dict[str, Any]]:
    """Per period and scope: the waterfall (``movement``) of the period against the period before."""

    def build() -> dict[tuple[str, Any, str, str], dict[str, Any]]:
        found, team_of = buyers(ctx), ctx.memo("teams of users", teams_of_users)
        out = {}
        for g in ctx.requested(MONTHLY_AND_LONGER):
            periods = list(_periods(ctx, (g,)))
            complete = [p for p, _s in periods if p.end <= ctx.now]
            by_start = movements_by_period(found, g, {month_index(p.first_day) for p in complete})
            for period, spans in periods:
                if period.end <= ctx.now:
                    by_owner = by_start[month_index(period.first_day)]
                else:
                    by_owner = movements_between(found, spans.compared, spans.current)
                for (scope, scope_id), movement in _rolled(by_owner, team_of, Movement).items():
                    out[(g, period.first_day, scope, scope_id)] = {"movement": movement}
        return out

    return ctx.memo("revenue movements", build)


def _waterfall(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple | None:
        spans = spans_of(period, ctx.now)
        if spans is None:
            return None
        m: Movement = values.get("movement") or Movement()
        details = WaterfallDetail(
            previous=float(_money(m.previous)),
            new=float(_money(m.new)),
            expansion=float(_money(m.expansion)),
            contraction=float(_money(m.contraction)),
            churned=float(_money(m.churned)),
            reactivated=float(_money(m.reactivated)),
            current=float(_money(m.current)),
            new_customers=m.new_customers,
            expanded=m.expanded,
            contracted=m.contracted,
            lost=m.lost,
            reactivated_customers=m.reactivated_customers,
            spans=(
                spans.compared[0].isoformat(),
                spans.compared[1].isoformat(),
                spans.current[0].isoformat(),
                spans.current[1].isoformat(),
            ),
        )
        return _money(m.current - m.previous), None, None, m.customers, details

    return rows_from(ctx, kpi, _movements(ctx), fn)


def movement_customers(
    user: User, period: Period, scope: str, scope_id: str, moved: Q | None = None, earlier: bool | None = None
) -> QuerySet:
    """The customers with revenue in the period or the period before (to date while it runs), with their
    revenue in the span before (``revenue_before``) and now (``revenue_now``).

    ``moved`` picks them by their revenue before (``before``) and now (``now``), summed in one grouped
    scan of the won deals of the two spans (not a subquery per customer); ``earlier``: only those who had
    (True) or had not (False) revenue before the current span."""
    spans = spans_of(period, timezone.now())
    if spans is None:
        return Customer.objects.none()
    before, now = _day_span(spans.compared), _day_span(spans.current)
    amount = Deal._meta.get_field("amount")
    zero = Value(Decimal(0), output_field=DecimalField(max_digits=amount.max_digits, decimal_places=2))
    sums = (
        _won(before[0], now[1])
        .order_by()
        .values("customer_id")
        .annotate(
            before=Coalesce(Sum("amount", filter=Q(closed_at__lt=before[1])), zero),
            now=Coalesce(Sum("amount", filter=Q(closed_at__gte=now[0])), zero),
        )
        .filter(moved or Q())
    )
    found = _customers(user, scope, scope_id).filter(pk__in=sums.values("customer_id"))
    if earlier is not None:
        revenue = Deal.objects.filter(customer=OuterRef("pk"), status=WON, amount__gt=0, closed_at__lt=now[0])
        found = found.filter(Exists(revenue) if earlier else ~Exists(revenue))
    return found.annotate(revenue_before=won_between(*before), revenue_now=won_between(*now))


@dataclass(frozen=True)
class Bucket:
    """One bar of the waterfall: which customers are in it (by their revenue before and now, and whether
    they had revenue earlier) and what each adds to it."""

    moved: Q
    amount: Any
    earlier: bool | None = None


WATERFALL_BUCKETS: dict[str, Bucket] = {
    "new": Bucket(Q(before=0, now__gt=0), F("revenue_now"), earlier=False),
    "expansion": Bucket(Q(before__gt=0, now__gt=F("before")), F("revenue_now") - F("revenue_before")),
    "contraction": Bucket(Q(now__gt=0, now__lt=F("before")), F("revenue_before") - F("revenue_now")),
    "churned": Bucket(Q(before__gt=0, now=0), F("revenue_before")),
    "reactivated": Bucket(Q(before=0, now__gt=0), F("revenue_now"), earlier=True),
}
# In the context of the waterfall: "new" is a new customer's revenue, not a new record.
BUCKET_LABELS = {
    "new": pgettext_lazy("revenue waterfall", "New"),
    "expansion": pgettext_lazy("revenue waterfall", "Expansion"),
    "contraction": pgettext_lazy("revenue waterfall", "Contraction"),
    "churned": pgettext_lazy("revenue waterfall", "Churned"),
    "reactivated": pgettext_lazy("revenue waterfall", "Reactivated"),
}


def bucket_customers(name: str) -> Callable[[User, Period, str, str], QuerySet]:
    bucket = WATERFALL_BUCKETS[name]

    def records(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
        return movement_customers(user, period, scope, scope_id, bucket.moved, bucket.earlier)

    return records


REVENUE_WATERFALL = Kpi(
    code="revenue_waterfall",
    family=Family.RETENTION,
    label=_("Revenue waterfall: net change"),
    unit=Unit.CURRENCY,
    better=Better.UP,
    formula=_(
        "revenue won in the period − revenue won in the period before, split by customer: new (first "
        "revenue ever), expansion, contraction, churned (revenue before, none now) and reactivated (revenue "
        "now, none in the period before but some earlier); previous + new + expansion − contraction − "
        "churned + reactivated = current; a period still running is read so far and set against the same "
        "days of the period before"
    ),
    compute=_waterfall,
    granularities=MONTHLY_AND_LONGER,
    drill=Drill(
        {
            name: Part(bucket_customers(name), name, sum_of(bucket.amount), label=BUCKET_LABELS[name])
            for name, bucket in WATERFALL_BUCKETS.items()
        }
    ),
    detail=WaterfallDetail,
    min_sample=MIN_EVENTS,
    own_task=True,
)

# None: every KPI here reads the customers' histories (``customer_history``), not the engine's datasets.
DATASETS: list = []

KPIS = [COHORT_RETENTION, NET_REVENUE_RETENTION, GROSS_REVENUE_RETENTION, REVENUE_WATERFALL]
