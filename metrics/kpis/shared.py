"""The datasets shared by several KPI families (the ``Dataset`` type itself is in ``dataset.py``): each is
one grouped scan per recompute.

Exclusions (KPIS.md G9) live here, once: merged duplicates and internal/test customers never count,
spam tickets never count, lost deals marked as duplicate or invalid leave the win rate. Team and user
scopes use the record's *current* owner (or assignee) and that user's current team.
"""

from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import (
    BigIntegerField,
    BooleanField,
    Case,
    DateField,
    DateTimeField,
    Exists,
    ExpressionWrapper,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
    Window,
)
from django.db.models.functions import Cast, Coalesce, Lag, Round, RowNumber, Trunc, TruncDate
from psycopg import sql as pg

from crm.models import (
    Customer,
    CustomerStatusChange,
    Deal,
    DealStageChange,
    PipelineStage,
    Source,
    SpendEntry,
    Ticket,
    TicketStatusChange,
)
from crm.selectors import rots_at
from metrics.kpis.base import Context
from metrics.kpis.builders import (
    Dataset,
    Grouped,
    Offset,
    count,
    days_between,
    grouped,
    hours_between,
    mean,
    percentile,
    total,
)
from metrics.kpis.dataset import ScopePaths
from metrics.kpis.sql import LocalDay, Spans, in_spans, part
from metrics.models import Scope
from metrics.periods import GRANULARITIES, Period, local_midnight, period_index, reporting_tz

WON, LOST, OPEN = Deal.Status.WON, Deal.Status.LOST, Deal.Status.OPEN
LEAD_CONVERSION_DAYS = 90
RENEWAL_GRACE_DAYS = 30
# Upsells co-terminate with the subscription they extend: only new and renewal terms come up for renewal.
SUBSCRIPTION_KINDS = [Deal.Kind.NEW, Deal.Kind.RENEWAL]
# Lost deals closed for data-hygiene reasons do not count as lost sales (KPIS.md §4, win rate).
INVALID_LOST = Q(status=LOST, lost_reason__iregex=r"^\s*(duplicate|invalid)")
# Money has 2 decimals; × a 0–100 probability ÷ 100 it has 4.
CENTS, WEIGHTED_CENTS = 100, 10_000
YEAR_STEPS = {"week": 52, "month": 12, "quarter": 4, "year": 1}


# The customers whose records no KPI counts (merged duplicates, internal or test customers), in raw SQL.
EXCLUDED_CUSTOMERS_SQL = pg.SQL("SELECT id FROM crm_customer WHERE merged_into_id IS NOT NULL OR is_internal")


def live(prefix: str = "") -> Q:
    """Not a merged duplicate, not an internal or test customer; ``prefix`` is the path to the customer
    (e.g. ``customer__``) for other records.

    For other records it is a condition on the few excluded customers (a small indexed set), so a scan
    of deals or tickets needs no join of the customer table.
    """
    if not prefix:
        return Q(merged_into__isnull=True, is_internal=False)
    excluded = Customer.objects.filter(Q(merged_into__isnull=False) | Q(is_internal=True)).values("pk")
    return ~Q(**{f"{prefix.removesuffix('__')}__in": excluded})


def year_before(period: Period) -> Period:
    """The same period one year earlier (52 weeks earlier for a week)."""
    return period.previous(YEAR_STEPS[period.granularity])


def local_days(qs: QuerySet, field: str) -> set[date]:
    """The distinct local days of the instants in ``field`` over ``qs``."""
    day = Trunc(field, "day", output_field=DateField(), tzinfo=reporting_tz())
    return {d for d in qs.order_by().annotate(on_day=day).values_list("on_day", flat=True).distinct() if d}


CLOSED_KINDS = [PipelineStage.Kind.WON, PipelineStage.Kind.LOST]


def reopened_deals(since: datetime) -> QuerySet:
    """Deals moved out of a won or lost stage since ``since`` (reopened, or lost → won)."""
    return DealStageChange.objects.filter(at__gte=since, from_stage__kind__in=CLOSED_KINDS).values("deal_id")


def reopened_deal_days(ctx: Context, since: datetime) -> set[date]:
    """A reopened deal leaves the day it was closed on, which is one of the days it changed stage."""
    return local_days(DealStageChange.objects.filter(deal_id__in=reopened_deals(since)), "at")


def edited_customer_deal_days(ctx: Context, since: datetime) -> set[date]:
    """Closed deals count per customer segment, which is the customer's: when a customer is edited, the
    days its closed deals were closed on."""
    closed = Deal.objects.filter(customer__updated_at__gte=since, status__in=[WON, LOST])
    return local_days(closed, "closed_at")


