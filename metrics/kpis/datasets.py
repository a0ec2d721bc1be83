"""Base datasets shared by several KPI families: each is one grouped scan per recompute.

Exclusions (KPIS.md G9) live here, once: merged duplicates and internal/test customers never count,
spam tickets never count, lost deals marked as duplicate or invalid leave the win rate. Team and user
scopes use the record's *current* owner (or assignee) and that user's current team.
"""

import re
from collections import defaultdict
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import (
    BigIntegerField,
    Case,
    DateField,
    DateTimeField,
    Exists,
    F,
    Func,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Value,
    When,
    Window,
)
from django.db.models.functions import Cast, Coalesce, Round, RowNumber, Trunc, TruncDate

from crm.models import (
    Customer,
    Deal,
    DealStageChange,
    PipelineStage,
    Source,
    SpendEntry,
    Ticket,
    TicketStatusChange,
)
from metrics.kpis.base import Context
from metrics.kpis.builders import (
    Dataset,
    Grouped,
    count,
    count_distinct,
    days_between,
    hours_between,
    mean,
    percentile,
    total,
)
from metrics.models import Scope
from metrics.periods import Period, local_date, period_index, reporting_tz

WON, LOST, OPEN = Deal.Status.WON, Deal.Status.LOST, Deal.Status.OPEN
LEAD_CONVERSION_DAYS = 90
RENEWAL_GRACE_DAYS = 30
# Upsells co-terminate with the subscription they extend: only new and renewal terms come up for renewal.
SUBSCRIPTION_KINDS = [Deal.Kind.NEW, Deal.Kind.RENEWAL]
# Lost deals closed for data-hygiene reasons do not count as lost sales (KPIS.md §4, win rate).
INVALID_LOST = Q(status=LOST, lost_reason__iregex=r"^\s*(duplicate|invalid)")
# Money has 2 decimals; × a 0–100 probability ÷ 100 it has 4.
CENTS, WEIGHTED_CENTS = 100, 10_000
TZ_NAME = re.compile(r"^[A-Za-z0-9_+\-/]+$")
YEAR_STEPS = {"week": 52, "month": 12, "quarter": 4, "year": 1}


def live(prefix: str = "") -> Q:
    """Not a merged duplicate, not an internal or test customer."""
    return Q(**{f"{prefix}merged_into__isnull": True, f"{prefix}is_internal": False})


def year_before(period: Period) -> Period:
    """The same period one year earlier (52 weeks earlier for a week)."""
    return period.previous(YEAR_STEPS[period.granularity])


DEAL_SCOPES = {Scope.USER: "owner_id", Scope.TEAM: "owner__team_id"}
DEAL_ACQUISITION_SCOPES = {**DEAL_SCOPES, Scope.SOURCE: "source"}
CUSTOMER_SCOPES = {Scope.USER: "owner_id", Scope.TEAM: "owner__team_id", Scope.SOURCE: "source"}
TICKET_SCOPES = {Scope.USER: "assignee_id", Scope.TEAM: "assignee__team_id"}
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
    },
    # Growth compares with the previous period and the same period a year earlier.
    lookback=lambda p: year_before(p).previous(),
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
)


def _open_weight(stage: str) -> Case:
    """Probability (0–100) that an open stage gives the deal: its override, else the stage's default."""
    return Case(
        When(
            **{f"{stage}__kind": PipelineStage.Kind.OPEN},
            then=Coalesce("deal__probability", f"{stage}__probability"),
        ),
        default=Value(0),
        output_field=IntegerField(),
    )


def _cents(path: str) -> Cast:
    return Cast(Round(Coalesce(path, Value(Decimal(0))) * Value(Decimal(100))), BigIntegerField())


def _is_open(stage: str) -> Case:
    return Case(When(**{f"{stage}__kind": PipelineStage.Kind.OPEN}, then=Value(1)), default=Value(0))


