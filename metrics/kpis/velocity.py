"""Pipeline velocity and time in stage (KPIS.md §10.7); rotting deals are with the other sales KPIs.

Velocity is made of four sales KPIs of the same period and scope — open deals (the pipeline's n), win
rate, average deal size, sales cycle — read from their own rows of the same run, so the product and its
factors always agree. Time in stage reads the stage history: a *stay* runs from a deal's move into an open
stage to its next move; median and p90 per stage and scope come from one grouped ``percentile_cont`` query
over every stay of the periods (and one more for the running periods, with the deals still in a stage).
That scan of the whole stage history is too heavy for the snapshot runs: a task of its own computes it
(``Kpi.own_task``, ``metrics.services.velocity``).
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.utils.translation import gettext_lazy as _
from psycopg import sql as pg

from accounts.models import User
from crm.models import Deal, PipelineStage
from crm.selectors import deal_list
from metrics.kpis.base import (
    MIN_CLOSED_DEALS,
    MIN_EVENTS,
    Better,
    Context,
    Family,
    Kpi,
    Row,
    Significance,
    Unit,
)
from metrics.kpis.builders import HUNDRED, Offset, dec, opt_dec
from metrics.kpis.details import TimeInStageDetail, VelocityDetail
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, Drill, record_count
from metrics.kpis.sales import AVG_DEAL_SIZE, PIPELINE_VALUE, SALES_CYCLE_MEDIAN, WIN_RATE
from metrics.kpis.shared import (
    CLOSED_DEALS,
    EXCLUDED_CUSTOMERS_SQL,
    OPEN,
    OPEN_PIPELINE_NOW,
    PIPELINE_DELTAS,
    WON_DEAL_STATS,
)
from metrics.kpis.sql import records_query, trunc_day
from metrics.models import Scope
from metrics.periods import Period, local_midnight

# Pipeline velocity
# ---------------------------------------------------------------------------------------------------------

# The KPIs velocity is the product of, in the order the page shows them.
FACTORS = (PIPELINE_VALUE, WIN_RATE, AVG_DEAL_SIZE, SALES_CYCLE_MEDIAN)


def velocity_of(
    open_deals: int, win_rate: Decimal | None, avg_deal_size: Decimal | None, cycle_days: Decimal | None
) -> tuple[Decimal | None, Decimal | None]:
    """(revenue per day, the revenue the open deals bring at that win rate and size): open deals × win rate
    (%) ÷ 100 × average deal size ÷ sales cycle (days). No velocity when a factor is missing or the cycle
    is 0 days (KPIS.md G3); the expected revenue needs no cycle."""
    if win_rate is None or avg_deal_size is None:
        return None, None
    expected = Decimal(open_deals) * win_rate / HUNDRED * avg_deal_size
    if cycle_days is None or cycle_days <= 0:
        return None, expected
    return expected / cycle_days, expected


def _factor_rows(ctx: Context, kpi: Kpi, factor: Kpi) -> dict[tuple, Row]:
    """A factor KPI's rows of this run for velocity's scopes, by (granularity, first day, scope, id)."""
    narrowed = replace(factor, scopes=tuple(s for s in factor.scopes if s in kpi.scopes))
    return {row[:4]: row for row in factor.compute(ctx, narrowed)}


def _count(value: Decimal | int | None) -> int:
    return int(value or 0)


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Velocity:
    """KPI = open deals × win rate × average deal size ÷ sales cycle, each from its own KPI's rows.

    A running week or month is compared with the same elapsed days of the period before (KPIS.md
    §10.1): the same product of the factors there (each as its own KPI compares itself)."""

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        # Whether a period is answered depends on what the KPI reads (the hourly run of quarters and years
        # answers the KPIs that read a median): everything is noted before any factor's rows are made.
        for ds in DATASETS:
            ctx.read(ds.name)
        pipeline, win, size, cycle = (_factor_rows(ctx, kpi, factor) for factor in FACTORS)
        for key in {*pipeline, *win, *size, *cycle}:
            p, w, s, c = pipeline.get(key), win.get(key), size.get(key), cycle.get(key)
            # No pipeline row is no open deal (a stock's row is left out while its level is 0).
            open_deals = _count(p.sample_size) if p else 0
            win_rate, avg, days = (w.value if w else None), (s.value if s else None), (c.value if c else None)
            value, expected = velocity_of(open_deals, win_rate, avg, days)
            closed = _count(w.denominator) if w else 0
            details = VelocityDetail(
                open_deals=open_deals,
                win_rate=_float(win_rate),
                won=_count(w.numerator) if w else 0,
                closed=closed,
                avg_deal_size=_float(avg),
                won_priced=_count(s.denominator) if s else 0,
                won_priced_amount=float(dec(s.numerator)) if s else 0.0,
                cycle_days=_float(days),
                cycle_n=_count(c.sample_size) if c else 0,
            )
            g, first_day, scope, scope_id = key
            yield Row(g, first_day, scope, scope_id, value, expected, days, closed, details)

    @property
    def day_datasets(self) -> tuple:
        return (PIPELINE_DELTAS, CLOSED_DEALS)

    def at_offset(self, ctx: Context, kpi: Kpi, at: Offset) -> tuple | None:
        """(velocity, expected revenue, cycle, closed deals) over the first days of the period before; None
        when the run did not compute that period."""
        pipeline = PIPELINE_VALUE.compute.at_offset(ctx, PIPELINE_VALUE, at)  # type: ignore[attr-defined]
        win = WIN_RATE.compute.at_offset(ctx, WIN_RATE, at)  # type: ignore[attr-defined]
        size = AVG_DEAL_SIZE.compute.at_offset(ctx, AVG_DEAL_SIZE, at)  # type: ignore[attr-defined]
        if pipeline is None or win is None or size is None:
            return None
        g, span = at.before.granularity, (at.before.first_day, at.until)
        # The same grouped query (and memo) as the sales cycle's own like-for-like value.
        stats = ctx.memo(
            ("to date", WON_DEAL_STATS.name, g, span),
            lambda: records_query(ctx, WON_DEAL_STATS, [g], [span]).run(),
        ).get(at.key, {})
        days = opt_dec(stats.get("cycle_median")) if _count(stats.get("won")) else None
        value, expected = velocity_of(_count(pipeline[3]), win[0], size[0], days)
        return value, expected, days, _count(win[3])


def _relabel(part: Any, gives: str, label: Any, **changes: Any) -> Any:
    return replace(part, gives=gives, label=label, **changes)


VELOCITY = Kpi(
    code="pipeline_velocity",
    family=Family.SALES,
    label=_("Pipeline velocity"),
    unit=Unit.CURRENCY_PER_DAY,
    better=Better.UP,
    formula=_(
        "revenue per day the pipeline brings at the current pace: open deals at the end of the period × win "
        "rate × average deal size ÷ sales cycle (median days); each factor is its own KPI of the same period "
        "and scope; no value when a factor is missing or the cycle is 0 days"
    ),
    compute=Velocity(),
    drill=Drill(
        {
            "open": _relabel(
                PIPELINE_VALUE.drilldown.parts[NUMERATOR],  # type: ignore[union-attr]
                "open_deals",
                _("Open deals"),
                total=record_count,
                also=(),
            ),
            "won": _relabel(WIN_RATE.drilldown.parts[NUMERATOR], "won", _("Won (win rate)")),  # type: ignore[union-attr]
            "closed": _relabel(
                WIN_RATE.drilldown.parts[DENOMINATOR],  # type: ignore[union-attr]
                "closed",
                _("Closed (win rate)"),
            ),
            "priced": _relabel(
                AVG_DEAL_SIZE.drilldown.parts[NUMERATOR],  # type: ignore[union-attr]
                "won_priced_amount",
                _("Won with an amount (deal size)"),
                also=(("won_priced", record_count),),
            ),
            "cycle": _relabel(
                SALES_CYCLE_MEDIAN.drilldown.parts[NUMERATOR],  # type: ignore[union-attr]
                "cycle_days",
                _("Won (sales cycle)"),
                also=(("cycle_n", record_count),),
            ),
        }
    ),
    detail=VelocityDetail,
    # Significance: none (a product of four estimates); muted below the win rate's minimum of closed deals.
    min_sample=MIN_CLOSED_DEALS,
)


# Time in stage
# ---------------------------------------------------------------------------------------------------------

# Fractions of each percentile_cont: the median and the 90th percentile, from one sort.
FRACTIONS = pg.SQL("ARRAY[0.5, 0.9]::float8[]")
# Up to this many days of stage changes, the history read is that of the deals moved in them; a scan of
# years reads all of it (finding those deals first would cost more than it saves).
FILTER_DAYS = 400


def open_stages() -> list[PipelineStage]:
    """Every open stage, the default pipeline's first, in pipeline order."""
    return list(
        PipelineStage.objects.filter(kind=PipelineStage.Kind.OPEN)
        .select_related("pipeline")
        .order_by("-pipeline__is_default", "pipeline__name", "order")
    )