def reopened_ticket_days(ctx: Context, since: datetime) -> set[date]:
    """A reopened ticket leaves the day it was solved on, which is one of the days its status changed."""
    reopened = TicketStatusChange.objects.filter(
        at__gte=since, from_status__in=[Ticket.Status.SOLVED, Ticket.Status.CLOSED]
    ).values("ticket_id")
    return local_days(TicketStatusChange.objects.filter(ticket_id__in=reopened), "at")


DEAL_SCOPES: ScopePaths = {Scope.USER: "owner_id", Scope.TEAM: "owner__team_id"}
DEAL_ACQUISITION_SCOPES: ScopePaths = {
    **DEAL_SCOPES,
    Scope.SOURCE: "source",
    Scope.SEGMENT: "customer__segment",
}
CUSTOMER_SCOPES: ScopePaths = {
    Scope.USER: "owner_id",
    Scope.TEAM: "owner__team_id",
    Scope.SOURCE: "source",
    Scope.SEGMENT: "segment",
}
TICKET_SCOPES: ScopePaths = {Scope.USER: "assignee_id", Scope.TEAM: "assignee__team_id"}
PRICED = Q(amount__gt=0)


# Deals
# ---------------------------------------------------------------------------------------------------------

CLOSED_DEALS = Dataset(
    name="closed_deals",
    rows=lambda ctx: Deal.objects.filter(live("customer__"), status__in=[WON, LOST]).exclude(INVALID_LOST),
    date="closed_at",
    scopes=DEAL_ACQUISITION_SCOPES,
    measures={
        "won": count(Q(status=WON)),
        "closed": count(),
        "won_amount": total("amount", Q(status=WON), scale=CENTS),
        "closed_amount": total("amount", scale=CENTS),
        "won_priced": count(Q(status=WON) & PRICED),
        "won_priced_amount": total("amount", Q(status=WON) & PRICED, scale=CENTS),
        "renewals_won": count(Q(status=WON, kind=Deal.Kind.RENEWAL)),
        "renewals_closed": count(Q(kind=Deal.Kind.RENEWAL)),
    },
    # Growth compares with the previous period and the same period a year earlier.
    compare=lambda p: (p.previous(), year_before(p)),
    touches=(reopened_deal_days, edited_customer_deal_days),
)

WON_DEAL_STATS = Dataset(
    name="won_deal_stats",
    rows=lambda ctx: Deal.objects.filter(live("customer__"), status=WON).annotate(
        cycle_days=days_between("created_at", "closed_at")
    ),
    date="closed_at",
    scopes=DEAL_SCOPES,
    measures={
        "won": count(Q(cycle_days__gte=0)),
        "priced": count(PRICED),
        "median_amount": percentile("amount", 0.5, PRICED),
        "cycle_median": percentile("cycle_days", 0.5, Q(cycle_days__gte=0)),
        "cycle_p90": percentile("cycle_days", 0.9, Q(cycle_days__gte=0)),
        "cycle_mean": mean("cycle_days", Q(cycle_days__gte=0)),
    },
    touches=(reopened_deal_days, edited_customer_deal_days),
)


def _stages(ctx: Context) -> list[tuple[int, str, int]]:
    """(id, kind, default probability) of every pipeline stage, read once per run."""
    return ctx.memo("stages", lambda: list(PipelineStage.objects.values_list("pk", "kind", "probability")))


def _open_stage_ids(ctx: Context) -> list[int]:
    return [pk for pk, kind, _p in _stages(ctx) if kind == PipelineStage.Kind.OPEN]


def _open_weight(ctx: Context, stage: str) -> Case:
    """Probability (0–100) that an open stage gives the deal: its override, else the stage's default.

    The stages are few: spelled out by id, so a scan of the stage changes needs no join of the stages
    (and a stage edit changes the facts' definition, which rebuilds them).
    """
    open_ids = _open_stage_ids(ctx)
    default = Case(
        *(When(**{stage: pk}, then=Value(p)) for pk, _k, p in _stages(ctx)), output_field=IntegerField()
    )
    return Case(
        When(**{f"{stage}__in": open_ids}, then=Coalesce("deal__probability", default)),
        default=Value(0),
        output_field=IntegerField(),
    )


def _cents(path: str) -> Cast:
    return Cast(Coalesce(path, Value(Decimal(0))) * Value(Decimal(100)), BigIntegerField())


def _is_open(ctx: Context, stage: str) -> Case:
    return Case(When(**{f"{stage}__in": _open_stage_ids(ctx)}, then=Value(1)), default=Value(0))