# Each stage change moves the deal's amount out of the old stage and into the new one; summed up to an
# instant, the deltas give the open pipeline as it stood then (KPIS.md G2: stocks from history).
PIPELINE_DELTAS = Dataset(
    name="pipeline_deltas",
    rows=lambda ctx: DealStageChange.objects.filter(live("deal__customer__")).annotate(
        open_delta=_is_open("to_stage") - _is_open("from_stage"),
        weight_delta=_open_weight("to_stage") - _open_weight("from_stage"),
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


def period_start_of(date_path: str, granularity: str) -> Func:
    """The instant (local midnight) at which the period of ``granularity`` containing a date starts."""
    tz = settings.TIME_ZONE
    if not TZ_NAME.match(tz):
        raise ValueError(f"unexpected time zone name {tz!r}")
    return Func(
        Trunc(date_path, granularity, output_field=DateField()),
        template=f"((%(expressions)s)::timestamp AT TIME ZONE '{tz}')",
        output_field=DateTimeField(),
    )


def _before_close_period(granularity: str) -> Q:
    return Q(at__lt=period_start_of("deal__expected_close_date", granularity))


# What the weighted forecast of a period said at its start: the stage-change deltas, dated before that
# start, of the deals expected to close in the period (their weighted value just before it began).
FORECAST_DELTAS = Dataset(
    name="forecast_deltas",
    rows=lambda ctx: DealStageChange.objects.filter(
        live("deal__customer__"), deal__expected_close_date__isnull=False
    ).annotate(
        open_delta=_is_open("to_stage") - _is_open("from_stage"),
        weight_delta=_open_weight("to_stage") - _open_weight("from_stage"),
        cents=_cents("deal__amount"),
    ),
    date="deal__expected_close_date",
    date_is_day=True,
    scopes={Scope.USER: "deal__owner_id", Scope.TEAM: "deal__owner__team_id"},
    measures={
        "forecast": total(
            F("weight_delta") * F("cents"),
            scale=WEIGHTED_CENTS,
            prescaled=True,
            where_by_granularity=_before_close_period,
        ),
        "deals": total("open_delta", where_by_granularity=_before_close_period),
    },
)

OPEN_BY_CLOSE_DATE = Dataset(
    name="open_by_close_date",
    rows=lambda ctx: Deal.objects.filter(
        live("customer__"), status=OPEN, expected_close_date__isnull=False
    ).annotate(
        weighted=Coalesce("amount", Value(Decimal(0)))
        * Coalesce("probability", "stage__probability")
        / Value(Decimal(100))
    ),
    date="expected_close_date",
    date_is_day=True,
    scopes=DEAL_SCOPES,
    measures={
        "open": count(),
        "weighted": total("weighted", scale=WEIGHTED_CENTS),
        "amount": total("amount", scale=CENTS),
    },
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
)


def _repeat_rows(ctx: Context) -> QuerySet:
    return Deal.objects.filter(live("customer__"), status=WON).annotate(
        nth=Window(
            RowNumber(), partition_by=[F("customer_id")], order_by=[F("closed_at").asc(), F("id").asc()]
        )
    )


# A buyer of the period is a repeat buyer when the won deal of the period is at least their second.
REPEAT_BUYERS = Dataset(
    name="repeat_buyers",
    rows=_repeat_rows,
    date="closed_at",
    scopes={Scope.USER: "customer__owner_id", Scope.TEAM: "customer__owner__team_id"},
    measures={
        "buyers": count_distinct("customer_id"),
        "repeat": count_distinct("customer_id", Q(nth__gte=2)),
    },
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


def customer_activity(ctx: Context) -> Grouped:
    """Active-customer counts per period and owner scope, from the status history (KPIS.md §3).

    Per period P = [a, b): ``start`` = customers active just before a (S), ``end`` = active just before
    b (E), ``during`` = active at some time in P, ``churned`` = members of S who churned in P (counted
    once; a customer who joined and churned inside P is not in S), ``retained`` = active at a and at b.
    One query reads the active intervals; the counting is linear in the number of intervals.
    """
    return ctx.memo("customer_activity", lambda: _customer_activity(ctx))


def _active_intervals() -> list[tuple[int, int | None, int | None, Any, Any]]:
    sql = """
        SELECT x.customer_id, c.owner_id, u.team_id, x.at, x.next_at
        FROM (
            SELECT customer_id, to_status, at,
                   LEAD(at) OVER (PARTITION BY customer_id ORDER BY at, id) AS next_at
            FROM crm_customerstatuschange
        ) AS x
        JOIN crm_customer c ON c.id = x.customer_id
        LEFT JOIN accounts_user u ON u.id = c.owner_id
        WHERE x.to_status = %s AND c.merged_into_id IS NULL AND NOT c.is_internal
        ORDER BY x.customer_id, x.at
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [Customer.Status.ACTIVE])
        return cursor.fetchall()


class _RangeCounts:
    """Counts over a run of consecutive period indexes, added range by range (difference arrays)."""

    NAMES = ("start", "end", "during", "churned", "retained")

    def __init__(self, base: int, top: int) -> None:
        self.base, self.top = base, top
        self.diffs: dict[tuple[str, str], dict[str, list[int]]] = {}

    def scope(self, scope: str, scope_id: str) -> dict[str, list[int]]:
        key = (scope, scope_id)
        if key not in self.diffs:
            self.diffs[key] = {name: [0] * (self.top - self.base + 2) for name in self.NAMES}
        return self.diffs[key]

    def add(self, targets: list[dict[str, list[int]]], name: str, lo: int, hi: int) -> None:
        """Count one for every period index in [lo, hi] (clipped to the requested ones)."""
        lo, hi = max(lo, self.base), min(hi, self.top)
        if lo > hi:
            return
        for arrays in targets:
            arrays[name][lo - self.base] += 1
            arrays[name][hi - self.base + 1] -= 1

    def totals(self) -> Iterator[tuple[tuple[str, str], dict[int, dict[str, int]]]]:
        for key, arrays in self.diffs.items():
            running = dict.fromkeys(self.NAMES, 0)
            by_index = {}
            for offset in range(self.top - self.base + 1):
                for name in self.NAMES:
                    running[name] += arrays[name][offset]
                by_index[self.base + offset] = dict(running)
            yield key, by_index


def _customer_activity(ctx: Context) -> Grouped:
    intervals = [
        (c, o, t, local_date(s), local_date(e) if e else None) for c, o, t, s, e in _active_intervals()
    ]
    out: Grouped = {}
    for g in ctx.granularities:
        periods = ctx.periods[g]
        counts = _RangeCounts(periods[0].index, periods[-1].index)
        never = counts.top + 1
        chain: list[Any] = []  # [customer, scope arrays, first start, last end] of touching intervals
        for customer_id, owner_id, team_id, s_day, e_day in intervals:
            targets = [counts.scope(Scope.COMPANY, "")]
            if team_id is not None:
                targets.append(counts.scope(Scope.TEAM, str(team_id)))
            if owner_id is not None:
                targets.append(counts.scope(Scope.USER, str(owner_id)))
            s = period_index(s_day, g)
            e = period_index(e_day, g) if e_day else never
            counts.add(targets, "start", s + 1, e)  # active just before a period's start
            counts.add(targets, "end", s, e - 1)  # active just before its end
            if e_day and s < e:
                counts.add(targets, "churned", e, e)  # churned in a period it started active
            # Intervals of one customer that touch within a period form one chain: the customer was
            # active throughout, apart from a gap inside that period.
            if chain and chain[0] == customer_id and chain[3] == s:
                chain[3] = e
                continue
            if chain:
                _close_chain(counts, chain)
            chain = [customer_id, targets, s, e]
        if chain:
            _close_chain(counts, chain)
        for (scope, scope_id), by_index in counts.totals():
            for period in periods:
                values = by_index[period.index]
                if scope == Scope.COMPANY or any(values.values()):
                    out[(g, period.first_day, scope, scope_id)] = values
    return out


def _close_chain(counts: _RangeCounts, chain: list[Any]) -> None:
    _customer, targets, s, e = chain
    counts.add(targets, "during", s, e)
    counts.add(targets, "retained", s + 1, e - 1)


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

TICKETS_SOLVED = Dataset(
    name="tickets_solved",
    rows=lambda ctx: (
        live_tickets()
        .filter(status__in=[Ticket.Status.SOLVED, Ticket.Status.CLOSED], solved_at__isnull=False)
        .annotate(
            full_hours=hours_between("created_at", "solved_at"),
            first_hours=hours_between("created_at", "first_solved_at"),
        )
    ),
    date="solved_at",
    scopes=TICKET_SCOPES,
    measures={
        "solved": count(),
        "res_median": percentile("full_hours", 0.5),
        "res_p90": percentile("full_hours", 0.9),
        "first_res_median": percentile("first_hours", 0.5),
        "reopened": count(Q(reopen_count__gt=0)),
    },
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


def _sla_rows(ctx: Context, done: str, due: str) -> QuerySet:
    """SLA targets that were met (at completion) or breached (at the due time) before now."""
    return (
        live_tickets()
        .filter(**{f"{due}__isnull": False})
        .annotate(
            sla_at=Case(When(**{f"{done}__lte": F(due)}, then=F(done)), default=F(due)),
            sla_met=Case(When(**{f"{done}__lte": F(due)}, then=Value(True)), default=Value(False)),
        )
        .filter(sla_at__lte=ctx.now)
    )


SLA_REPLY = Dataset(
    name="sla_reply",
    rows=lambda ctx: _sla_rows(ctx, "first_response_at", "first_response_due_at"),
    date="sla_at",
    scopes=TICKET_SCOPES,
    measures={"targets": count(), "met": count(Q(sla_met=True))},
)

SLA_RESOLUTION = Dataset(
    name="sla_resolution",
    rows=lambda ctx: _sla_rows(ctx, "first_solved_at", "resolution_due_at"),
    date="sla_at",
    scopes=TICKET_SCOPES,
    measures={"targets": count(), "met": count(Q(sla_met=True))},
)

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
)


def rollup_by_owner(
    rows: list[tuple[Any, ...]], team_of: dict[int, int | None]
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