# A stay ends with a move out of an open stage (its ``from_stage``, as the services record every move) and
# began at the deal's move before it, in (at, id) order as the window's lag reads it.
_ENDED_STAYS = pg.SQL("""
    SELECT x.deal_id, x.stage_id, x.entered, x.at AS left_at,
           date_part('epoch', x.at - x.entered) / 86400 AS days, false AS still_in
    FROM (
        SELECT c.deal_id, c.at, c.from_stage_id AS stage_id, lag(c.at) OVER w AS entered
        FROM crm_dealstagechange c {in_range}
        WINDOW w AS (PARTITION BY c.deal_id ORDER BY c.at, c.id)
    ) AS x
    WHERE x.stage_id = ANY(%(stages)s) AND x.entered IS NOT NULL AND x.at >= %(lo)s AND x.at < %(hi)s
""")
# A deal open in an open stage now: a stay still running since its latest move, at its time so far.
_RUNNING_STAYS = pg.SQL("""
    SELECT d.id, d.stage_id, last.at, %(now)s::timestamptz,
           GREATEST(date_part('epoch', %(now)s::timestamptz - last.at), 0) / 86400, true
    FROM crm_deal d
    CROSS JOIN LATERAL (
        SELECT l.at FROM crm_dealstagechange l WHERE l.deal_id = d.id ORDER BY l.at DESC, l.id DESC LIMIT 1
    ) AS last
    WHERE d.status = %(open)s AND d.stage_id = ANY(%(stages)s)
""")


