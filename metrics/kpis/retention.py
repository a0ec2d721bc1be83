"""Retention KPIs (KPIS.md §3): churn, retention, renewals, repeat purchases, referrals."""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet, Subquery
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from crm.models import Customer, CustomerStatusChange
from crm.selectors import customer_list
from metrics.kpis.base import (
    MIN_CLOSED_DEALS,
    MIN_EVENTS,
    Basis,
    Better,
    Chart,
    Context,
    Family,
    Kpi,
    Plot,
    Question,
    Row,
    Section,
    Significance,
    Unit,
)
from metrics.kpis.builders import (
    HUNDRED,
    Dataset,
    Offset,
    dec,
    divide,
    grouped,
    ratio,
    rows_from,
    scope_filter,
)
from metrics.kpis.dataset import ScopePaths
from metrics.kpis.details import TextbookRetentionDetail
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, VALUE, Drill, Part, record_count
from metrics.kpis.shared import (
    ACTIVITY,
    CLOSED_DEALS,
    NEW_CUSTOMERS,
    RENEWAL_GRACE_DAYS,
    RENEWALS,
    REPEAT_BUYERS,
    customer_activity,
    customer_activity_at,
    live,
)
from metrics.models import Scope
from metrics.periods import Period

ACTIVE, CHURNED = Customer.Status.ACTIVE, Customer.Status.CHURNED
OWNER_SCOPES: ScopePaths = {Scope.USER: "owner_id", Scope.TEAM: "owner__team_id"}
RETENTION_CHART = Chart("chart-retention", _("Churn and retention"), "lines", order=60, y_title="%")


def status_before(instant: Any) -> Subquery:
    changes = CustomerStatusChange.objects.filter(customer=OuterRef("pk"), at__lt=instant).order_by(
        "-at", "-id"
    )
    return Subquery(changes.values("to_status")[:1])


