"""Campaigns and attribution (KPIS.md §10.11): per campaign, under first touch and last touch side by side,
leads, cost per lead, customers won, CAC, revenue won and ROI; and the campaign's cost.

The two models credit the same outcomes to different campaigns:

* **First touch** credits everything a customer brings to the campaign it came from (``Customer.campaign``):
  the lead when the customer record was created, the customer when it became one, the revenue of every deal
  it wins.
* **Last touch** credits each outcome to the campaign that touched the customer last before it: a lead is
  a campaign taking over as a customer's latest (a ``CampaignTouch``, in the period of the touch; a returning
  lead counts again for the campaign that brought it back), a new customer goes to its latest touch at or
  before it became one, a won deal's revenue to the deal's campaign (its customer's latest touch when the
  deal was created, ``Deal.campaign``).

They differ when a campaign nurtures leads others brought in (a webinar): first touch gives it nothing for
them, last touch the customers and revenue it won over.

Periods (KPIS.md G1, reporting time zone): a lead counts in the period of its creation (first touch) or of
its touch (last touch), a customer in the period it became one, revenue in the period the deal was won. A
campaign's cost is spread evenly over the days it runs, the first and the last included: a period takes
the share of the days it holds (a month-long campaign of 3 100 costs 100 a day). CPL = cost ÷ leads, CAC =
cost ÷ customers won, ROI = (revenue won × gross margin % − cost) ÷ cost; no leads, no customers or no cost
in the period → no value (KPIS.md G3). The company's figures are those of all campaigns together. They
exist for months, quarters and years: a week holds too little of a campaign's cost and of what it brought
(revenue comes weeks after the cost), and leaving weeks out keeps the five-minute run lighter.

The cost is read from the campaigns themselves (a handful of rows) in every run; a change of a campaign's
run or cost changes the inputs signature (``facts.inputs_signature``): the next run recomputes every period
it covers (older ones at the nightly rebuild, as for spend).
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.utils.formats import number_format
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from crm.campaigns.touches import last_touch_subquery
from crm.models import Campaign, CampaignTouch, CompanySettings, Customer, Deal
from metrics.kpis.base import (
    MIN_EVENTS,
    MONTHLY_AND_LONGER,
    Better,
    Context,
    Family,
    Kpi,
    Row,
    Significance,
    Unit,
)
from metrics.kpis.builders import (
    HUNDRED,
    ZERO,
    Dataset,
    Offset,
    count,
    dec,
    divide,
    grouped,
    rows_from,
    total,
)
from metrics.kpis.dataset import ScopePaths
from metrics.kpis.details import Detail
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, VALUE, Drill, Part, dataset_part
from metrics.kpis.shared import (
    CENTS,
    WON,
    edited_customer_deal_days,
    live,
    local_days,
    reopened_deal_days,
)
from metrics.models import Scope
from metrics.periods import Period

SCOPES = (Scope.COMPANY, Scope.CAMPAIGN)
FIRST, LAST = "first", "last"
MODELS = {FIRST: _("first touch"), LAST: _("last touch")}
BY_CAMPAIGN: ScopePaths = {Scope.CAMPAIGN: "campaign_id"}
BY_LAST_TOUCH: ScopePaths = {Scope.CAMPAIGN: "last_touch"}
BY_CUSTOMERS_CAMPAIGN: ScopePaths = {Scope.CAMPAIGN: "customer__campaign_id"}


def _touched_customers_days(ctx: Context, since: datetime) -> set[date]:
    """A customer edited since (made internal, merged) moves its touches in or out of every figure."""
    return local_days(CampaignTouch.objects.filter(customer__updated_at__gte=since), "at")


# Datasets: what each model credits to a campaign, by the day it happened
# ---------------------------------------------------------------------------------------------------------

LEADS_FIRST = Dataset(
    name="campaign_leads_first",
    rows=lambda ctx: Customer.objects.filter(live(), campaign__isnull=False),
    date="created_at",
    scopes=BY_CAMPAIGN,
    granularities=MONTHLY_AND_LONGER,
    measures={"leads": count()},
)

# Touches are written, never edited: new ones fall on the days since the last run.
LEADS_LAST = Dataset(
    name="campaign_leads_last",
    rows=lambda ctx: CampaignTouch.objects.filter(live("customer__")),
    date="at",
    scopes=BY_CAMPAIGN,
    granularities=MONTHLY_AND_LONGER,
    measures={"leads": count()},
    changed=(),
    touches=(_touched_customers_days,),
)

CUSTOMERS_FIRST = Dataset(
    name="campaign_customers_first",
    rows=lambda ctx: Customer.objects.filter(
        live(), campaign__isnull=False, became_customer_at__isnull=False
    ),
    date="became_customer_at",
    scopes=BY_CAMPAIGN,
    granularities=MONTHLY_AND_LONGER,
    measures={"customers": count()},
)


def _customers_last(ctx: Context) -> QuerySet:
    """New customers with the campaign of their latest touch at or before they became customers (those
    touched only afterwards count for no campaign)."""
    touched = CampaignTouch.objects.values("customer_id")
    return (
        Customer.objects.filter(live(), became_customer_at__isnull=False, pk__in=touched)
        .annotate(last_touch=last_touch_subquery("became_customer_at"))
        .filter(last_touch__isnull=False)
    )


CUSTOMERS_LAST = Dataset(
    name="campaign_customers_last",
    rows=_customers_last,
    date="became_customer_at",
    scopes=BY_LAST_TOUCH,
    granularities=MONTHLY_AND_LONGER,
    measures={"customers": count()},
)

REVENUE_FIRST = Dataset(
    name="campaign_revenue_first",
    rows=lambda ctx: Deal.objects.filter(live("customer__"), status=WON, customer__campaign__isnull=False),
    date="closed_at",
    scopes=BY_CUSTOMERS_CAMPAIGN,
    granularities=MONTHLY_AND_LONGER,
    measures={"revenue": total("amount", scale=CENTS), "won": count()},
    # A customer's campaign edited moves all its won deals; a reopened deal leaves the day it was won.
    touches=(reopened_deal_days, edited_customer_deal_days),
)

REVENUE_LAST = Dataset(
    name="campaign_revenue_last",
    rows=lambda ctx: Deal.objects.filter(live("customer__"), status=WON, campaign__isnull=False),
    date="closed_at",
    scopes=BY_CAMPAIGN,
    granularities=MONTHLY_AND_LONGER,
    measures={"revenue": total("amount", scale=CENTS), "won": count()},
    touches=(reopened_deal_days,),
)

LEADS = {FIRST: LEADS_FIRST, LAST: LEADS_LAST}
CUSTOMERS = {FIRST: CUSTOMERS_FIRST, LAST: CUSTOMERS_LAST}
REVENUE = {FIRST: REVENUE_FIRST, LAST: REVENUE_LAST}


# Cost: each campaign's cost spread evenly over the days it runs
# ---------------------------------------------------------------------------------------------------------

# (id, first day, last day, cost) of one campaign.
Run = tuple[int, date, date, Decimal]


def campaign_runs() -> list[Run]:
    """Every campaign's run and cost, archived ones too (their money was spent)."""
    return list(Campaign.objects.order_by("pk").values_list("pk", "start", "end", "cost"))