# Each stage change moves the deal's amount out of the old stage and into the new one; summed up to an
# instant, the deltas give the open pipeline as it stood then (KPIS.md G2: stocks from history).
PIPELINE_DELTAS = Dataset(
    name="pipeline_deltas",
    rows=lambda ctx: DealStageChange.objects.filter(live("deal__customer__")).annotate(
        open_delta=_is_open(ctx, "to_stage_id") - _is_open(ctx, "from_stage_id"),
        weight_delta=_open_weight(ctx, "to_stage_id") - _open_weight(ctx, "from_stage_id"),
        cents=_cents("deal__amount"),
    ),
    date="at",
    scopes={Scope.USER: "deal__owner_id", Scope.TEAM: "deal__owner__team_id"},
    measures={
        "open": total("open_delta"),
        "amount": total(F("open_delta") * F("cents"), scale=CENTS, prescaled=True),
        # cents × percent = the weighted amount × 10 000, an exact integer.
        "weighted": total(F("weight_delta") * F("cents"), scale=WEIGHTED_CENTS, prescaled=True),
    },
    opening_balance=True,
)


def _weighted_cents() -> Any:
    """The weighted amount × 10 000 of an open deal: cents × its probability (override, else the stage's)."""
    return Cast(
        Round(Coalesce("amount", Value(Decimal(0))) * Value(Decimal(100)))
        * Coalesce("probability", "stage__probability"),
        BigIntegerField(),
    )


# The open pipeline now: the level of the current period (amounts or probabilities edited since the
# stage moves are in it at once; earlier periods take such edits at the nightly rebuild).
OPEN_PIPELINE_NOW = Dataset(
    name="open_pipeline_now",
    rows=lambda ctx: Deal.objects.filter(live("customer__"), status=OPEN).annotate(
        as_of=Value(ctx.now, output_field=DateTimeField()),
        cents=_cents("amount"),
        weighted_cents=_weighted_cents(),
    ),
    date="as_of",
    scopes=DEAL_SCOPES,
    measures={
        "open": count(),
        "amount": total("cents", scale=CENTS, prescaled=True),
        "weighted": total("weighted_cents", scale=WEIGHTED_CENTS, prescaled=True),
    },
    always=True,
    current_only=True,
    as_of_run=True,
)


def _rotting_rows(ctx: Context) -> QuerySet:
    """The open deals now, each marked ``rotting`` (1) when untouched — no activity, stage move or edit —
    for longer than its stage's rotting days (KPIS.md §10.7), with its amount when it is."""
    rotting = Case(When(Q(rots_at__lt=ctx.now), then=Value(1)), default=Value(0), output_field=IntegerField())
    return (
        Deal.objects.filter(live("customer__"), status=OPEN)
        .alias(rots_at=rots_at())
        .annotate(as_of=Value(ctx.now, output_field=DateTimeField()), cents=_cents("amount"), rotting=rotting)
    )


# Rotting deals now (crm.selectors.deals_rotting says the same for the board and the workspace).
ROTTING_NOW = Dataset(
    name="rotting_now",
    rows=_rotting_rows,
    date="as_of",
    scopes=DEAL_SCOPES,
    measures={
        "open": count(),
        "amount": total("cents", scale=CENTS, prescaled=True),
        "rotting": count(Q(rotting=1)),
        "rotting_amount": total("cents", Q(rotting=1), scale=CENTS, prescaled=True),
    },
    always=True,
    current_only=True,
    as_of_run=True,
)


def _stage_case(ctx: Context, column: str, *, weight: bool) -> tuple[pg.Composable, list[Any]]:
    """SQL: 1 (or the probability: the deal's override, else the stage's) when the stage change's
    ``column`` is an open stage, else 0; the stages spelled out by id."""
    stages = _stages(ctx)
    open_ids = _open_stage_ids(ctx)
    if not open_ids:
        return pg.SQL("0"), []
    stage = pg.Identifier("c", column)
    if not weight:
        return pg.SQL("(CASE WHEN {} = ANY(%s) THEN 1 ELSE 0 END)").format(stage), [open_ids]
    whens = pg.SQL(" ").join(pg.SQL("WHEN {} = %s THEN %s").format(stage) for _ in stages)
    params: list[Any] = [open_ids, *(v for pk, _k, p in stages for v in (pk, p))]
    return (
        pg.SQL("(CASE WHEN {} = ANY(%s) THEN COALESCE(d.probability, CASE {} END) ELSE 0 END)").format(
            stage, whens
        ),
        params,
    )


