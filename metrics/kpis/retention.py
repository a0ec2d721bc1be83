"""Retention KPIs (KPIS.md §3): churn, retention, renewals, repeat purchases, referrals."""

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import TruncDate
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from crm.models import Customer, CustomerStatusChange, Deal, Source
from crm.selectors import customer_list, deal_list
from metrics.kpis.base import Basis, Better, Context, Family, Kpi, Row, Unit
from metrics.kpis.builders import HUNDRED, dec, divide, drill, grouped, ratio, rows_from, scope_filter
from metrics.kpis.datasets import (
    ACTIVITY,
    CUSTOMER_SCOPES,
    DEAL_SCOPES,
    NEW_CUSTOMERS,
    RENEWAL_GRACE_DAYS,
    RENEWALS,
    REPEAT_BUYERS,
    SUBSCRIPTION_KINDS,
    WON,
    customer_activity,
    live,
)
from metrics.models import Scope
from metrics.periods import Period, reporting_tz

ACTIVE, CHURNED = Customer.Status.ACTIVE, Customer.Status.CHURNED
OWNER_SCOPES = {Scope.USER: "owner_id", Scope.TEAM: "owner__team_id"}


def _status_before(instant: Any) -> Subquery:
    changes = CustomerStatusChange.objects.filter(customer=OuterRef("pk"), at__lt=instant).order_by(
        "-at", "-id"
    )
    return Subquery(changes.values("to_status")[:1])


