"""Customers followed through time (KPIS.md §10.9): cohorts of new customers, and each customer's won revenue
window against window.

Two whole-history scans, each read once per run: the status history of every live customer (the cohorts'
logo retention) and every live customer's won revenue by month (NRR, GRR and the revenue waterfall). Both
are per-customer computations over the whole history, so the KPIs built on them are computed by a task of
their own (``Kpi.own_task``), never by the every-few-minutes run.

Months are numbered ``year × 12 + month − 1`` in the reporting time zone. Money is in cents (integers):
every sum is exact, and the waterfall's bars add up to the cent. Revenue is the amount of won deals
(amount > 0) dated by their close; a customer belongs to the scope of its account owner (and the owner's
team), so each customer counts in exactly one person's number and the people's numbers add up to the
company's.
"""

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from psycopg import sql as pg

from metrics.kpis.base import Context
from metrics.kpis.facts import teams_of_users
from metrics.kpis.shared import EXCLUDED_CUSTOMERS_SQL
from metrics.kpis.sql import in_spans
from metrics.models import Scope
from metrics.periods import Period, local_date, local_midnight, shift_date

# A cohort's curve is kept this many months after the month it joined (the heatmap's columns).
COHORT_MONTHS = 60
# NRR and GRR compare the 12 months ending at a period's end with the 12 months before them.
WINDOW_MONTHS = 12
MONTHS_IN = {"month": 1, "quarter": 3, "year": 12}


def month_index(day: date) -> int:
    return day.year * 12 + day.month - 1