def _forecast_day_sql(ctx: Context, spans: Sequence[tuple[date, date]]) -> tuple[pg.Composable, list[Any]]:
    """Day rows of the forecast at the start of each period (per expected close day and owner).

    When each period began is worked out once per day of the range (not per deal or stage change);
    every stage change then counts for the periods of its deal's close date that began after it.
    """
    bounds = [d for span in spans for d in span]

    def start(g: str) -> pg.Identifier:
        return pg.Identifier(f"start_{g}")

    starts = pg.SQL(", ").join(
        pg.SQL("(date_trunc({}, day)::timestamp AT TIME ZONE %s) AS {}").format(pg.Literal(g), start(g))
        for g in GRANULARITIES
    )
    to_open, to_open_params = _stage_case(ctx, "to_stage_id", weight=False)
    from_open, from_open_params = _stage_case(ctx, "from_stage_id", weight=False)
    to_weight, to_weight_params = _stage_case(ctx, "to_stage_id", weight=True)
    from_weight, from_weight_params = _stage_case(ctx, "from_stage_id", weight=True)
    columns = [
        pg.SQL("COALESCE(sum({}) FILTER (WHERE at < {}), 0)::bigint").format(pg.Identifier(name), start(g))
        for name in ("weighted", "opened")
        for g in GRANULARITIES
    ]
    column_params = [*to_weight_params, *from_weight_params, *to_open_params, *from_open_params]
    # OFFSET 0 keeps the inner query apart, so each change's deltas are worked out once, not per sum.
    sql = pg.SQL("""
        WITH s AS MATERIALIZED (
            SELECT day::date AS day, {starts}
            FROM generate_series(%s::date, %s::date, interval '1 day') AS day
        )
        SELECT on_day, 'user'::text AS scope, COALESCE(owner_id::text, '') AS scope_id, {values}
        FROM (
            SELECT d.expected_close_date AS on_day, d.owner_id, c.at, {period_starts},
                   (({to_weight} - {from_weight}) * (COALESCE(d.amount, 0) * 100)::bigint) AS weighted,
                   ({to_open} - {from_open}) AS opened
            FROM crm_dealstagechange c
            JOIN crm_deal d ON d.id = c.deal_id
            JOIN s ON s.day = d.expected_close_date
            WHERE ({ranges}) AND d.customer_id NOT IN ({excluded})
            OFFSET 0
        ) AS x
        GROUP BY on_day, owner_id
    """).format(
        starts=starts,
        values=pg.SQL(", ").join(pg.SQL("{} AS {}").format(c, part(i)) for i, c in enumerate(columns)),
        period_starts=pg.SQL(", ").join(pg.Identifier("s", f"start_{g}") for g in GRANULARITIES),
        to_weight=to_weight,
        from_weight=from_weight,
        to_open=to_open,
        from_open=from_open,
        ranges=in_spans(pg.Identifier("d", "expected_close_date"), len(spans)),
        excluded=EXCLUDED_CUSTOMERS_SQL,
    )
    tz = [settings.TIME_ZONE] * len(GRANULARITIES)
    first, last = min(lo for lo, _hi in spans), max(hi for _lo, hi in spans)
    return sql, [*tz, first, last, *column_params, *bounds]


# What the weighted forecast of a period said at its start: the stage-change deltas, dated before that
# start, of the deals expected to close in the period (their weighted value just before it began).
FORECAST_DELTAS = Dataset(
    name="forecast_deltas",
    rows=lambda ctx: Deal.objects.filter(live("customer__"), expected_close_date__isnull=False),
    date="expected_close_date",
    date_is_day=True,
    scopes={Scope.USER: "owner_id", Scope.TEAM: "owner__team_id"},
    measures={
        "forecast": total(
            "forecast", scale=WEIGHTED_CENTS, prescaled=True, where_by_granularity=lambda g: Q()
        ),
        "deals": total("deals", where_by_granularity=lambda g: Q()),
    },
    # A period's forecast is settled when the period starts (later moves do not count for it), and
    # only finished periods are reported: the nightly rebuild keeps these facts.
    refresh=False,
    day_sql=_forecast_day_sql,
)

OPEN_BY_CLOSE_DATE = Dataset(
    name="open_by_close_date",
    rows=lambda ctx: Deal.objects.filter(
        live("customer__"), status=OPEN, expected_close_date__isnull=False
    ).annotate(cents=_cents("amount"), weighted_cents=_weighted_cents()),
    date="expected_close_date",
    date_is_day=True,
    scopes=DEAL_SCOPES,
    measures={
        "open": count(),
        "weighted": total("weighted_cents", scale=WEIGHTED_CENTS, prescaled=True),
        "amount": total("cents", scale=CENTS, prescaled=True),
    },
    # The open deals as they are now: only read for the current period.
    always=True,
    current_only=True,
)


def _renewal_rows(ctx: Context) -> QuerySet:
    renewed = Deal.objects.filter(renewal_of=OuterRef("pk"), status=WON).annotate(
        closed_day=TruncDate("closed_at", tzinfo=reporting_tz())
    )
    renewed = renewed.filter(closed_day__lte=OuterRef("term_end") + timedelta(days=RENEWAL_GRACE_DAYS))
    return Deal.objects.filter(
        live("customer__"), status=WON, term_end__isnull=False, kind__in=SUBSCRIPTION_KINDS
    ).annotate(renewed=Exists(renewed))