def _stays_sql(*, lo: datetime, hi: datetime, running: bool) -> pg.Composable:
    """Stays that ended in [lo, hi), and (``running``) those still running: deal, stage, entered, left
    (now for a running one), days, still_in."""
    in_range = pg.SQL("")
    if hi - lo <= timedelta(days=FILTER_DAYS):
        in_range = pg.SQL(
            "WHERE c.deal_id IN (SELECT deal_id FROM crm_dealstagechange WHERE at >= %(lo)s AND at < %(hi)s)"
        )
    ended = _ENDED_STAYS.format(in_range=in_range)
    return pg.SQL("{} UNION ALL {}").format(ended, _RUNNING_STAYS) if running else ended


STAYS_TABLE = pg.Identifier("kpi_stays")
STAGE, OWNER, TEAM = (pg.Identifier(name) for name in ("stage_id", "owner_id", "team_id"))


def _bucket(g: str) -> pg.Identifier:
    return pg.Identifier(f"p_{g}")


def _create_stays(grans: list[str], stays: pg.Composable) -> pg.Composable:
    """A temporary table of the stays with their owner, team and period of each granularity (the local
    day they ended): the grouped queries sort it many times over, cheaper than the join each time."""
    local = pg.SQL("s.left_at AT TIME ZONE %(tz)s")
    return pg.SQL("""
        CREATE TEMP TABLE {table} AS
        SELECT s.stage_id, s.days, s.still_in, d.owner_id, u.team_id, {buckets}
        FROM ({stays}) AS s
        JOIN crm_deal d ON d.id = s.deal_id
        LEFT JOIN accounts_user u ON u.id = d.owner_id
        WHERE d.customer_id NOT IN ({excluded})
    """).format(
        table=STAYS_TABLE,
        buckets=pg.SQL(", ").join(pg.SQL("{} AS {}").format(trunc_day(g, local), _bucket(g)) for g in grans),
        stays=stays,
        excluded=EXCLUDED_CUSTOMERS_SQL,
    )