def _runs(ctx: Context) -> list[Run]:
    return ctx.memo("campaign runs", campaign_runs)


def cost_share(run: Run, first: date, after: date) -> Decimal:
    """The part of one campaign's cost that falls on the days [first, after): its cost × the days of its
    run among them ÷ the days it runs."""
    _pk, start, end, cost = run
    days = (min(end + timedelta(days=1), after) - max(start, first)).days
    if days <= 0 or not cost:
        return ZERO
    return cost * days / ((end - start).days + 1)


def cost_between(runs: Iterable[Run], first: date, after: date, scope: str, scope_id: str) -> Decimal:
    """The cost of the days [first, after): one campaign's (``Scope.CAMPAIGN``) or all of them (the
    company)."""
    if scope == Scope.CAMPAIGN:
        runs = [r for r in runs if str(r[0]) == scope_id]
    return sum((cost_share(run, first, after) for run in runs), ZERO)


def _margin(ctx: Context) -> Decimal:
    """The company's gross margin as a fraction (an input of every ROI: its change recomputes them all)."""
    return ctx.memo("gross margin", lambda: CompanySettings.load().gross_margin_percent / HUNDRED)


# The figures and their rows
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignDetail(Detail):
    """What a campaign figure is made of in the period: the cost's share, the attributed counts and
    revenue, the gross margin used, and the attribution model."""

    model: str | None = None
    cost: float | None = None
    leads: int | None = None
    customers: int | None = None
    revenue: float | None = None
    won: int | None = None
    gross_margin_percent: float | None = None

    def facts(self) -> list[tuple[str, str | None]]:
        """The details as a manager reads them (the KPI page)."""

        def amount(value: float | None) -> str | None:
            if value is None:
                return None
            return f"{number_format(value, 0, force_grouping=True)} {settings.CRM_CURRENCY}"

        model = str(MODELS[self.model]) if self.model in MODELS else None
        margin = (
            None if self.gross_margin_percent is None else f"{number_format(self.gross_margin_percent, 1)} %"
        )
        return [
            (gettext("Attribution"), model),
            (gettext("Campaign cost in the period"), amount(self.cost)),
            (gettext("Leads"), None if self.leads is None else str(self.leads)),
            (gettext("Customers won"), None if self.customers is None else str(self.customers)),
            (gettext("Revenue won"), amount(self.revenue)),
            (gettext("Deals won"), None if self.won is None else str(self.won)),
            (gettext("Gross margin"), margin),
        ]