RENEWALS = Dataset(
    name="renewals",
    rows=_renewal_rows,
    date="term_end",
    date_is_day=True,
    scopes=DEAL_SCOPES,
    measures={"due": count(), "renewed": count(Q(renewed=True)), "due_amount": total("amount", scale=CENTS)},
    touches=(lambda ctx, since: _renewed_term_days(since),),
)


def _renewed_term_days(since: datetime) -> set[date]:
    """A renewal won (or reopened) changes the renewed deal's row, on its term end."""
    renewals = Deal.objects.filter(updated_at__gte=since, renewal_of__isnull=False).values("renewal_of_id")
    days = Deal.objects.filter(pk__in=renewals, term_end__isnull=False).values_list("term_end", flat=True)
    return {day for day in days if day is not None}


def _repeat_rows(ctx: Context) -> QuerySet:
    """Won deals with the close time of the customer's previous won deal and whether it was their third+.

    Window functions over each customer's won deals, of the customers with a won deal in the scanned
    ranges only (a day's rescan reads a few customers' histories, not every won deal).
    """
    won = Deal.objects.filter(live("customer__"), status=WON)
    deals = won
    if ctx.scan:
        scanned = Q(pk__in=[])
        for lo, hi in ctx.scan:
            scanned |= Q(closed_at__lt=hi) if lo is None else Q(closed_at__gte=lo, closed_at__lt=hi)
        deals = won.filter(customer_id__in=won.filter(scanned).values("customer_id"))
    partition, order = [F("customer_id")], [F("closed_at").asc(), F("id").asc()]
    # Periods compared as local days (a period begins at local midnight): no time zone per granularity.
    return deals.annotate(
        previous_at=Window(Lag("closed_at"), partition_by=partition, order_by=order),
        nth=Window(RowNumber(), partition_by=partition, order_by=order),
        third_or_later=ExpressionWrapper(Q(nth__gte=3), output_field=BooleanField()),
        this_day=LocalDay("closed_at"),
        previous_day=LocalDay("previous_at"),
        **{f"this_{g}": Trunc("this_day", g, output_field=DateField()) for g in YEAR_STEPS},
        **{f"previous_{g}": Trunc("previous_day", g, output_field=DateField()) for g in YEAR_STEPS},
    )


def _first_in_period(g: str) -> Q:
    """The customer's first won deal of this deal's period: none before it, or the one before in an
    earlier period."""
    return Q(previous_at__isnull=True) | Q(**{f"previous_{g}__lt": F(f"this_{g}")})


def _makes_repeat(g: str) -> Q:
    """Counts the customer as a repeat buyer of the period, once: their first deal of the period when they
    had bought before it, or their second deal ever when the first is in the same period."""
    return Q(previous_at__isnull=False) & (
        Q(**{f"previous_{g}__lt": F(f"this_{g}")})
        | Q(third_or_later=False, **{f"previous_{g}": F(f"this_{g}")})
    )


def _repeat_touch(ctx: Context, since: datetime) -> set[date]:
    """A won deal reopened changes which deal comes first or second for its customer's later deals."""
    customers = Deal.objects.filter(pk__in=reopened_deals(since)).values("customer_id")
    return local_days(Deal.objects.filter(customer_id__in=customers, status=WON), "closed_at")


# Buyers of a period are customers with a won deal in it; repeat buyers those for whom it was at least
# their second. Both are counted on one deal per customer and period, decided by that deal and the one
# before it, so the counts add up over days (and a deal won later never changes an earlier day).
REPEAT_BUYERS = Dataset(
    name="repeat_buyers",
    rows=_repeat_rows,
    date="closed_at",
    scopes={Scope.USER: "customer__owner_id", Scope.TEAM: "customer__owner__team_id"},
    measures={
        "buyers": count(where_by_granularity=_first_in_period),
        "repeat": count(where_by_granularity=_makes_repeat),
    },
    touches=(reopened_deal_days, _repeat_touch),
    window=True,
)


# Customers
# ---------------------------------------------------------------------------------------------------------

NEW_CUSTOMERS = Dataset(
    name="new_customers",
    rows=lambda ctx: Customer.objects.filter(live(), became_customer_at__isnull=False),
    date="became_customer_at",
    scopes=CUSTOMER_SCOPES,
    measures={"new": count(), "referral": count(Q(source=Source.REFERRAL))},
)

# Leads: customers created as leads (not created directly as customers, whose start equals creation).
LEADS = Dataset(
    name="leads",
    rows=lambda ctx: Customer.objects.filter(live()).exclude(became_customer_at=F("created_at")),
    date="created_at",
    scopes=CUSTOMER_SCOPES,
    measures={
        "leads": count(),
        "converted": count(Q(became_customer_at__lt=F("created_at") + timedelta(days=LEAD_CONVERSION_DAYS))),
    },
)


ACTIVITY_GRANULARITIES = ("week", "month", "quarter", "year")