def customers_at(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """Visible customers of a scope, annotated with their status at the period's start and end."""
    return (
        customer_list(user=user)
        .filter(live(), scope_filter(scope, scope_id, OWNER_SCOPES))
        .annotate(status_at_start=_status_before(period.start), status_at_end=_status_before(period.end))
    )


def _churn_drill(user: User, period: Period, scope: str, scope_id: str, part: str) -> QuerySet:
    qs = customers_at(user, period, scope, scope_id).filter(status_at_start=ACTIVE)
    if part == "numerator":
        churns = CustomerStatusChange.objects.filter(
            customer=OuterRef("pk"), to_status=CHURNED, at__gte=period.start, at__lt=period.end
        )
        qs = qs.filter(Exists(churns))
    return qs


def _retention_drill(user: User, period: Period, scope: str, scope_id: str, part: str) -> QuerySet:
    qs = customers_at(user, period, scope, scope_id).filter(status_at_start=ACTIVE)
    return qs.filter(status_at_end=ACTIVE) if part == "numerator" else qs


def _active_drill(user: User, period: Period, scope: str, scope_id: str, part: str) -> QuerySet:
    return customers_at(user, period, scope, scope_id).filter(status_at_end=ACTIVE)


def _activity_kpi(fn: Any) -> Any:
    def compute(ctx: Context, kpi: Kpi) -> Iterator[Row]:
        return rows_from(ctx, kpi, customer_activity(ctx), fn)

    return compute


def _churn(values: dict[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
    churned, start = Decimal(values.get("churned", 0)), Decimal(values.get("start", 0))
    return divide(churned, start, HUNDRED), churned, start, int(start), None


def _retention(values: dict[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
    retained, start = Decimal(values.get("retained", 0)), Decimal(values.get("start", 0))
    return divide(retained, start, HUNDRED), retained, start, int(start), None


def _active(values: dict[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
    return Decimal(values.get("end", 0)), None, None, None, None


def _textbook(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    new = grouped(ctx, NEW_CUSTOMERS)

    def fn(values: dict[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
        start, end = Decimal(values.get("start", 0)), Decimal(values.get("end", 0))
        joined = dec(new.get((period.granularity, period.first_day, scope, scope_id), {}).get("new"))
        extra = {"end": int(end), "new": int(joined)}
        return divide(end - joined, start, HUNDRED), end - joined, start, int(start), extra

    return rows_from(ctx, kpi, customer_activity(ctx), fn)


CHURN_RATE = Kpi(
    code="churn_rate",
    family=Family.RETENTION,
    label=_("Customer churn rate"),
    unit=Unit.PERCENT,
    better=Better.DOWN,
    formula=_(
        "customers active at the start of the period who churned during it ÷ customers active at the start; "
        "customers who joined and churned inside the period are left out (B2B formula)"
    ),
    compute=_activity_kpi(_churn),
    drilldown=_churn_drill,
)

RETENTION_RATE = Kpi(
    code="retention_rate",
    family=Family.RETENTION,
    label=_("Customer retention rate"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_("customers active at the start and at the end of the period ÷ customers active at the start"),
    compute=_activity_kpi(_retention),
    drilldown=_retention_drill,
)

RETENTION_RATE_TEXTBOOK = Kpi(
    code="retention_rate_textbook",
    family=Family.RETENTION,
    label=_("Customer retention rate (textbook (E − N) ÷ S)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "(customers active at the end − new customers of the period) ÷ customers active at the start; shown "
        "beside the set-based rate, which it understates when new customers churn and overstates with "
        "reactivations"
    ),
    compute=_textbook,
    drilldown=_retention_drill,
)

ACTIVE_CUSTOMERS = Kpi(
    code="active_customers",
    family=Family.RETENTION,
    label=_("Active customers"),
    unit=Unit.COUNT,
    better=Better.UP,
    formula=_("customers active at the end of the period, from the status history"),
    compute=_activity_kpi(_active),
    basis=Basis.STOCK,
    drilldown=_active_drill,
)


def _renewal_drill(user: User, period: Period, scope: str, scope_id: str, part: str) -> QuerySet:
    qs = deal_list(user=user).filter(
        live("customer__"),
        status=WON,
        kind__in=SUBSCRIPTION_KINDS,
        term_end__gte=period.first_day,
        term_end__lt=period.next().first_day,
        **({} if scope == Scope.COMPANY else {DEAL_SCOPES[scope]: scope_id}),
    )
    if part == "numerator":
        renewals = Deal.objects.filter(renewal_of=OuterRef("pk"), status=WON).annotate(
            closed_day=TruncDate("closed_at", tzinfo=reporting_tz())
        )
        qs = qs.filter(
            Exists(renewals.filter(closed_day__lte=OuterRef("term_end") + timedelta(days=RENEWAL_GRACE_DAYS)))
        )
    return qs


RENEWAL_RATE = Kpi(
    code="renewal_rate",
    family=Family.RETENTION,
    label=_("Renewal rate"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "won new-business and renewal deals whose term ends in the period and that were renewed (a won deal "
        "renewing them, closed by term end + 30 days) ÷ those whose term ends in the period; early renewals "
        "count; upsells co-terminate with the subscription and are not counted"
    ),
    compute=ratio(
        RENEWALS,
        "renewed",
        "due",
        provisional=lambda ctx, p: not ctx.is_closed(p, timedelta(days=RENEWAL_GRACE_DAYS)),
    ),
    drilldown=_renewal_drill,
)


def _repeat_drill(user: User, period: Period, scope: str, scope_id: str, part: str) -> QuerySet:
    in_period = Q(deals__status=WON, deals__closed_at__gte=period.start, deals__closed_at__lt=period.end)
    buyers = customer_list(user=user).filter(live(), in_period, scope_filter(scope, scope_id, OWNER_SCOPES))
    buyers = Customer.objects.filter(pk__in=buyers.values("pk"))
    if part == "numerator":
        buyers = buyers.annotate(
            won_by_end=Count("deals", filter=Q(deals__status=WON, deals__closed_at__lt=period.end))
        ).filter(won_by_end__gte=2)
    return buyers


REPEAT_PURCHASE_RATE = Kpi(
    code="repeat_purchase_rate",
    family=Family.RETENTION,
    label=_("Repeat purchase rate"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "customers who won a deal in the period for whom it was at least their second won deal ÷ customers "
        "with a won deal in the period"
    ),
    compute=ratio(REPEAT_BUYERS, "repeat", "buyers"),
    drilldown=_repeat_drill,
)

REFERRAL_SHARE = Kpi(
    code="referral_share",
    family=Family.RETENTION,
    label=_("Referral share of new customers"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_("new customers of the period whose source is referral ÷ new customers of the period"),
    compute=ratio(NEW_CUSTOMERS, "referral", "new"),
    drilldown=drill(
        lambda user: customer_list(user=user),
        date="became_customer_at",
        scopes=CUSTOMER_SCOPES,
        base=live(),
        numerator=Q(source=Source.REFERRAL),
    ),
)

# The datasets these KPIs read.
DATASETS = [ACTIVITY, NEW_CUSTOMERS, RENEWALS, REPEAT_BUYERS]

KPIS = [
    CHURN_RATE,
    RETENTION_RATE,
    RETENTION_RATE_TEXTBOOK,
    ACTIVE_CUSTOMERS,
    RENEWAL_RATE,
    REPEAT_PURCHASE_RATE,
    REFERRAL_SHARE,
]