@dataclass(frozen=True)
class Figure:
    """KPI = one campaign figure (``cost``, ``leads``, ``cpl``, ``customers``, ``cac``, ``revenue``,
    ``roi``) under one attribution ``model`` (none for the cost), for every period × campaign and the
    company. While a week or month runs, the same figure over the same elapsed days of the period before
    (its day facts, and the cost of those days) is what it is compared with (KPIS.md §10.1)."""

    figure: str
    model: str = ""

    @property
    def datasets(self) -> tuple[Dataset, ...]:
        found = {
            "leads": LEADS,
            "cpl": LEADS,
            "customers": CUSTOMERS,
            "cac": CUSTOMERS,
            "revenue": REVENUE,
            "roi": REVENUE,
        }.get(self.figure)
        return (found[self.model],) if found else ()

    @property
    def uses_cost(self) -> bool:
        return self.figure in ("cost", "cpl", "cac", "roi")

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        data: dict[tuple[str, date, str, str], dict[str, Any]] = {}
        for ds in self.datasets:
            for key, values in grouped(ctx, ds).items():
                data.setdefault(key, {}).update(values)
        runs = _runs(ctx)
        margin = _margin(ctx) if self.figure == "roi" else ZERO
        # Every campaign running in a period has a row (its counts may be 0), besides those with records.
        for g in ctx.requested(kpi.granularities):
            for period in ctx.periods[g]:
                first, after = period.first_day, period.next().first_day
                for pk, start, end, _cost in runs:
                    if start < after and end >= first:
                        data.setdefault((g, first, Scope.CAMPAIGN, str(pk)), {})

        def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
            cost = ZERO
            if self.uses_cost:
                cost = cost_between(runs, period.first_day, period.next().first_day, scope, scope_id)
            return self.row(values, cost, margin)

        return rows_from(ctx, kpi, data, fn)

    def row(self, values: Mapping[str, Any], cost: Decimal, margin: Decimal) -> tuple:
        """(value, numerator, denominator, n, details) of the figure from the period's measures and cost."""
        leads, customers = dec(values.get("leads")), dec(values.get("customers"))
        revenue, won = dec(values.get("revenue")), int(values.get("won") or 0)
        details = CampaignDetail(model=self.model or None, cost=float(cost) if self.uses_cost else None)
        match self.figure:
            case "cost":
                return cost, None, None, None, details
            case "leads":
                return leads, None, None, int(leads), replace(details, leads=int(leads))
            case "cpl":
                return divide(cost, leads), cost, leads, int(leads), replace(details, leads=int(leads))
            case "customers":
                return customers, None, None, int(customers), replace(details, customers=int(customers))
            case "cac":
                return (
                    divide(cost, customers),
                    cost,
                    customers,
                    int(customers),
                    replace(details, customers=int(customers)),
                )
            case "revenue":
                return revenue, None, None, won, replace(details, revenue=float(revenue), won=won)
            case "roi":
                net = revenue * margin - cost
                facts = replace(
                    details, revenue=float(revenue), won=won, gross_margin_percent=float(margin * HUNDRED)
                )
                return divide(net, cost, HUNDRED), net, cost, won, facts
        raise ValueError(f"unknown campaign figure {self.figure!r}")

    @property
    def day_datasets(self) -> tuple[Dataset, ...]:
        return self.datasets

    def at_offset(self, ctx: Context, kpi: Kpi, at: Offset) -> tuple | None:
        values: dict[str, Any] = {}
        for ds in self.datasets:
            values.update(at.days(ds))
        runs = _runs(ctx) if self.uses_cost else []
        cost = cost_between(runs, at.before.first_day, at.until, at.scope, at.scope_id)
        margin = _margin(ctx) if self.figure == "roi" else ZERO
        return self.row(values, cost, margin)[:4]


# The records behind the numbers
# ---------------------------------------------------------------------------------------------------------