def _status_history(spans: Spans) -> Iterator[tuple[int, int | None, list[tuple[date, str]]]]:
    """(customer, owner, [(local day, to_status), …] in order) of every live customer with a status
    change on a day in ``spans``, with its whole history."""
    bounds = [moment for lo, hi in spans for moment in (local_midnight(lo), local_midnight(hi))]
    sql = pg.SQL("""
        SELECT x.customer_id, c.owner_id, (x.at AT TIME ZONE %s)::date, x.to_status
        FROM crm_customerstatuschange x JOIN crm_customer c ON c.id = x.customer_id
        WHERE c.merged_into_id IS NULL AND NOT c.is_internal
          AND x.customer_id IN (SELECT customer_id FROM crm_customerstatuschange WHERE {})
        ORDER BY x.customer_id, x.at, x.id
    """).format(in_spans(pg.Identifier("at"), len(spans)))
    with connection.cursor() as cursor:
        cursor.execute(sql, [settings.TIME_ZONE, *bounds])
        current: tuple[int, int | None] | None = None
        events: list[tuple[date, str]] = []
        for customer_id, owner_id, day, status in cursor:
            if current is not None and current[0] != customer_id:
                yield current[0], current[1], events
                events = []
            current = (customer_id, owner_id)
            events.append((day, status))
        if current is not None:
            yield current[0], current[1], events


def _activity_day_rows(ctx: Context, spans: Spans) -> Iterator[tuple]:
    """Day rows of the active-customer counts (see ``customer_activity``), per account owner.

    Per customer, an *interval* runs from a change to active until the next change; intervals that
    meet within one period form a *chain* (active throughout the period but for a gap inside it).
    Measures, on the day of the change they belong to: ``level`` +1 when an interval starts and −1
    when it ends (a stock: active just before any instant); per granularity, ``churned`` (an interval
    that began in an earlier period ends), ``chain_start`` (a chain begins) and ``chain_lost`` (a
    chain that began in an earlier period ends in this one).
    """
    in_spans = [(lo, hi) for lo, hi in spans]
    wanted = lambda day: any(lo <= day < hi for lo, hi in in_spans)  # noqa: E731
    grans = ACTIVITY_GRANULARITIES
    n = 1 + 3 * len(grans)
    cells: dict[tuple[date, str], list[int]] = defaultdict(lambda: [0] * n)
    for _customer, owner_id, events in _status_history(spans):
        scope_id = "" if owner_id is None else str(owner_id)
        intervals = [
            (day, events[i + 1][0] if i + 1 < len(events) else None)
            for i, (day, status) in enumerate(events)
            if status == Customer.Status.ACTIVE
        ]
        for s_day, e_day in intervals:
            if wanted(s_day):
                cells[(s_day, scope_id)][0] += 1
            if e_day is not None and wanted(e_day):
                cells[(e_day, scope_id)][0] -= 1
        for gi, g in enumerate(grans):
            base = 1 + 3 * gi
            chain_start: tuple[date, int] | None = None  # (first day, period index) of the open chain
            previous_end: int | None = None
            for i, (s_day, e_day) in enumerate(intervals):
                s = period_index(s_day, g)
                e = period_index(e_day, g) if e_day is not None else None
                if e_day is not None and e is not None and s < e and wanted(e_day):
                    cells[(e_day, scope_id)][base] += 1  # churned
                if chain_start is None or previous_end != s:
                    chain_start = (s_day, s)
                    if wanted(s_day):
                        cells[(s_day, scope_id)][base + 1] += 1  # chain_start
                previous_end = e
                if e_day is None or e is None:
                    continue  # still active (no later change): its chain does not end
                following = intervals[i + 1][0] if i + 1 < len(intervals) else None
                ends_chain = following is None or period_index(following, g) != e
                if ends_chain and chain_start[1] < e and wanted(e_day):
                    cells[(e_day, scope_id)][base + 2] += 1  # chain_lost
    for (day, scope_id), values in cells.items():
        yield (day, Scope.USER, scope_id, *values)


def _activity_touch(ctx: Context, since: datetime) -> set[date]:
    """A change can alter the flags of the customer's earlier changes (a reactivation continues a chain),
    and an edit of the customer (owner, merge) moves all of them: every day of those customers' changes."""
    customers = (
        CustomerStatusChange.objects.filter(at__gte=since)
        .values("customer_id")
        .union(Customer.objects.filter(updated_at__gte=since).values("id"))
    )
    return local_days(CustomerStatusChange.objects.filter(customer_id__in=customers), "at")


ACTIVITY = Dataset(
    name="customer_activity",
    rows=lambda ctx: CustomerStatusChange.objects.none(),
    date="at",
    scopes={Scope.USER: "owner_id", Scope.TEAM: "owner__team_id"},
    measures={
        "level": total("level"),
        **{
            f"{name}_{g}": total(name)
            for g in ACTIVITY_GRANULARITIES
            for name in ("churned", "chain_start", "chain_lost")
        },
    },
    opening_balance=True,
    changed=(),
    touches=(_activity_touch,),
    day_rows=_activity_day_rows,
)