def _sets(*prefixes: Sequence[pg.Composable]) -> pg.Composable:
    """GROUPING SETS: each prefix with and without the stage, each for the company, owners and teams."""
    sets = [
        pg.SQL("({})").format(pg.SQL(", ").join([*prefix, *stage, *scope]))
        for prefix in prefixes
        for stage in ([STAGE], [])
        for scope in ([], [OWNER], [TEAM])
    ]
    return pg.SQL(", ").join(sets)


def _ended_sql(grans: list[str]) -> pg.Composable:
    """Count, median and p90 of the ended stays per period × (every stage, each stage) × scope."""
    buckets = [_bucket(g) for g in grans]
    dims = [STAGE, OWNER, TEAM]
    return pg.SQL("""
        SELECT {flags}, {buckets}, {dims}, count(*), percentile_cont({fractions}) WITHIN GROUP (ORDER BY days)
        FROM {table} WHERE NOT still_in
        GROUP BY GROUPING SETS ({sets})
    """).format(
        flags=pg.SQL(", ").join(pg.SQL("GROUPING({})").format(c) for c in [*buckets, *dims]),
        buckets=pg.SQL(", ").join(buckets),
        dims=pg.SQL(", ").join(dims),
        fractions=FRACTIONS,
        table=STAYS_TABLE,
        sets=_sets(*([bucket] for bucket in buckets)),
    )


def _running_sql(current: dict[str, date]) -> pg.Composable:
    """The same for each granularity's running period with the stays still running in it (at their time so
    far), and how many of them are still running."""
    dims = [STAGE, OWNER, TEAM]
    return pg.SQL(" UNION ALL ").join(
        pg.SQL("""
            SELECT {g}::text, {flags}, {dims}, count(*),
                   percentile_cont({fractions}) WITHIN GROUP (ORDER BY days), count(*) FILTER (WHERE still_in)
            FROM {table} WHERE {bucket} = {day}
            GROUP BY GROUPING SETS ({sets})
        """).format(
            g=pg.Literal(g),
            flags=pg.SQL(", ").join(pg.SQL("GROUPING({})").format(c) for c in dims),
            dims=pg.SQL(", ").join(dims),
            fractions=FRACTIONS,
            table=STAYS_TABLE,
            bucket=_bucket(g),
            day=pg.Placeholder(f"current_{g}"),
            sets=_sets([]),
        )
        for g in current
    )


def _scope_of(flags: Sequence[int], owner_id: int | None, team_id: int | None) -> tuple[str, Any]:
    """The scope of a grouped row from the GROUPING() flags of (owner, team): 0 = grouped by it."""
    if not flags[0]:
        return Scope.USER, owner_id
    if not flags[1]:
        return Scope.TEAM, team_id
    return Scope.COMPANY, ""


def _percentiles(values: list[float] | None) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return round(values[0], 4), round(values[1], 4)


# (granularity, first day, scope, scope id) -> {"all": figures, stage id: figures}
Stays = dict[tuple[str, date, str, str], dict[Any, dict[str, Any]]]


