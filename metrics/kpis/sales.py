"""Sales KPIs (KPIS.md §4): revenue, win rate, deal size, cycle, pipeline, forecast, growth, funnel."""

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from psycopg import sql as pg

from accounts.models import User
from crm.models import Deal, DealStageChange, PipelineStage
from crm.selectors import deal_list
from metrics.kpis import facts
from metrics.kpis.base import (
    MIN_CLOSED_DEALS,
    MIN_EVENTS,
    SEGMENTED_ACQUISITION_SCOPES,
    SEGMENTED_SCOPES,
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
    Grouped,
    Stocked,
    count,
    dec,
    divide,
    grouped,
    in_spans,
    measure,
    part,
    ratio,
    rows_from,
    scope_filter,
)
from metrics.kpis.details import (
    ForecastAccuracyDetail,
    ForecastDetail,
    FunnelDetail,
    GrowthDetail,
    MeanBeside,
)
from metrics.kpis.drilldown import (
    DENOMINATOR,
    NUMERATOR,
    SAMPLE,
    VALUE,
    Drill,
    Part,
    dataset_part,
    record_count,
    sum_of,
)
from metrics.kpis.shared import (
    CLOSED_DEALS,
    DEAL_SCOPES,
    EXCLUDED_CUSTOMERS_SQL,
    FORECAST_DELTAS,
    INVALID_LOST,
    LEAD_CONVERSION_DAYS,
    LEADS,
    LOST,
    NEW_CUSTOMERS,
    OPEN,
    OPEN_BY_CLOSE_DATE,
    OPEN_PIPELINE_NOW,
    PIPELINE_DELTAS,
    ROTTING_NOW,
    WON,
    WON_DEAL_STATS,
    live,
    rollup_by_owner,
    year_before,
)
from metrics.models import Scope
from metrics.periods import Period, local_date, local_midnight, shift_date

LIVE_DEAL = live("customer__")

REVENUE_CHART = Chart("chart-revenue", _("Revenue won"), "revenue", order=10, y2_title=_("deals"))
FUNNEL_CHART = Chart("chart-funnel", _("Funnel"), "funnel", order=20)
REPS_CHART = Chart(
    "chart-reps", _("Win rate and sales cycle by rep"), "by_person", order=30, y_title="%", y2_title=_("days")
)
CLOSED = LIVE_DEAL & Q(status__in=[WON, LOST]) & ~INVALID_LOST


def _deals(user: User) -> QuerySet:
    return deal_list(user=user)


REVENUE_WON = Kpi(
    code="revenue_won",
    family=Family.SALES,
    label=_("Revenue won"),
    unit=Unit.CURRENCY,
    better=Better.UP,
    formula=_(
        "Σ amount of the deals won in the period (by close date; a reopened deal counts when finally won)"
    ),
    compute=measure(CLOSED_DEALS, "won_amount", sample="won"),
    scopes=SEGMENTED_SCOPES,
    plots=(Plot(REVENUE_CHART, "bars", label=_("Revenue won")),),
    sections=frozenset({Section.WEEKLY_REPORT, Section.GO_LIVE}),
    question=Question.SALES_GROWTH,
)

DEALS_WON = Kpi(
    code="deals_won",
    family=Family.SALES,
    label=_("Deals won"),
    unit=Unit.COUNT,
    better=Better.UP,
    formula=_("number of deals won in the period (by close date)"),
    compute=measure(CLOSED_DEALS, "won"),
    scopes=SEGMENTED_SCOPES,
    plots=(Plot(REVENUE_CHART, "line", "y2", _("Deals won")),),
    significance=Significance.COUNT,
    min_sample=MIN_EVENTS,
    sections=frozenset({Section.WEEKLY_REPORT}),
)

NEW_CUSTOMERS_KPI = Kpi(
    code="new_customers",
    family=Family.SALES,
    label=_("New customers"),
    unit=Unit.COUNT,
    better=Better.UP,
    formula=_("customers who first became customers in the period (reactivations are not new)"),
    compute=measure(NEW_CUSTOMERS, "new"),
    scopes=SEGMENTED_ACQUISITION_SCOPES,
    significance=Significance.COUNT,
    min_sample=MIN_EVENTS,
    sections=frozenset({Section.WEEKLY_REPORT, Section.CHANNELS}),
)