def month_first(index: int) -> date:
    return date(index // 12, index % 12 + 1, 1)


def months_before(day: date, months: int) -> date:
    """The same day ``months`` earlier (the month's last day where it is shorter: 31 March → 28 February)."""
    first = shift_date(day.replace(day=1), "month", -months)
    last = (shift_date(first, "month", 1) - timedelta(days=1)).day
    return first.replace(day=min(day.day, last))


def end_of_today(now: datetime) -> date:
    """The first day after today (local): what a running period's figures are read up to."""
    return local_date(now) + timedelta(days=1)


def _month_sql(column: pg.Composable) -> pg.Composable:
    """SQL: the month number of an instant, in the reporting time zone: its place among the months' local
    starts (``%(months)s``, from the month numbered ``%(first_month)s``), a binary search per row, several
    times cheaper than converting every instant to local time."""
    return pg.SQL("(width_bucket({}, %(months)s::timestamptz[]) + %(first_month)s - 1)").format(column)


def _months(first: datetime | None, until: date) -> dict[str, Any]:
    """The parameters of ``_month_sql``: the local starts of every month from ``first``'s to ``until``'s."""
    lo = min(month_index(local_date(first)), month_index(until)) if first is not None else month_index(until)
    return {
        "first_month": lo,
        "months": [local_midnight(month_first(m)) for m in range(lo, month_index(until) + 2)],
    }


def rollup(owner: int | None, team_of: Mapping[str, str]) -> list[tuple[str, str]]:
    """The scopes a customer of ``owner`` counts in: the company, the owner and the owner's current team."""
    keys: list[tuple[str, str]] = [(Scope.COMPANY, "")]
    if owner is not None:
        keys.append((Scope.USER, str(owner)))
        team = team_of.get(str(owner))
        if team is not None:
            keys.append((Scope.TEAM, team))
    return keys


def _teams(ctx: Context) -> Mapping[str, str]:
    return ctx.memo("teams of users", teams_of_users)


# Cohorts
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Cohort:
    """The customers who became customers in one month: how many, and how many of them were active at the
    end of each month since (``active[k]``: the end of month k after joining, 0 being that month itself), for
    the months that have ended."""

    size: int = 0
    active: list[int] = field(default_factory=list)


EARLIEST_STATUS_SQL = """
    SELECT least((SELECT min(at) FROM crm_customerstatuschange),
                 (SELECT min(became_customer_at) FROM crm_customer))
"""
COHORT_SQL = pg.SQL("""
    SELECT c.id, c.owner_id, {became}, {changed}, x.to_status
    FROM crm_customer c
    LEFT JOIN crm_customerstatuschange x ON x.customer_id = c.id AND x.at < %(until)s
    WHERE c.merged_into_id IS NULL AND NOT c.is_internal AND c.became_customer_at IS NOT NULL
      AND c.became_customer_at < %(until)s
    ORDER BY c.id, x.at, x.id
""").format(became=_month_sql(pg.SQL("c.became_customer_at")), changed=_month_sql(pg.SQL("x.at")))


def _status_months(until: datetime) -> Iterator[tuple[int | None, int, list[tuple[int, str]]]]:
    """(owner, cohort month, [(month, status), …] in order) of every live customer who became a customer
    before ``until``, from the status history (KPIS.md §10.13: a merged-away customer is left out)."""
    with connection.cursor() as cursor:
        cursor.execute(EARLIEST_STATUS_SQL)
        months = _months(cursor.fetchone()[0], local_date(until))
        cursor.execute(COHORT_SQL, {**months, "until": until})
        current: int | None = None
        owner: int | None = None
        cohort = 0
        events: list[tuple[int, str]] = []
        for customer_id, owner_id, became, month, status in cursor:
            if customer_id != current:
                if current is not None:
                    yield owner, cohort, events
                current, owner, cohort, events = customer_id, owner_id, became, []
            if status is not None:
                events.append((month, status))
        if current is not None:
            yield owner, cohort, events


def active_months(events: list[tuple[int, str]]) -> Iterator[tuple[int, int | None]]:
    """The months at whose end the customer was active, as half-open ranges [first, after) (after None: still
    active). Active at the end of month m means the latest status change before the month's end made the
    customer active, so a change to active in month s until the next change in month e covers s ≤ m < e."""
    for i, (month, status) in enumerate(events):
        if status == "active":
            yield month, events[i + 1][0] if i + 1 < len(events) else None


def cohorts(ctx: Context) -> dict[tuple[int, str, str], Cohort]:
    """Every cohort per scope: (cohort month, scope, scope id) → its size and active counts (memoised)."""
    return ctx.memo("cohorts", lambda: build_cohorts(ctx.now, _teams(ctx)))


def build_cohorts(now: datetime, team_of: Mapping[str, str]) -> dict[tuple[int, str, str], Cohort]:
    """Count each cohort's members active at the end of each month since it joined, per scope.

    Per customer and active stretch, the months it covers are added as +1 at the first and −1 after the
    last (a difference array per cohort and owner), so the work is per status change, not per month.
    """
    last_complete = month_index(local_date(now)) - 1
    diffs: dict[tuple[int, int | None], list[int]] = {}
    sizes: dict[tuple[int, int | None], int] = defaultdict(int)
    for owner, cohort, events in _status_months(local_midnight(end_of_today(now))):
        key = (cohort, owner)
        sizes[key] += 1
        width = min(last_complete - cohort, COHORT_MONTHS) + 1
        if width <= 0:
            continue
        diff = diffs.get(key)
        if diff is None:
            diff = diffs[key] = [0] * (width + 1)
        for first, after in active_months(events):
            lo = max(first - cohort, 0)
            hi = width if after is None else min(after - cohort, width)
            if lo < hi:
                diff[lo] += 1
                diff[hi] -= 1
    out: dict[tuple[int, str, str], Cohort] = {}
    for (cohort, owner), size in sizes.items():
        diff = diffs.get((cohort, owner), [0])
        running, active = 0, []
        for step in diff[:-1]:
            running += step
            active.append(running)
        for scope, scope_id in rollup(owner, team_of):
            found = out.get((cohort, scope, scope_id))
            if found is None:
                found = out[(cohort, scope, scope_id)] = Cohort(active=[0] * len(active))
            found.size += size
            found.active = [a + b for a, b in zip(found.active, active, strict=True)]
    return out


# Revenue per customer
# ---------------------------------------------------------------------------------------------------------


class Buyer:
    """One live customer's won revenue in cents: per month, and per day in the months whose days a running
    period needs (``days``); ``close`` fixes its first and last month and running totals once all are in."""

    __slots__ = ("_totals", "days", "first", "last", "months", "owner")

    def __init__(self, owner: int | None) -> None:
        self.owner = owner
        self.months: dict[int, int] = {}
        self.days: dict[date, int] = {}
        self.first = self.last = 0
        self._totals: list[int] = [0]

    def close(self) -> "Buyer":
        self.first, self.last = min(self.months), max(self.months)
        totals = [0] * (self.last - self.first + 2)  # totals[k]: revenue of the months before first + k
        for month, cents in self.months.items():
            totals[month - self.first + 1] += cents
        for k in range(1, len(totals)):
            totals[k] += totals[k - 1]
        self._totals = totals
        return self

    def before(self, month: int) -> int:
        """Cents won in the months before ``month``."""
        k = month - self.first
        if k <= 0:
            return 0
        return self._totals[k] if k < len(self._totals) else self._totals[-1]

    def in_months(self, lo: int, hi: int) -> int:
        """Cents won in the months [lo, hi)."""
        return self.before(hi) - self.before(lo)

    def between(self, lo: date, hi: date) -> int:
        """Cents won in the local days [lo, hi); a day inside a month must be one of the detailed months."""
        lo_m, hi_m = month_index(lo), month_index(hi)
        if lo_m == hi_m:
            return sum(c for d, c in self.days.items() if lo <= d < hi)
        total = self.in_months(lo_m + (lo.day != 1), hi_m)
        if lo.day != 1:
            after = month_first(lo_m + 1)
            total += sum(c for d, c in self.days.items() if lo <= d < after)
        if hi.day != 1:
            start = month_first(hi_m)
            total += sum(c for d, c in self.days.items() if start <= d < hi)
        return total


REVENUE_SQL = pg.SQL("""
    SELECT d.customer_id, c.owner_id, {month}, sum(round(d.amount * 100))::bigint
    FROM crm_deal d JOIN crm_customer c ON c.id = d.customer_id
    WHERE d.status = 'won' AND d.amount > 0 AND d.closed_at < %(until)s
      AND c.merged_into_id IS NULL AND NOT c.is_internal
    GROUP BY 1, 2, 3
""").format(month=_month_sql(pg.SQL("d.closed_at")))


def _days_sql(n: int) -> pg.Composable:
    return pg.SQL("""
        SELECT d.customer_id, (d.closed_at AT TIME ZONE %s)::date, sum(round(d.amount * 100))::bigint
        FROM crm_deal d
        WHERE d.status = 'won' AND d.amount > 0 AND ({spans}) AND d.customer_id NOT IN ({excluded})
        GROUP BY 1, 2
    """).format(spans=in_spans(pg.Identifier("d", "closed_at"), n), excluded=EXCLUDED_CUSTOMERS_SQL)


def load_buyers(until: date, detail_months: Iterable[int]) -> dict[int, Buyer]:
    """Every live customer with won revenue before the local day ``until``, by id: per month, and per day in
    ``detail_months``. Two scans of the won deals by close time (the ``deal_won_closed`` index holds the
    customer and the amount): the whole history grouped by customer and month, then the detailed months."""
    buyers: dict[int, Buyer] = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(closed_at) FROM crm_deal WHERE status = 'won'")
        months = _months(cursor.fetchone()[0], until)
        # The grouped rows (a few per customer) stay in memory rather than spill to disk.
        cursor.execute("SET LOCAL work_mem = '64MB'")
        cursor.execute(REVENUE_SQL, {**months, "until": local_midnight(until)})
        for customer_id, owner_id, month, cents in cursor:
            buyer = buyers.get(customer_id)
            if buyer is None:
                buyer = buyers[customer_id] = Buyer(owner_id)
            buyer.months[month] = cents
        for buyer in buyers.values():
            buyer.close()
        spans = [(month_first(m), min(month_first(m + 1), until)) for m in sorted(set(detail_months))]
        spans = [(lo, hi) for lo, hi in spans if lo < hi]
        if spans:
            bounds = [local_midnight(day) for span in spans for day in span]
            cursor.execute(_days_sql(len(spans)), [settings.TIME_ZONE, *bounds])
            for customer_id, day, cents in cursor:
                if customer_id in buyers:
                    buyers[customer_id].days[day] = cents
    return buyers


# NRR and GRR: the 12 months ending at a period's end against the 12 months before
# ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Retained:
    """Revenue retention of the customers who had revenue in the earlier window (the base), in cents:
    what they brought then (``base``) and how it moved in the later window. Now = base + expansion −
    contraction − churned; kept (GRR's numerator, each customer capped at what they brought before) = base −
    contraction − churned."""

    base: int = 0
    expansion: int = 0
    contraction: int = 0
    churned: int = 0
    customers: int = 0
    expanded: int = 0
    contracted: int = 0
    lost: int = 0

    @property
    def now(self) -> int:
        return self.base + self.expansion - self.contraction - self.churned

    @property
    def kept(self) -> int:
        return self.base - self.contraction - self.churned

    def add(self, before: int, now: int) -> None:
        """One base customer, who brought ``before`` in the earlier window and ``now`` in the later one."""
        self.base += before
        self.customers += 1
        if now > before:
            self.expansion += now - before
            self.expanded += 1
        elif now == 0:
            self.churned += before
            self.lost += 1
        elif now < before:
            self.contraction += before - now
            self.contracted += 1

    def merge(self, other: "Retained") -> None:
        for name in RETAINED_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


RETAINED_FIELDS = tuple(f.name for f in fields(Retained))


def retention_by_month_end(
    buyers: Mapping[int, Buyer], ends: Iterable[int]
) -> dict[int, dict[Any, Retained]]:
    """Per window end (the month number of the period's end: windows [e − 24, e − 12) and [e − 12, e)) and
    owner, the base customers' revenue and its movement.

    Per customer only the ends whose earlier window holds revenue are visited, each read in constant time
    from the customer's running totals."""
    ends = sorted(set(ends))
    out: dict[int, dict[Any, Retained]] = {e: {} for e in ends}
    for buyer in buyers.values():
        i0 = bisect_left(ends, buyer.first + WINDOW_MONTHS + 1)
        i1 = bisect_right(ends, buyer.last + 2 * WINDOW_MONTHS)
        for e in ends[i0:i1]:
            earlier = buyer.in_months(e - 2 * WINDOW_MONTHS, e - WINDOW_MONTHS)
            if earlier <= 0:
                continue
            by_owner = out[e]
            found = by_owner.get(buyer.owner)
            if found is None:
                found = by_owner[buyer.owner] = Retained()
            found.add(earlier, buyer.in_months(e - WINDOW_MONTHS, e))
    return out


def retention_between(
    buyers: Mapping[int, Buyer], earlier: tuple[date, date], later: tuple[date, date]
) -> dict[Any, Retained]:
    """Per owner, the base customers of the ``earlier`` window and their movement in the ``later`` one (local
    days, e.g. the 12 months to today)."""
    out: dict[Any, Retained] = {}
    first = month_index(earlier[0])
    for buyer in buyers.values():
        if buyer.last < first:
            continue
        before = buyer.between(*earlier)
        if before <= 0:
            continue
        found = out.get(buyer.owner)
        if found is None:
            found = out[buyer.owner] = Retained()
        found.add(before, buyer.between(*later))
    return out


# The revenue waterfall: a period against the period before
# ---------------------------------------------------------------------------------------------------------

BUCKETS = ("new", "expansion", "contraction", "churned", "reactivated")


@dataclass(slots=True)
class Movement:
    """A span's revenue against the span before, in cents, split by what each customer did: previous + new
    + expansion − contraction − churned + reactivated = current, exactly. A customer is *new* whose first
    revenue ever is in the current span, *reactivated* who has revenue now, none in the span before and
    some earlier; *churned* had revenue in the span before and none now."""

    previous: int = 0
    current: int = 0
    new: int = 0
    expansion: int = 0
    contraction: int = 0
    churned: int = 0
    reactivated: int = 0
    customers: int = 0
    new_customers: int = 0
    expanded: int = 0
    contracted: int = 0
    lost: int = 0
    reactivated_customers: int = 0

    def add(self, before: int, now: int, *, first_now: bool) -> None:
        """One customer with ``before`` in the span before and ``now`` in the current span (``first_now``:
        its first revenue ever is in the current span)."""
        if not before and not now:
            return
        self.previous += before
        self.current += now
        self.customers += 1
        if before and now:
            if now > before:
                self.expansion += now - before
                self.expanded += 1
            elif now < before:
                self.contraction += before - now
                self.contracted += 1
        elif before:
            self.churned += before
            self.lost += 1
        elif first_now:
            self.new += now
            self.new_customers += 1
        else:
            self.reactivated += now
            self.reactivated_customers += 1

    def merge(self, other: "Movement") -> None:
        for name in MOVEMENT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


MOVEMENT_FIELDS = tuple(f.name for f in fields(Movement))


def movements_by_period(
    buyers: Mapping[int, Buyer], granularity: str, starts: Iterable[int]
) -> dict[int, dict[Any, Movement]]:
    """Per period of ``granularity`` (by the month number it starts in, among ``starts``) and owner, its
    revenue against the period before, split into the waterfall's buckets."""
    length = MONTHS_IN[granularity]
    out: dict[int, dict[Any, Movement]] = {start: {} for start in starts}
    for buyer in buyers.values():
        by_period: dict[int, int] = defaultdict(int)
        for month, cents in buyer.months.items():
            by_period[month - month % length] += cents
        for start in {*by_period, *(p + length for p in by_period)}:
            by_owner = out.get(start)
            if by_owner is None:
                continue
            found = by_owner.get(buyer.owner)
            if found is None:
                found = by_owner[buyer.owner] = Movement()
            found.add(
                by_period.get(start - length, 0), by_period.get(start, 0), first_now=buyer.first >= start
            )
    return out


def movements_between(
    buyers: Mapping[int, Buyer], before: tuple[date, date], now: tuple[date, date]
) -> dict[Any, Movement]:
    """Per owner, the waterfall of the span ``now`` against the span ``before`` (local days: a running period
    to date against the same elapsed days of the period before, KPIS.md §10.1). ``now`` starts on the first
    of a month."""
    out: dict[Any, Movement] = {}
    first_month, start = month_index(before[0]), month_index(now[0])
    for buyer in buyers.values():
        if buyer.last < first_month:
            continue
        found = out.get(buyer.owner)
        if found is None:
            found = out[buyer.owner] = Movement()
        found.add(buyer.between(*before), buyer.between(*now), first_now=buyer.first >= start)
    return {owner: m for owner, m in out.items() if m.customers}


# What a run reads
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningSpans:
    """What a running period's figures compare (local days, half-open), read up to the end of today: the
    period to date against the same elapsed days of the period before (the waterfall), and the 12 months to
    today against the 12 months before them (NRR, GRR)."""

    current: tuple[date, date]
    compared: tuple[date, date]
    later: tuple[date, date]
    earlier: tuple[date, date]


def running_spans(period: Period, now: datetime) -> RunningSpans:
    until = min(end_of_today(now), period.next().first_day)
    before = period.previous()
    elapsed = until - period.first_day
    boundary = months_before(until, WINDOW_MONTHS)
    return RunningSpans(
        current=(period.first_day, until),
        compared=(before.first_day, min(before.first_day + elapsed, period.first_day)),
        later=(boundary, until),
        earlier=(months_before(until, 2 * WINDOW_MONTHS), boundary),
    )


def complete_spans(period: Period) -> RunningSpans:
    """The same spans for a period that has ended: the whole period against the whole period before, the 12
    months ending at its end against the 12 months before them."""
    end = period.next().first_day
    boundary = shift_date(end, "month", -WINDOW_MONTHS)
    return RunningSpans(
        current=(period.first_day, end),
        compared=(period.previous().first_day, period.first_day),
        later=(boundary, end),
        earlier=(shift_date(end, "month", -2 * WINDOW_MONTHS), boundary),
    )


def spans_of(period: Period, now: datetime) -> RunningSpans | None:
    """The spans ``period``'s figures compare as of ``now``; None for a period that has not begun."""
    if period.start > now:
        return None
    return complete_spans(period) if period.end <= now else running_spans(period, now)


def buyers(ctx: Context) -> dict[int, Buyer]:
    """Every buyer, with the days of the months the run's running periods need (memoised)."""

    def load() -> dict[int, Buyer]:
        detail: set[int] = set()
        for g in ctx.requested(MONTHS_IN):
            for period in ctx.periods[g]:
                if period.start <= ctx.now < period.end:
                    spans = running_spans(period, ctx.now)
                    for lo, hi in (spans.current, spans.compared, spans.later, spans.earlier):
                        detail |= {month_index(day) for day in (lo, hi) if day.day != 1}
        return load_buyers(end_of_today(ctx.now), detail)

    return ctx.memo("buyers", load)