def _stays_grouped(ctx: Context, grans: list[str]) -> Stays:
    """Every requested period's figures of every scope, over every stage and per stage: one scan of the
    stage history into a table of stays, one grouped query of the ended ones and one of the running
    periods."""
    periods = [p for g in grans for p in ctx.periods[g]]
    lo, hi = min(p.start for p in periods), max(p.end for p in periods)
    current = {g: ctx.current(g).first_day for g in grans if ctx.period(g, ctx.current(g).first_day)}
    params: dict[str, Any] = {
        "lo": lo,
        "hi": hi,
        "now": ctx.now,
        "tz": settings.TIME_ZONE,
        "stages": [s.pk for s in open_stages()],
        "open": OPEN,
        **{f"current_{g}": day for g, day in current.items()},
    }
    out: Stays = {}
    with connection.cursor() as cursor:
        cursor.execute(pg.SQL("DROP TABLE IF EXISTS {}").format(STAYS_TABLE))
        cursor.execute(_create_stays(grans, _stays_sql(lo=lo, hi=hi, running=bool(current))), params)
        try:
            cursor.execute(_ended_sql(grans), params)
            n_g = len(grans)
            for row in cursor.fetchall():
                flags, buckets = row[: n_g + 3], row[n_g + 3 : 2 * n_g + 3]
                stage_id, owner_id, team_id, n, fractions = row[2 * n_g + 3 :]
                at = flags[:n_g].index(0)
                scope, scope_id = _scope_of(flags[n_g + 1 :], owner_id, team_id)
                if scope_id is None:
                    continue  # a deal without an owner, or an owner without a team: the company's only
                median, p90 = _percentiles(fractions)
                key = (grans[at], buckets[at], scope, str(scope_id))
                out.setdefault(key, {})["all" if flags[n_g] else stage_id] = {
                    "n": n,
                    "median": median,
                    "p90": p90,
                }
            if current:
                cursor.execute(_running_sql(current), params)
                for g, *flags, stage_id, owner_id, team_id, n, fractions, still_in in cursor.fetchall():
                    scope, scope_id = _scope_of(flags[1:], owner_id, team_id)
                    if scope_id is None:
                        continue
                    median, p90 = _percentiles(fractions)
                    key = (g, current[g], scope, str(scope_id))
                    figures = out.setdefault(key, {}).setdefault(
                        "all" if flags[0] else stage_id, {"n": 0, "median": None, "p90": None}
                    )
                    figures |= {"n_open": n, "median_open": median, "p90_open": p90, "still_in": still_in}
        finally:
            cursor.execute(pg.SQL("DROP TABLE {}").format(STAYS_TABLE))
    return out


def _stage_entries(stages: list[PipelineStage], found: Mapping[Any, Mapping[str, Any]]) -> tuple:
    """The stages with stays in the period, in pipeline order, as the details store them."""
    entries = []
    for stage in stages:
        figures = found.get(stage.pk)
        if not figures or not (figures["n"] or figures.get("n_open")):
            continue
        entries.append({"stage": stage.pk, "name": stage.name, "pipeline": stage.pipeline.name, **figures})
    return tuple(entries)


@dataclass(frozen=True)
class TimeInStage:
    """KPI = median days of the stays that ended in the period, over all open stages; per stage in the
    details, with the running period's stays still running counted at their time so far.

    A running week or month is compared with the stays that ended in the same elapsed days of the period
    before (KPIS.md §10.1)."""

    def __call__(self, ctx: Context, kpi: Kpi) -> Iterator[Row]:
        grans = ctx.requested(kpi.granularities)
        if not grans:
            return
        found = ctx.memo(
            "time in stage", lambda: ctx.timed(kpi.code, "scan", lambda: _stays_grouped(ctx, grans))
        )
        stages = open_stages()
        for g in grans:
            for period in ctx.periods[g]:
                if not ctx.answers(period):
                    continue
                keys = {k for k in found if k[:2] == (g, period.first_day)} | {
                    (g, period.first_day, Scope.COMPANY, "")
                }
                for key in keys:
                    yield self._row(key, found.get(key, {}), stages)

    @staticmethod
    def _row(key: tuple[str, date, str, str], found: Mapping[Any, Any], stages: list[PipelineStage]) -> Row:
        every = found.get("all", {"n": 0})
        n = int(every["n"])
        details = TimeInStageDetail(
            p90=every.get("p90"),
            n_open=every.get("n_open"),
            median_open=every.get("median_open"),
            p90_open=every.get("p90_open"),
            still_in=every.get("still_in"),
            stages=_stage_entries(stages, found),
        )
        median = every.get("median")
        value = Decimal(str(median)) if n and median is not None else None
        return Row(*key, value, None, None, n, details)

    @property
    def day_datasets(self) -> tuple:
        return ()

    def at_offset(self, ctx: Context, kpi: Kpi, at: Offset) -> tuple | None:
        """(median days, None, None, stays) of the stays that ended in the first days of the period before."""
        span = (at.before.start, local_midnight(at.until))
        by_scope = ctx.memo(("time in stage to date", span), lambda: _medians_between(*span))
        median, n = by_scope.get((at.scope, at.scope_id), (None, 0))
        return (None if median is None or not n else Decimal(str(median))), None, None, n