def customer_activity(ctx: Context) -> Grouped:
    """Active-customer counts per period and owner scope, from the status history (KPIS.md §3).

    Per period P = [a, b): ``start`` = customers active just before a (S), ``end`` = active just before
    b (E), ``during`` = active at some time in P, ``churned`` = members of S who churned in P (counted
    once; a customer who joined and churned inside P is not in S), ``retained`` = active at a and at b.
    """
    ctx.read(ACTIVITY.name)
    return ctx.memo("customer_activity", lambda: _customer_activity(ctx))


def customer_activity_at(ctx: Context, at: Offset) -> dict[str, Any] | None:
    """The counts of ``customer_activity`` after the first days of the period before a running one (``at``):
    the customers active at its start, and the level changes, churns, chain starts and lost chains of
    those days (the day facts). None when the run did not compute that period."""
    activity = customer_activity(ctx)
    if at.company_key not in activity:
        return None
    g = at.before.granularity
    start = int(activity.get(at.key, {}).get("start") or 0)
    days = at.days(ACTIVITY)

    def total(name: str) -> int:
        return int(days.get(name) or 0)

    return {
        "start": start,
        "end": start + total("level"),
        "during": start + total(f"chain_start_{g}"),
        "churned": total(f"churned_{g}"),
        "retained": start - total(f"chain_lost_{g}"),
    }


def _customer_activity(ctx: Context) -> Grouped:
    flows = grouped(ctx, ACTIVITY)
    series: dict[tuple[str, str, str], list[tuple[date, dict[str, Any]]]] = defaultdict(list)
    for (g, first_day, scope, scope_id), values in flows.items():
        series[(g, scope, scope_id)].append((first_day, values))
    for g in ctx.granularities:
        series.setdefault((g, Scope.COMPANY, ""), [])
    out: Grouped = {}
    for (g, scope, scope_id), points in series.items():
        points.sort(key=lambda item: item[0])
        level, i = 0, 0
        for period in ctx.periods[g]:
            while i < len(points) and points[i][0] < period.first_day:
                level += int(points[i][1].get("level") or 0)
                i += 1
            start, moved = level, {}
            if i < len(points) and points[i][0] == period.first_day:
                moved = points[i][1]
                level += int(moved.get("level") or 0)
                i += 1
            churned, chain_start, chain_lost = (
                int(moved.get(f"{name}_{g}") or 0) for name in ("churned", "chain_start", "chain_lost")
            )
            values = {
                "start": start,
                "end": level,
                "during": start + chain_start,
                "churned": churned,
                "retained": start - chain_lost,
            }
            if scope == Scope.COMPANY or any(values.values()):
                out[(g, period.first_day, scope, scope_id)] = values
    return out


# Tickets
# ---------------------------------------------------------------------------------------------------------


def live_tickets() -> QuerySet:
    return Ticket.objects.filter(live("customer__"), is_spam=False)


TICKETS_CREATED = Dataset(
    name="tickets_created",
    rows=lambda ctx: live_tickets(),
    date="created_at",
    scopes=TICKET_SCOPES,
    measures={"created": count(), "unreplied": count(Q(first_response_at__isnull=True))},
)

# Complaints are counted against the account owner's customers, like the active customers they divide.
COMPLAINTS = Dataset(
    name="complaints",
    rows=lambda ctx: live_tickets().filter(category=Ticket.Category.COMPLAINT),
    date="created_at",
    scopes={Scope.USER: "customer__owner_id", Scope.TEAM: "customer__owner__team_id"},
    measures={"complaints": count()},
)


def solved_tickets(ctx: Context) -> QuerySet:
    """Tickets whose latest solve counts: still solved or closed."""
    return live_tickets().filter(
        status__in=[Ticket.Status.SOLVED, Ticket.Status.CLOSED], solved_at__isnull=False
    )


TICKETS_SOLVED = Dataset(
    name="tickets_solved",
    rows=solved_tickets,
    date="solved_at",
    scopes=TICKET_SCOPES,
    measures={"solved": count(), "reopened": count(Q(reopen_count__gt=0))},
    touches=(reopened_ticket_days,),
)

SOLVE_TIMES = Dataset(
    name="solve_times",
    rows=lambda ctx: solved_tickets(ctx).annotate(
        full_hours=hours_between("created_at", "solved_at"),
        first_hours=hours_between("created_at", "first_solved_at"),
    ),
    date="solved_at",
    scopes=TICKET_SCOPES,
    measures={
        "solved": count(),
        "res_median": percentile("full_hours", 0.5),
        "res_p90": percentile("full_hours", 0.9),
        "first_res_median": percentile("first_hours", 0.5),
    },
    touches=(reopened_ticket_days,),
)