WIN_RATE = Kpi(
    code="win_rate",
    family=Family.SALES,
    label=_("Win rate"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_("deals won ÷ deals closed (won + lost) in the period; lost as duplicate/invalid is left out"),
    compute=ratio(CLOSED_DEALS, "won", "closed"),
    scopes=SEGMENTED_ACQUISITION_SCOPES,
    plots=(Plot(REPS_CHART, "bars", label=_("Win rate %")),),
    significance=Significance.PROPORTION,
    min_sample=MIN_CLOSED_DEALS,
    sections=frozenset({Section.WEEKLY_REPORT, Section.GO_LIVE, Section.CHANNELS}),
    question=Question.SALES_GROWTH,
)

AVG_DEAL_SIZE = Kpi(
    code="avg_deal_size",
    family=Family.SALES,
    label=_("Average deal size"),
    unit=Unit.CURRENCY,
    better=Better.UP,
    formula=_("Σ amount of deals won in the period ÷ their number (deals without an amount are left out)"),
    compute=ratio(CLOSED_DEALS, "won_priced_amount", "won_priced"),
    scopes=SEGMENTED_SCOPES,
    min_sample=MIN_CLOSED_DEALS,
)

MEDIAN_DEAL_SIZE = Kpi(
    code="median_deal_size",
    family=Family.SALES,
    label=_("Median deal size"),
    unit=Unit.CURRENCY,
    better=Better.UP,
    formula=_("median amount of the deals won in the period (deals without an amount are left out)"),
    compute=measure(WON_DEAL_STATS, "median_amount", sample="priced"),
    min_sample=MIN_CLOSED_DEALS,
)

SALES_CYCLE_MEDIAN = Kpi(
    code="sales_cycle_median",
    family=Family.SALES,
    label=_("Sales cycle (median)"),
    unit=Unit.DAYS,
    better=Better.DOWN,
    formula=_("median of close − creation, in calendar days, over the deals won in the period"),
    compute=measure(WON_DEAL_STATS, "cycle_median", sample="won", extra={"mean": "cycle_mean"}),
    detail=MeanBeside,
    plots=(Plot(REPS_CHART, "line", "y2", _("Sales cycle (median days)")),),
    min_sample=MIN_CLOSED_DEALS,
    sections=frozenset({Section.GO_LIVE}),
)

SALES_CYCLE_P90 = Kpi(
    code="sales_cycle_p90",
    family=Family.SALES,
    label=_("Sales cycle (90th percentile)"),
    unit=Unit.DAYS,
    better=Better.DOWN,
    formula=_("90th percentile of close − creation, in calendar days, over the deals won in the period"),
    compute=measure(WON_DEAL_STATS, "cycle_p90", sample="won"),
    min_sample=MIN_CLOSED_DEALS,
)


def _open_at_end(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """Deals that were open just before the period's end, by their stage history, with the probability
    they carried then (``probability_then``: the deal's override, else that stage's default); in the
    current period the deals open now (the value shown is the pipeline as it is now)."""
    deals = _deals(user).filter(LIVE_DEAL, scope_filter(scope, scope_id, DEAL_SCOPES))
    if period.end > timezone.now():
        return deals.filter(status=Deal.Status.OPEN).annotate(
            probability_then=Coalesce("probability", "stage__probability")
        )
    # Only a deal created before the end and not closed before it (closed_at is its latest close, or
    # empty while open) can have been open then: the stage history is read for those alone.
    not_closed_before = Q(closed_at__isnull=True) | Q(closed_at__gte=period.end)
    candidates = deals.filter(not_closed_before, created_at__lt=period.end)
    last = DealStageChange.objects.filter(deal=OuterRef("pk"), at__lt=period.end).order_by("-at", "-id")
    return (
        candidates.annotate(
            kind_at_end=Subquery(last.values("to_stage__kind")[:1]),
            stage_probability_then=Subquery(last.values("to_stage__probability")[:1]),
        )
        .filter(kind_at_end=PipelineStage.Kind.OPEN)
        .annotate(probability_then=Coalesce("probability", "stage_probability_then"))
    )


WEIGHTED_AMOUNT = Coalesce("amount", Value(Decimal(0))) * F("probability_then") / Value(Decimal(100))
OPEN_AT_END = _("Deals open at the end of the period")


PIPELINE_VALUE = Kpi(
    code="pipeline_value",
    family=Family.SALES,
    label=_("Pipeline value"),
    unit=Unit.CURRENCY,
    better=Better.UP,
    formula=_(
        "Σ amount of the deals open at the end of the period, from the stage history "
        "(amounts and owners as they are now)"
    ),
    compute=Stocked(PIPELINE_DELTAS, OPEN_PIPELINE_NOW, "amount", sample="open"),
    basis=Basis.STOCK,
    drill=Drill(
        {NUMERATOR: Part(_open_at_end, VALUE, sum_of("amount"), OPEN_AT_END, also=((SAMPLE, record_count),))}
    ),
)

WEIGHTED_PIPELINE = Kpi(
    code="weighted_pipeline",
    family=Family.SALES,
    label=_("Weighted pipeline"),
    unit=Unit.CURRENCY,
    better=Better.UP,
    formula=_(
        "Σ amount × probability ÷ 100 of the deals open at the end of the period; probability is the deal's "
        "override, else the default of the stage it was in then"
    ),
    compute=Stocked(PIPELINE_DELTAS, OPEN_PIPELINE_NOW, "weighted", sample="open"),
    basis=Basis.STOCK,
    drill=Drill({NUMERATOR: Part(_open_at_end, VALUE, sum_of(WEIGHTED_AMOUNT), OPEN_AT_END)}),
)


ROTTING_DEALS = Kpi(
    code="rotting_deals",
    family=Family.SALES,
    label=_("Rotting deals"),
    unit=Unit.COUNT,
    better=Better.DOWN,
    formula=_(
        "open deals with no activity, stage move or edit for longer than their stage's rotting days, now"
    ),
    compute=measure(ROTTING_NOW, "rotting", sample="open"),
    basis=Basis.CURRENT,
)

ROTTING_VALUE = Kpi(
    code="rotting_value",
    family=Family.SALES,
    label=_("Rotting pipeline value"),
    unit=Unit.CURRENCY,
    better=Better.DOWN,
    formula=_("Σ amount of the rotting deals (as for rotting deals), now"),
    compute=measure(ROTTING_NOW, "rotting_amount", sample="rotting"),
    basis=Basis.CURRENT,
)

ROTTING_SHARE = Kpi(
    code="rotting_share",
    family=Family.SALES,
    label=_("Rotting share of the pipeline"),
    unit=Unit.PERCENT,
    better=Better.DOWN,
    formula=_("Σ amount of the rotting deals ÷ Σ amount of all open deals, now"),
    compute=ratio(ROTTING_NOW, "rotting_amount", "amount", sample="open"),
    basis=Basis.CURRENT,
)


def _by_period(data: Grouped) -> dict[tuple[str, Any], dict[tuple[str, str], dict[str, Any]]]:
    index: dict[tuple[str, Any], dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
    for (g, first_day, scope, scope_id), values in data.items():
        index[(g, first_day)][(scope, scope_id)] = values
    return index


def _forecast_weighted(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    won = _by_period(grouped(ctx, CLOSED_DEALS))
    open_deals = _by_period(grouped(ctx, OPEN_BY_CLOSE_DATE))
    for g in ctx.granularities:
        period = ctx.current(g)
        key = (g, period.first_day)
        for scope, scope_id in {(Scope.COMPANY, ""), *won.get(key, {}), *open_deals.get(key, {})}:
            won_to_date = dec(won.get(key, {}).get((scope, scope_id), {}).get("won_amount"))
            open_values = open_deals.get(key, {}).get((scope, scope_id), {})
            weighted = dec(open_values.get("weighted"))
            extra = ForecastDetail(won_to_date=float(won_to_date), open_weighted=float(weighted))
            yield Row(
                g,
                period.first_day,
                scope,
                scope_id,
                won_to_date + weighted,
                None,
                None,
                int(open_values.get("open") or 0),
                extra,
            )


FORECAST_WEIGHTED = Kpi(
    code="forecast_weighted",
    family=Family.SALES,
    label=_("Weighted forecast"),
    unit=Unit.CURRENCY,
    better=Better.UP,
    formula=_(
        "won so far in the current period + Σ amount × probability ÷ 100 of the open deals expected to "
        "close in it"
    ),
    compute=_forecast_weighted,
    basis=Basis.CURRENT,
    drill=Drill(
        {
            NUMERATOR: dataset_part(CLOSED_DEALS, "won_amount", "won_to_date", label=_("Won so far")),
            DENOMINATOR: replace(
                dataset_part(
                    OPEN_BY_CLOSE_DATE, "weighted", "open_weighted", label=_("Open, expected to close in it")
                ),
                also=((SAMPLE, record_count),),
            ),
        }
    ),
    detail=ForecastDetail,
    plots=(Plot(REVENUE_CHART, "forecast", label=_("Weighted forecast")),),
)


def _like_for_like(ctx: Context) -> dict[tuple[str, str, str, str], Decimal]:
    """Revenue of the previous period and of the year-earlier period up to the current elapsed time.

    Whole months come from the facts of the revenue dataset, the rest from the deals (one query).
    """

    def build() -> dict[tuple[str, str, str, str], Decimal]:
        grouped(ctx, CLOSED_DEALS)  # brings the facts up to date first
        team_of = dict(User.objects.values_list("id", "team_id"))
        spans = {}
        for g in ctx.granularities:
            current = ctx.current(g)
            if ctx.period(g, current.first_day) is None:
                continue
            elapsed = ctx.now - current.start
            for kind, base in (("pop", current.previous()), ("yoy", year_before(current))):
                spans[(kind, g)] = (base.start, min(base.start + elapsed, base.end))
        out = {}
        for (kind, g), by_owner in _won_between(spans).items():
            for (scope, scope_id), (amount,) in rollup_by_owner(list(by_owner.items()), team_of).items():
                out[(kind, g, scope, scope_id)] = dec(amount)
        return out

    return ctx.memo("like_for_like", build, reads=(CLOSED_DEALS.name,))


def _won_between(spans: dict[Any, tuple[datetime, datetime]]) -> dict[Any, dict[int | None, Decimal]]:
    """Revenue won in each span [lo, hi) per owner: whole months from the revenue facts, the rest from
    the deals, every span's rest summed in one query (an index-only range scan per span)."""
    keys = list(spans)
    by_span: dict[Any, dict[int | None, Decimal]] = {key: defaultdict(Decimal) for key in keys}
    ranges: list[tuple[int, datetime, datetime]] = []
    for i, (lo, hi) in enumerate(spans.values()):
        months = facts.whole_months(local_date(lo), local_date(hi))
        if not months:
            ranges.append((i, lo, hi))
            continue
        first, after = local_midnight(months[0]), local_midnight(shift_date(months[-1], "month", 1))
        ranges += [(i, lo, first), (i, after, hi)]
        for scope_id, values in facts.month_totals_by_user(CLOSED_DEALS, months).items():
            by_span[keys[i]][int(scope_id) if scope_id else None] += values["won_amount"]
    ranges = [(i, lo, hi) for i, lo, hi in ranges if lo < hi]
    if not ranges:
        return by_span
    with connection.cursor() as cursor:
        cursor.execute(
            pg.SQL(
                "SELECT r.i, d.owner_id, sum(d.amount) "
                "FROM unnest(%s::int[], %s::timestamptz[], %s::timestamptz[]) AS r(i, lo, hi) "
                "JOIN crm_deal d ON d.status = %s AND d.closed_at >= r.lo AND d.closed_at < r.hi "
                "WHERE d.customer_id NOT IN ({}) GROUP BY 1, 2"
            ).format(EXCLUDED_CUSTOMERS_SQL),
            [[r[0] for r in ranges], [r[1] for r in ranges], [r[2] for r in ranges], WON],
        )
        for i, owner_id, amount in cursor.fetchall():
            by_span[keys[i]][owner_id] += amount or 0
    return by_span


def _growth(kind: str) -> Any:
    def compute(ctx: Context, kpi: Kpi) -> Iterator[Row]:
        revenue = _by_period(grouped(ctx, CLOSED_DEALS))
        like_for_like = _like_for_like(ctx)
        for g in ctx.granularities:
            for period in ctx.periods[g]:
                if not ctx.answers(period):
                    continue
                base = period.previous() if kind == "pop" else year_before(period)
                now_values = revenue.get((g, period.first_day), {})
                base_values = revenue.get((g, base.first_day), {})
                partial = period.contains(ctx.now)
                for scope, scope_id in {(Scope.COMPANY, ""), *now_values, *base_values}:
                    if scope == Scope.SOURCE:
                        continue
                    current = dec(now_values.get((scope, scope_id), {}).get("won_amount"))
                    if partial:
                        previous = like_for_like.get((kind, g, scope, scope_id), Decimal(0))
                    else:
                        previous = dec(base_values.get((scope, scope_id), {}).get("won_amount"))
                    extra = GrowthDetail(compared_with=base.first_day.isoformat(), like_for_like=partial)
                    yield Row(
                        g,
                        period.first_day,
                        scope,
                        scope_id,
                        divide(current - previous, previous, HUNDRED),
                        current,
                        previous,
                        None,
                        extra,
                        partial,
                    )

    return compute


def _growth_base(kind: str) -> Part:
    """The deals won in the period grown from: the previous one (or the same a year earlier), and for
    the current, unfinished period only its first part, as long as the current one has run."""

    def records(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
        base = period.previous() if kind == "pop" else year_before(period)
        end, now = base.end, timezone.now()
        if period.contains(now):
            end = min(base.start + (now - period.start), base.end)
        return _deals(user).filter(
            LIVE_DEAL, scope_filter(scope, scope_id, DEAL_SCOPES), status=WON, closed_at__gte=base.start,
            closed_at__lt=end,
        )  # fmt: skip

    return Part(records, DENOMINATOR, sum_of("amount"), _("Won in the period compared with"))


def _growth_drill(kind: str) -> Drill:
    now = dataset_part(CLOSED_DEALS, "won_amount", NUMERATOR, label=_("Won in the period"))
    return Drill({NUMERATOR: now, DENOMINATOR: _growth_base(kind)})


SALES_GROWTH_POP = Kpi(
    code="sales_growth_pop",
    family=Family.SALES,
    label=_("Sales growth vs previous period"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "(revenue won in the period − in the previous period) ÷ revenue of the previous period; the current, "
        "unfinished period is compared with the same elapsed time of the previous one"
    ),
    compute=_growth("pop"),
    drill=_growth_drill("pop"),
    detail=GrowthDetail,
)

SALES_GROWTH_YOY = Kpi(
    code="sales_growth_yoy",
    family=Family.SALES,
    label=_("Sales growth year over year"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "(revenue won in the period − in the same period a year earlier) ÷ that year-earlier revenue; an "
        "unfinished period is compared like for like (same elapsed time)"
    ),
    compute=_growth("yoy"),
    drill=_growth_drill("yoy"),
    detail=GrowthDetail,
)


FUNNEL_FILTER_DAYS = 400


def _funnel_day_sql(stages: list[PipelineStage]) -> Any:
    """Day rows of the funnel: per day of creation and owner, deals won, deals that reached each open
    stage (or a later one: the highest non-lost stage order in their history; a won deal reached all)
    and deals still open in each stage.

    Hand-written so the furthest stage of every deal comes from one grouped pass over the stage
    history (an index lookup per deal for a few days' rescan), not from a query per deal.
    """

    def day_sql(ctx: Context, spans: Sequence[tuple[date, date]]) -> tuple[pg.Composable, list[Any]]:
        ranges = in_spans(pg.Identifier("d", "created_at"), len(spans))
        bounds = [moment for lo, hi in spans for moment in (local_midnight(lo), local_midnight(hi))]
        measures = [pg.SQL("count(*) FILTER (WHERE d.status = %s)")]
        params: list[Any] = [WON]
        for s in stages:
            measures.append(pg.SQL("count(*) FILTER (WHERE d.status = %s OR r.top >= %s)"))
            measures.append(pg.SQL("count(*) FILTER (WHERE d.status = %s AND d.stage_id = %s)"))
            params += [WON, s.order, OPEN, s.pk]
        columns = pg.SQL(", ").join(
            pg.SQL("{}::bigint AS {}").format(m, part(i)) for i, m in enumerate(measures)
        )
        # A scan of years reads the whole stage history once, grouped by deal. A few days' rescan looks up
        # each deal's history by index instead, only in the months of its life (from its creation to its
        # last update, which every stage move stamps): PostgreSQL prunes the monthly partitions per deal.
        # Reading the history from the first rescanned day on took seconds at 10 M deals once an old
        # deal's day was among them (every month since, for every deal).
        few_days = sum((hi - lo).days for lo, hi in spans) <= FUNNEL_FILTER_DAYS
        history = pg.SQL("""
            SELECT {deal} max(s."order") AS top
            FROM crm_dealstagechange c JOIN crm_pipelinestage s ON s.id = c.to_stage_id
            WHERE s.kind <> %s {per_deal}
        """).format(
            deal=pg.SQL("") if few_days else pg.SQL("c.deal_id,"),
            per_deal=(
                pg.SQL("AND c.deal_id = d.id AND c.at >= d.created_at AND c.at <= d.updated_at")
                if few_days
                else pg.SQL("GROUP BY c.deal_id")
            ),
        )
        joined = (
            pg.SQL("LEFT JOIN LATERAL ({}) AS r ON true")
            if few_days
            else pg.SQL("LEFT JOIN ({}) AS r ON r.deal_id = d.id")
        ).format(history)
        sql = pg.SQL("""
            SELECT (d.created_at AT TIME ZONE %s)::date AS on_day, 'user' AS scope,
                   COALESCE(d.owner_id::text, '') AS scope_id, {columns}
            FROM crm_deal d
            JOIN crm_pipelinestage st ON st.id = d.stage_id
            JOIN crm_pipeline p ON p.id = st.pipeline_id AND p.is_default
            {joined}
            WHERE ({ranges}) AND d.customer_id NOT IN ({excluded}){users}
            GROUP BY 1, 3
        """).format(
            columns=columns,
            joined=joined,
            ranges=ranges,
            excluded=EXCLUDED_CUSTOMERS_SQL,
            # A rescan of some users' deals only (Dataset.by_user).
            users=pg.SQL(" AND d.owner_id = ANY(%s)") if ctx.scan_users is not None else pg.SQL(""),
        )
        users = [ctx.scan_users] if ctx.scan_users is not None else []
        return sql, [settings.TIME_ZONE, *params, PipelineStage.Kind.LOST, *bounds, *users]

    return day_sql


def _funnel_dataset() -> tuple[Dataset, list[PipelineStage]]:
    stages = list(
        PipelineStage.objects.filter(pipeline__is_default=True, kind=PipelineStage.Kind.OPEN).order_by(
            "order"
        )
    )
    measures = {"won": count()}
    for s in stages:
        measures[f"reached_{s.pk}"] = count()
        measures[f"open_{s.pk}"] = count()
    dataset = Dataset(
        name="funnel",
        rows=lambda ctx: Deal.objects.filter(LIVE_DEAL, stage__pipeline__is_default=True),
        date="created_at",
        scopes=DEAL_SCOPES,
        measures=measures,
        day_sql=_funnel_day_sql(stages),
        by_user="owner_id",
    )
    return dataset, stages


def _funnel_of_run(ctx: Context) -> Dataset:
    return ctx.memo("funnel_dataset", _funnel_dataset)[0]


# The funnel's measures depend on the pipeline's stages: built per run.
DATASET_FACTORIES = [_funnel_of_run]


def _funnel(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    dataset, stages = ctx.memo("funnel_dataset", _funnel_dataset)
    if not stages:
        return iter(())
    first = f"reached_{stages[0].pk}"

    def fn(values: Mapping[str, Any], period: Period, scope: str, scope_id: str) -> tuple:
        entered, won = int(values.get(first) or 0), int(values.get("won") or 0)
        steps = []
        counts = [int(values.get(f"reached_{s.pk}") or 0) for s in stages] + [won]
        names = [s.name for s in stages] + [str(_("Won"))]
        for i, name in enumerate(names):
            nxt = counts[i + 1] if i + 1 < len(counts) else None
            steps.append(
                {
                    "stage": name,
                    "reached": counts[i],
                    "in_progress": int(values.get(f"open_{stages[i].pk}") or 0) if i < len(stages) else 0,
                    "to_next": _pct(nxt, counts[i]) if nxt is not None else None,
                    "cumulative": _pct(counts[i], entered),
                }
            )
        provisional = not ctx.is_closed(period, _maturity())
        return (
            divide(Decimal(won), Decimal(entered), HUNDRED),
            Decimal(won),
            Decimal(entered),
            entered,
            FunnelDetail(stages=tuple(steps)),
            provisional,
        )

    return rows_from(ctx, kpi, grouped(ctx, dataset), fn)


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 4) if whole else None


def _maturity() -> timedelta:
    return timedelta(days=LEAD_CONVERSION_DAYS)


def _funnel_cohort(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """Deals of the default pipeline created in the period (the funnel's cohort)."""
    return _deals(user).filter(
        LIVE_DEAL,
        scope_filter(scope, scope_id, DEAL_SCOPES),
        stage__pipeline__is_default=True,
        created_at__gte=period.start,
        created_at__lt=period.end,
    )


def _funnel_won(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    return _funnel_cohort(user, period, scope, scope_id).filter(status=WON)


def _funnel_entered(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """The cohort's deals that reached the first open stage or a later one (a won deal reached all)."""
    first = PipelineStage.objects.filter(pipeline__is_default=True, kind=PipelineStage.Kind.OPEN)
    first_order = first.order_by("order").values_list("order", flat=True).first()
    reached = DealStageChange.objects.filter(deal=OuterRef("pk"), to_stage__order__gte=first_order).exclude(
        to_stage__kind=PipelineStage.Kind.LOST
    )
    return _funnel_cohort(user, period, scope, scope_id).filter(Q(status=WON) | Exists(reached))


FUNNEL_CONVERSION = Kpi(
    code="funnel_conversion",
    family=Family.SALES,
    label=_("Funnel conversion"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "deals created in the period (default pipeline) that were won ÷ those that reached the first stage; "
        "a "
        "deal reaching a stage is taken to have passed every earlier one, and backward moves do not un-reach "
        "a stage; per-stage step and cumulative conversion in the details"
    ),
    compute=_funnel,
    basis=Basis.COHORT,
    drill=Drill(
        {
            NUMERATOR: Part(_funnel_won, NUMERATOR, label=_("Won")),
            DENOMINATOR: Part(_funnel_entered, DENOMINATOR, label=_("Reached the first stage")),
        }
    ),
    detail=FunnelDetail,
    plots=(Plot(FUNNEL_CHART, "funnel"),),
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
)

LEAD_CONVERSION = Kpi(
    code="lead_conversion",
    family=Family.SALES,
    label=_("Lead-to-customer conversion"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "leads created in the period that became customers within 90 days ÷ leads created in the period "
        "(a lead is a customer record created with status lead)"
    ),
    compute=ratio(LEADS, "converted", "leads", provisional=lambda ctx, p: not ctx.is_closed(p, _maturity())),
    basis=Basis.COHORT,
    scopes=SEGMENTED_ACQUISITION_SCOPES,
    significance=Significance.PROPORTION,
    min_sample=MIN_EVENTS,
    sections=frozenset({Section.CHANNELS}),
)


def _forecast_accuracy(ctx: Context, kpi: Kpi) -> Iterator[Row]:
    forecast, won = grouped(ctx, FORECAST_DELTAS), grouped(ctx, CLOSED_DEALS)
    for key in {*forecast, *(k for k in won if k[2] != Scope.SOURCE)} | {
        (g, p.first_day, Scope.COMPANY, "") for g in ctx.granularities for p in ctx.periods[g]
    }:
        g, first_day, scope, scope_id = key
        period = ctx.period(g, first_day)
        if period is None or not ctx.is_closed(period):
            continue
        said = dec(forecast.get(key, {}).get("forecast"))
        actual = dec(won.get(key, {}).get("won_amount"))
        value = None if not actual else (1 - abs(actual - said) / actual) * HUNDRED
        extra = ForecastAccuracyDetail(forecast_at_start=float(said), won=float(actual))
        yield Row(
            g,
            first_day,
            scope,
            scope_id,
            value,
            said,
            actual,
            int(forecast.get(key, {}).get("deals") or 0),
            extra,
        )


def _forecast_at_start(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """Deals expected to close in the period that were open when it began, with the probability they had
    then (``probability_then``: the override, else that stage's default)."""
    before = DealStageChange.objects.filter(deal=OuterRef("pk"), at__lt=period.start).order_by("-at", "-id")
    return (
        _deals(user)
        .filter(
            LIVE_DEAL,
            scope_filter(scope, scope_id, DEAL_SCOPES),
            expected_close_date__gte=period.first_day,
            expected_close_date__lt=period.next().first_day,
        )
        .annotate(
            kind_then=Subquery(before.values("to_stage__kind")[:1]),
            stage_probability_then=Subquery(before.values("to_stage__probability")[:1]),
        )
        .filter(kind_then=PipelineStage.Kind.OPEN)
        .annotate(probability_then=Coalesce("probability", "stage_probability_then"))
    )


FORECAST_ACCURACY = Kpi(
    code="forecast_accuracy",
    family=Family.SALES,
    # Beside the frozen forecasts' own accuracy (metrics.kpis.forecasting), which reads what was frozen.
    label=_("Forecast accuracy (reconstructed from history)"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "1 − |won − forecast| ÷ won, for finished periods; forecast = Σ amount × probability of the deals "
        "open "
        "at the start of the period (stage history) and expected to close in it (expected close date as it "
        "is now)"
    ),
    compute=_forecast_accuracy,
    drill=Drill(
        {
            NUMERATOR: Part(
                _forecast_at_start,
                NUMERATOR,
                sum_of(WEIGHTED_AMOUNT),
                _("Forecast at the start of the period"),
                also=((SAMPLE, record_count),),
            ),
            DENOMINATOR: dataset_part(CLOSED_DEALS, "won_amount", DENOMINATOR, label=_("Won in the period")),
        }
    ),
    detail=ForecastAccuracyDetail,
)

# The datasets these KPIs read (the funnel's is built per run, see DATASET_FACTORIES).
DATASETS = [
    CLOSED_DEALS,
    WON_DEAL_STATS,
    NEW_CUSTOMERS,
    PIPELINE_DELTAS,
    OPEN_PIPELINE_NOW,
    OPEN_BY_CLOSE_DATE,
    FORECAST_DELTAS,
    LEADS,
    ROTTING_NOW,
]

KPIS = [
    REVENUE_WON,
    DEALS_WON,
    NEW_CUSTOMERS_KPI,
    WIN_RATE,
    AVG_DEAL_SIZE,
    MEDIAN_DEAL_SIZE,
    SALES_CYCLE_MEDIAN,
    SALES_CYCLE_P90,
    PIPELINE_VALUE,
    WEIGHTED_PIPELINE,
    ROTTING_DEALS,
    ROTTING_VALUE,
    ROTTING_SHARE,
    FORECAST_WEIGHTED,
    SALES_GROWTH_POP,
    SALES_GROWTH_YOY,
    FUNNEL_CONVERSION,
    LEAD_CONVERSION,
    FORECAST_ACCURACY,
]