def _medians_between(lo: datetime, hi: datetime) -> dict[tuple[str, str], tuple[float | None, int]]:
    """(median days, stays) of the stays that ended in [lo, hi), per company, owner and team."""
    sql = pg.SQL("""
        SELECT GROUPING(d.owner_id), GROUPING(u.team_id), d.owner_id, u.team_id, count(*),
               percentile_cont(0.5) WITHIN GROUP (ORDER BY s.days)
        FROM ({stays}) AS s
        JOIN crm_deal d ON d.id = s.deal_id
        LEFT JOIN accounts_user u ON u.id = d.owner_id
        WHERE d.customer_id NOT IN ({excluded})
        GROUP BY GROUPING SETS ((), (d.owner_id), (u.team_id))
    """).format(stays=_stays_sql(lo=lo, hi=hi, running=False), excluded=EXCLUDED_CUSTOMERS_SQL)
    params: dict[str, Any] = {"lo": lo, "hi": hi, "stages": [s.pk for s in open_stages()]}
    out: dict[tuple[str, str], tuple[float | None, int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for by_owner, by_team, owner_id, team_id, n, median in cursor.fetchall():
            if not by_owner:
                key = (Scope.USER, owner_id)
            elif not by_team:
                key = (Scope.TEAM, team_id)
            else:
                key = (Scope.COMPANY, "")
            if key[1] is not None:
                out[(key[0], str(key[1]))] = (median, n)
    return out


TIME_IN_STAGE = Kpi(
    code="time_in_stage",
    family=Family.SALES,
    label=_("Time in stage"),
    unit=Unit.DAYS,
    better=Better.DOWN,
    formula=_(
        "median calendar days deals spent in an open stage, over the stays that ended in the period (a move "
        "to the next stage, back, to won or lost); per stage median and 90th percentile in the details, and "
        "for the running period also with the deals still in a stage, counted at their time so far"
    ),
    compute=TimeInStage(),
    detail=TimeInStageDetail,
    min_sample=MIN_EVENTS,
    significance=Significance.NONE,
    own_task=True,
)


# The stays behind the figures of one stage (the time-in-stage page's records)
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stay:
    deal_id: int
    entered: datetime
    # None: the deal is still in the stage (its days are its time so far).
    left: datetime | None
    days: float


# The same stays of one stage, for the deals of one scope that the user may see ({deals}: a condition on d),
# the deal filtered before the stay's start is looked up.
_STAGE_ENDED = pg.SQL("""
    SELECT c.deal_id, p.at AS entered, c.at AS left_at, date_part('epoch', c.at - p.at) / 86400 AS days
    FROM crm_dealstagechange c
    JOIN crm_deal d ON d.id = c.deal_id
    CROSS JOIN LATERAL (
        SELECT p.at FROM crm_dealstagechange p
        WHERE p.deal_id = c.deal_id AND (p.at, p.id) < (c.at, c.id)
        ORDER BY p.at DESC, p.id DESC LIMIT 1
    ) AS p
    WHERE c.at >= %(lo)s AND c.at < %(hi)s AND c.from_stage_id = %(stage)s AND {deals}
""")
_STAGE_RUNNING = pg.SQL("""
    SELECT d.id, last.at, NULL::timestamptz,
           GREATEST(date_part('epoch', %(now)s::timestamptz - last.at), 0) / 86400
    FROM crm_deal d
    CROSS JOIN LATERAL (
        SELECT l.at FROM crm_dealstagechange l WHERE l.deal_id = d.id ORDER BY l.at DESC, l.id DESC LIMIT 1
    ) AS last
    WHERE d.status = %(open)s AND d.stage_id = %(stage)s AND {deals}
""")


def stage_stays(
    *,
    user: User,
    period: Period,
    scope: str,
    scope_id: str,
    stage: PipelineStage,
    now: datetime,
    limit: int,
) -> list[Stay]:
    """The stays in ``stage`` behind the period's figures that ``user`` may see, longest first (at most
    ``limit``): those that ended in the period, and in the running period those still running."""
    visible = deal_list(user=user).values("pk")
    if visible.query.is_empty():
        return []  # one who sees no deals (a support agent)
    visible_sql, visible_params = visible.query.sql_with_params()
    in_scope, scope_params = _scope_sql(scope, scope_id)
    deals = pg.SQL("d.customer_id NOT IN ({}) AND {}").format(EXCLUDED_CUSTOMERS_SQL, in_scope)
    if visible.query.where:  # the selector limits what the user sees (a manager sees every deal)
        deals = pg.SQL("{} AND d.id IN ({})").format(deals, _positional(visible_sql))
    parts = [_STAGE_ENDED.format(deals=deals)]
    if period.contains(now):
        parts.append(_STAGE_RUNNING.format(deals=deals))
    sql = pg.SQL("SELECT * FROM ({}) AS s ORDER BY s.days DESC, s.deal_id DESC LIMIT %(limit)s").format(
        pg.SQL(" UNION ALL ").join(parts)
    )
    params = {
        "lo": period.start,
        "hi": period.end,
        "now": now,
        "stage": stage.pk,
        "open": OPEN,
        "limit": limit,
        **scope_params,
        **{f"visible_{i}": value for i, value in enumerate(visible_params)},
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [Stay(*row) for row in cursor.fetchall()]


def _positional(compiled: str) -> pg.Composable:
    """SQL the ORM compiled (``%s`` placeholders) with named placeholders ``visible_0 …`` instead."""
    pieces = compiled.split("%s")
    composed: list[pg.Composable] = [pg.SQL(pieces[0])]
    for i, piece in enumerate(pieces[1:]):
        composed += [pg.Placeholder(f"visible_{i}"), pg.SQL(piece)]
    return pg.Composed(composed)


def _scope_sql(scope: str, scope_id: str) -> tuple[pg.Composable, dict[str, Any]]:
    """SQL on ``d`` (a deal) for one owner scope, and its parameters."""
    if scope == Scope.USER:
        return pg.SQL("d.owner_id = %(scope_id)s"), {"scope_id": int(scope_id)}
    if scope == Scope.TEAM:
        return (
            pg.SQL("d.owner_id IN (SELECT id FROM accounts_user WHERE team_id = %(scope_id)s)"),
            {"scope_id": int(scope_id)},
        )
    return pg.SQL("true"), {}


def stays_deals(user: User, stays: Iterable[Stay]) -> dict[int, Deal]:
    """The deals of ``stays`` that ``user`` may see, by id (one query)."""
    return {deal.pk: deal for deal in deal_list(user=user).filter(pk__in=[s.deal_id for s in stays])}


# The datasets these KPIs read (velocity's, through its factors; time in stage reads the history itself).
DATASETS = [CLOSED_DEALS, WON_DEAL_STATS, PIPELINE_DELTAS, OPEN_PIPELINE_NOW]

KPIS = [VELOCITY, TIME_IN_STAGE]