TICKETS_REPLIED = Dataset(
    name="tickets_replied",
    rows=lambda ctx: (
        live_tickets()
        .filter(first_response_at__isnull=False)
        .annotate(frt_hours=hours_between("created_at", "first_response_at"))
    ),
    date="first_response_at",
    scopes=TICKET_SCOPES,
    measures={
        "replied": count(),
        "frt_median": percentile("frt_hours", 0.5),
        "frt_p90": percentile("frt_hours", 0.9),
        "frt_mean": mean("frt_hours"),
    },
)


# An SLA target counts once: met on the day it was completed in time, breached on the day it fell due
# without being completed in time (targets still running are left out).
def _sla_met(done: str, due: str) -> Callable[[Context], QuerySet]:
    return lambda ctx: live_tickets().filter(**{f"{due}__isnull": False, f"{done}__lte": F(due)})


def _sla_breached(done: str, due: str) -> Callable[[Context], QuerySet]:
    return lambda ctx: live_tickets().filter(
        Q(**{f"{done}__isnull": True}) | Q(**{f"{done}__gt": F(due)}), **{f"{due}__lte": ctx.now}
    )


def _sla_datasets(target: str, done: str, due: str) -> tuple[Dataset, Dataset]:
    met = Dataset(
        name=f"sla_{target}_met",
        rows=_sla_met(done, due),
        date=done,
        scopes=TICKET_SCOPES,
        measures={"met": count()},
    )
    breached = Dataset(
        name=f"sla_{target}_breached",
        rows=_sla_breached(done, due),
        date=due,
        scopes=TICKET_SCOPES,
        measures={"breached": count()},
    )
    return met, breached


SLA_REPLY = _sla_datasets("reply", "first_response_at", "first_response_due_at")
SLA_RESOLUTION = _sla_datasets("resolution", "first_solved_at", "resolution_due_at")

UNSOLVED = list(Ticket.UNSOLVED)
BACKLOG_DELTAS = Dataset(
    name="backlog_deltas",
    rows=lambda ctx: TicketStatusChange.objects.filter(
        live("ticket__customer__"), ticket__is_spam=False
    ).annotate(
        delta=Case(When(to_status__in=UNSOLVED, then=Value(1)), default=Value(0))
        - Case(When(from_status__in=UNSOLVED, then=Value(1)), default=Value(0))
    ),
    date="at",
    scopes={Scope.USER: "ticket__assignee_id", Scope.TEAM: "ticket__assignee__team_id"},
    measures={"backlog": total("delta")},
    opening_balance=True,
)

# Unsolved tickets now: the backlog of the current period (a reassignment counts at once; earlier
# periods take it at the nightly rebuild).
BACKLOG_NOW = Dataset(
    name="backlog_now",
    rows=lambda ctx: (
        live_tickets()
        .filter(status__in=UNSOLVED)
        .annotate(as_of=Value(ctx.now, output_field=DateTimeField()))
    ),
    date="as_of",
    scopes=TICKET_SCOPES,
    measures={"backlog": count()},
    always=True,
    current_only=True,
    as_of_run=True,
)


# Spend
# ---------------------------------------------------------------------------------------------------------

ACQUISITION = [SpendEntry.Category.MARKETING, SpendEntry.Category.SALES]
SPEND = Dataset(
    name="spend",
    rows=lambda ctx: SpendEntry.objects.all(),
    date="month",
    date_is_day=True,
    granularities=("month", "quarter", "year"),
    scopes={Scope.SOURCE: "channel"},
    measures={
        "acquisition": total("amount", Q(category__in=ACQUISITION), scale=CENTS),
        "acquisition_entries": count(Q(category__in=ACQUISITION)),
        "retention": total("amount", Q(category=SpendEntry.Category.RETENTION), scale=CENTS),
        "retention_entries": count(Q(category=SpendEntry.Category.RETENTION)),
    },
    # A few hundred rows, entered by hand: read in full every time.
    always=True,
)


def rollup_by_owner(
    rows: list[tuple[Any, ...]], team_of: Mapping[int, int | None]
) -> dict[tuple[str, str], list[Any]]:
    """Sum per-user rows ``(user_id, v1, v2, ...)`` into user, team and company scope keys."""
    out: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [0] * (len(rows[0]) - 1) if rows else [])
    for user_id, *values in rows:
        keys = [(Scope.COMPANY, "")]
        if user_id is not None:
            keys.append((Scope.USER, str(user_id)))
            if team_of.get(user_id) is not None:
                keys.append((Scope.TEAM, str(team_of[user_id])))
        for key in keys:
            acc = out[key]
            for i, v in enumerate(values):
                acc[i] += v or 0
    return out