def _campaign_records(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """The campaigns whose run overlaps the period (one, for a campaign's row): managers only."""
    if not user.is_manager:
        return Campaign.objects.none()
    found = Campaign.objects.filter(start__lt=period.next().first_day, end__gte=period.first_day)
    if scope == Scope.CAMPAIGN:
        found = found.filter(pk=int(scope_id)) if scope_id.isdigit() else found.none()
    return found.order_by("-start", "name", "id")


def _campaign_cost(records: QuerySet, period: Period, scope: str, scope_id: str) -> Decimal:
    runs = list(records.order_by("pk").values_list("pk", "start", "end", "cost"))
    return sum((cost_share(r, period.first_day, period.next().first_day) for r in runs), ZERO)


def _cost_part(gives: str) -> Part:
    return Part(_campaign_records, gives, _campaign_cost, label=_("Campaign cost in the period"))


# The KPIs
# ---------------------------------------------------------------------------------------------------------


def _kpi(code: str, figure: str, model: str, **kwargs: Any) -> Kpi:
    return Kpi(
        code=code,
        family=Family.CAMPAIGNS,
        compute=Figure(figure, model),
        scopes=SCOPES,
        granularities=MONTHLY_AND_LONGER,
        **kwargs,
    )


COST = _kpi(
    "campaign_cost",
    "cost",
    "",
    label=_("Campaign cost"),
    unit=Unit.CURRENCY,
    better=Better.NEUTRAL,
    formula=_(
        "each campaign's cost spread evenly over the days it runs (first and last day included); a period "
        "takes the share of the days it holds"
    ),
    drill=Drill({VALUE: _cost_part(VALUE)}),
    detail=CampaignDetail,
)


def _leads(model: str) -> Part:
    label = _("New leads it brought") if model == FIRST else _("Leads it took over as the latest campaign")
    return dataset_part(LEADS[model], "leads", VALUE, label=label)


def _customers(model: str, gives: str = VALUE) -> Part:
    label = _("Customers it brought") if model == FIRST else _("New customers it touched last")
    return dataset_part(CUSTOMERS[model], "customers", gives, label=label)


def _revenue(model: str, gives: str = VALUE) -> Part:
    label = _("Deals won by customers it brought") if model == FIRST else _("Deals won that it touched last")
    return dataset_part(REVENUE[model], "revenue", gives, label=label)


LEADS_FIRST_TOUCH = _kpi(
    "campaign_leads_first_touch",
    "leads",
    FIRST,
    label=_("Campaign leads (first touch)"),
    unit=Unit.COUNT,
    better=Better.UP,
    formula=_("customer records created in the period that came from the campaign (as leads or customers)"),
    drill=Drill({VALUE: _leads(FIRST)}),
    detail=CampaignDetail,
    min_sample=MIN_EVENTS,
    significance=Significance.COUNT,
)
LEADS_LAST_TOUCH = _kpi(
    "campaign_leads_last_touch",
    "leads",
    LAST,
    label=_("Campaign leads (last touch)"),
    unit=Unit.COUNT,
    better=Better.UP,
    formula=_(
        "times in the period the campaign became a customer's latest campaign: new leads it brought, and "
        "leads and customers it brought back"
    ),
    drill=Drill({VALUE: _leads(LAST)}),
    detail=CampaignDetail,
    min_sample=MIN_EVENTS,
    significance=Significance.COUNT,
)
CPL_FIRST_TOUCH = _kpi(
    "campaign_cpl_first_touch",
    "cpl",
    FIRST,
    label=_("Cost per lead (first touch)"),
    unit=Unit.CURRENCY,
    better=Better.DOWN,
    formula=_("campaign cost of the period ÷ its first-touch leads of the period; no leads → no value"),
    drill=Drill({NUMERATOR: _cost_part(NUMERATOR), DENOMINATOR: replace(_leads(FIRST), gives=DENOMINATOR)}),
    detail=CampaignDetail,
)
CPL_LAST_TOUCH = _kpi(
    "campaign_cpl_last_touch",
    "cpl",
    LAST,
    label=_("Cost per lead (last touch)"),
    unit=Unit.CURRENCY,
    better=Better.DOWN,
    formula=_("campaign cost of the period ÷ its last-touch leads of the period; no leads → no value"),
    drill=Drill({NUMERATOR: _cost_part(NUMERATOR), DENOMINATOR: replace(_leads(LAST), gives=DENOMINATOR)}),
    detail=CampaignDetail,
)
CUSTOMERS_FIRST_TOUCH = _kpi(
    "campaign_customers_first_touch",
    "customers",
    FIRST,
    label=_("Customers won (first touch)"),
    unit=Unit.COUNT,
    better=Better.UP,
    formula=_("customers who became customers in the period and came from the campaign"),
    drill=Drill({VALUE: _customers(FIRST)}),
    detail=CampaignDetail,
    min_sample=MIN_EVENTS,
    significance=Significance.COUNT,
)
CUSTOMERS_LAST_TOUCH = _kpi(
    "campaign_customers_last_touch",
    "customers",
    LAST,
    label=_("Customers won (last touch)"),
    unit=Unit.COUNT,
    better=Better.UP,
    formula=_(
        "customers who became customers in the period and whom the campaign touched last before they did"
    ),
    drill=Drill({VALUE: _customers(LAST)}),
    detail=CampaignDetail,
    min_sample=MIN_EVENTS,
    significance=Significance.COUNT,
)
CAC_FIRST_TOUCH = _kpi(
    "campaign_cac_first_touch",
    "cac",
    FIRST,
    label=_("Campaign CAC (first touch)"),
    unit=Unit.CURRENCY,
    better=Better.DOWN,
    formula=_("campaign cost of the period ÷ its first-touch customers won in the period; none → no value"),
    drill=Drill({NUMERATOR: _cost_part(NUMERATOR), DENOMINATOR: _customers(FIRST, DENOMINATOR)}),
    detail=CampaignDetail,
)
CAC_LAST_TOUCH = _kpi(
    "campaign_cac_last_touch",
    "cac",
    LAST,
    label=_("Campaign CAC (last touch)"),
    unit=Unit.CURRENCY,
    better=Better.DOWN,
    formula=_("campaign cost of the period ÷ its last-touch customers won in the period; none → no value"),
    drill=Drill({NUMERATOR: _cost_part(NUMERATOR), DENOMINATOR: _customers(LAST, DENOMINATOR)}),
    detail=CampaignDetail,
)
REVENUE_FIRST_TOUCH = _kpi(
    "campaign_revenue_first_touch",
    "revenue",
    FIRST,
    label=_("Campaign revenue won (first touch)"),
    unit=Unit.CURRENCY,
    better=Better.UP,
    formula=_("amount of the deals won in the period by customers who came from the campaign"),
    drill=Drill({VALUE: _revenue(FIRST)}),
    detail=CampaignDetail,
)
REVENUE_LAST_TOUCH = _kpi(
    "campaign_revenue_last_touch",
    "revenue",
    LAST,
    label=_("Campaign revenue won (last touch)"),
    unit=Unit.CURRENCY,
    better=Better.UP,
    formula=_(
        "amount of the deals won in the period whose campaign is this one: the campaign that last touched "
        "the customer before the deal was created"
    ),
    drill=Drill({VALUE: _revenue(LAST)}),
    detail=CampaignDetail,
)
ROI_FIRST_TOUCH = _kpi(
    "campaign_roi_first_touch",
    "roi",
    FIRST,
    label=_("Campaign ROI (first touch)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "(first-touch revenue won × gross margin % − campaign cost) ÷ campaign cost, both of the period; "
        "no cost → no value"
    ),
    drill=Drill({"revenue": _revenue(FIRST, "revenue"), DENOMINATOR: _cost_part(DENOMINATOR)}),
    detail=CampaignDetail,
)
ROI_LAST_TOUCH = _kpi(
    "campaign_roi_last_touch",
    "roi",
    LAST,
    label=_("Campaign ROI (last touch)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "(last-touch revenue won × gross margin % − campaign cost) ÷ campaign cost, both of the period; "
        "no cost → no value"
    ),
    drill=Drill({"revenue": _revenue(LAST, "revenue"), DENOMINATOR: _cost_part(DENOMINATOR)}),
    detail=CampaignDetail,
)

# The figures of one model, in the order the campaigns page shows them.
BY_MODEL = {
    FIRST: (LEADS_FIRST_TOUCH, CPL_FIRST_TOUCH, CUSTOMERS_FIRST_TOUCH, CAC_FIRST_TOUCH, REVENUE_FIRST_TOUCH,
            ROI_FIRST_TOUCH),
    LAST: (LEADS_LAST_TOUCH, CPL_LAST_TOUCH, CUSTOMERS_LAST_TOUCH, CAC_LAST_TOUCH, REVENUE_LAST_TOUCH,
           ROI_LAST_TOUCH),
}  # fmt: skip

# The datasets these KPIs read.
DATASETS = [LEADS_FIRST, LEADS_LAST, CUSTOMERS_FIRST, CUSTOMERS_LAST, REVENUE_FIRST, REVENUE_LAST]

KPIS = [COST, *BY_MODEL[FIRST], *BY_MODEL[LAST]]