def customers_at(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """Visible customers of a scope, annotated with their status at the period's start and end."""
    return (
        customer_list(user=user)
        .filter(live(), scope_filter(scope, scope_id, OWNER_SCOPES))
        .annotate(status_at_start=status_before(period.start), status_at_end=status_before(period.end))
    )


def _active_at_start(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    return customers_at(user, period, scope, scope_id).filter(status_at_start=ACTIVE)


def _churned(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    churns = CustomerStatusChange.objects.filter(
        customer=OuterRef("pk"), to_status=CHURNED, at__gte=period.start, at__lt=period.end
    )
    return _active_at_start(user, period, scope, scope_id).filter(Exists(churns))


def _retained(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    return _active_at_start(user, period, scope, scope_id).filter(status_at_end=ACTIVE)


def _active_at_end(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    return customers_at(user, period, scope, scope_id).filter(status_at_end=ACTIVE)


def _active_during(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """Customers active at some time in the period: at its start, or made active during it."""
    activated = CustomerStatusChange.objects.filter(
        customer=OuterRef("pk"), to_status=ACTIVE, at__gte=period.start, at__lt=period.end
    )
    return customers_at(user, period, scope, scope_id).filter(
        Q(status_at_start=ACTIVE) | Q(Exists(activated))
    )


ACTIVE_AT_START = Part(_active_at_start, DENOMINATOR, label=_("Active at the start"))
RETAINED = Part(_retained, NUMERATOR, label=_("Active at the start and at the end"))


def _end_less_new(records: QuerySet, period: Period, scope: str, scope_id: str) -> int:
    """E − N of the textbook formula: customers active at the end less the period's new customers."""
    new = Customer.objects.filter(
        live(),
        scope_filter(scope, scope_id, OWNER_SCOPES),
        became_customer_at__gte=period.start,
        became_customer_at__lt=period.end,
    )
    return records.count() - new.count()


@dataclass(frozen=True)
class Activity:
    """KPI from each period's active-customer counts (``customer_activity``; with ``with_new``, also the
    period's new customers): ``fn`` turns a period's counts into its row.

    While a period runs, it is compared with the counts after the same elapsed days of the period before
    (KPIS.md §10.1): the customers active at its start, and the level changes, churns, lost chains and new
    customers of those days, from the day facts."""

    fn: Callable[[Mapping[str, Any], Period, str, str], tuple]
    with_new: bool = False

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        if not self.with_new:
            return rows_from(ctx, kpi, customer_activity(ctx), self.fn)
        new = grouped(ctx, NEW_CUSTOMERS)

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
            joined = new.get((period.granularity, period.first_day, scope, scope_id), {}).get("new")
            return self.fn({**values, "new": dec(joined)}, period, scope, scope_id)

        return rows_from(ctx, kpi, customer_activity(ctx), fn)

    @property
    def day_datasets(self) -> tuple[Dataset, ...]:
        return (ACTIVITY, NEW_CUSTOMERS) if self.with_new else (ACTIVITY,)

    def at_offset(self, ctx: Context, kpi: Kpi, at: Offset) -> tuple | None:
        values = customer_activity_at(ctx, at)
        if values is None:
            return None
        if self.with_new:
            values["new"] = dec(at.days(NEW_CUSTOMERS).get("new"))
        value, numerator, denominator, n, _details = self.fn(values, at.before, at.scope, at.scope_id)
        return value, numerator, denominator, n


def _churn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
    churned, start = Decimal(values.get("churned", 0)), Decimal(values.get("start", 0))
    return divide(churned, start, HUNDRED), churned, start, int(start), None


def _retention(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
    retained, start = Decimal(values.get("retained", 0)), Decimal(values.get("start", 0))
    return divide(retained, start, HUNDRED), retained, start, int(start), None


def _active(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
    return Decimal(values.get("end", 0)), None, None, None, None


def _textbook(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
    start, end, joined = Decimal(values.get("start", 0)), Decimal(values.get("end", 0)), values["new"]
    extra = TextbookRetentionDetail(end=int(end), new=int(joined))
    return divide(end - joined, start, HUNDRED), end - joined, start, int(start), extra


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
    compute=Activity(_churn),
    drill=Drill(
        {NUMERATOR: Part(_churned, NUMERATOR, label=_("Churned in the period")), DENOMINATOR: ACTIVE_AT_START}
    ),
    plots=(Plot(RETENTION_CHART, label=_("Churn rate")),),
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
    sections=frozenset({Section.WEEKLY_REPORT, Section.GO_LIVE}),
    question=Question.RETENTION,
)

RETENTION_RATE = Kpi(
    code="retention_rate",
    family=Family.RETENTION,
    label=_("Customer retention rate"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_("customers active at the start and at the end of the period ÷ customers active at the start"),
    compute=Activity(_retention),
    drill=Drill({NUMERATOR: RETAINED, DENOMINATOR: ACTIVE_AT_START}),
    plots=(Plot(RETENTION_CHART, label=_("Retention rate")),),
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
    question=Question.RETENTION,
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
    compute=Activity(_textbook, with_new=True),
    # The numerator E − N is not a list of customers: the customers active at the end make E, and the
    # period's new customers (the new customers KPI) are taken off.
    drill=Drill(
        {
            NUMERATOR: Part(
                _active_at_end,
                NUMERATOR,
                _end_less_new,
                _("Active at the end"),
                also=(("end", record_count),),
            ),
            DENOMINATOR: ACTIVE_AT_START,
        }
    ),
    detail=TextbookRetentionDetail,
)

ACTIVE_CUSTOMERS = Kpi(
    code="active_customers",
    family=Family.RETENTION,
    label=_("Active customers"),
    unit=Unit.COUNT,
    better=Better.UP,
    formula=_("customers active at the end of the period, from the status history"),
    compute=Activity(_active),
    basis=Basis.STOCK,
    drill=Drill({NUMERATOR: Part(_active_at_end, VALUE, label=_("Active at the end"))}),
)


RENEWAL_RATE = Kpi(
    code="renewal_rate",
    family=Family.RETENTION,
    label=_("Renewal rate (by contract term)"),
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
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
)

# For companies that do not record contract terms (KPIS.md §10.12): shown beside the term-based rate.
RENEWAL_RATE_DEALS = Kpi(
    code="renewal_rate_deals",
    family=Family.RETENTION,
    label=_("Renewal rate (by renewal deals)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "renewal deals won ÷ renewal deals closed (won + lost) in the period, by close date; needs no "
        "contract terms; lost as duplicate/invalid is left out"
    ),
    compute=ratio(CLOSED_DEALS, "renewals_won", "renewals_closed"),
    significance=Significance.PROPORTION,
    min_sample=MIN_CLOSED_DEALS,
)


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
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
)

REFERRAL_SHARE = Kpi(
    code="referral_share",
    family=Family.RETENTION,
    label=_("Referral share of new customers"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_("new customers of the period whose source is referral ÷ new customers of the period"),
    compute=ratio(NEW_CUSTOMERS, "referral", "new"),
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
)

# The datasets these KPIs read.
DATASETS = [ACTIVITY, NEW_CUSTOMERS, RENEWALS, REPEAT_BUYERS, CLOSED_DEALS]

KPIS = [
    CHURN_RATE,
    RETENTION_RATE,
    RETENTION_RATE_TEXTBOOK,
    ACTIVE_CUSTOMERS,
    RENEWAL_RATE,
    RENEWAL_RATE_DEALS,
    REPEAT_PURCHASE_RATE,
    REFERRAL_SHARE,
]
