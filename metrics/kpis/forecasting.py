"""Forecast calibration KPIs (KPIS.md §10.6): how right the forecast frozen at the start of each week,
month and quarter turned out, per company, team and rep.

The forecast is the frozen row's weighted forecast (``metrics.forecasts``); the actual is the revenue won
in the period, exactly as ``revenue_won`` counts it (the closed-deals dataset, by the deal's current owner
and team). A scope with no frozen row in a frozen period forecast nothing (0). Only finished periods have
a value, and none where nothing was won (actual 0 → NULL).
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from django.db.models import F, QuerySet, Sum, Value
from django.db.models.functions import Coalesce
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from crm.selectors import deal_list
from metrics.forecasts.models import FROZEN_GRANULARITIES, FrozenForecast
from metrics.kpis.base import ALL_SCOPES, MIN_EVENTS, Better, Context, Family, Kpi, Row, Unit
from metrics.kpis.builders import HUNDRED, dec, grouped
from metrics.kpis.details import Detail
from metrics.kpis.drilldown import DENOMINATOR, NUMERATOR, SAMPLE, Drill, Part, dataset_part, record_count
from metrics.kpis.shared import CLOSED_DEALS
from metrics.models import Scope
from metrics.periods import Period

OWNER_SCOPES = (Scope.COMPANY, Scope.TEAM, Scope.USER)


@dataclass(frozen=True)
class FrozenForecastDetail(Detail):
    """The frozen forecast behind the value: when it was frozen (late, reconstructed from history), the
    category forecasts beside the weighted one, and the revenue won it is measured against."""

    frozen_at: str | None = None
    late: bool | None = None
    reconstructed: bool | None = None
    commit_forecast: float | None = None
    best_case_forecast: float | None = None
    won: float | None = None


@dataclass(frozen=True)
class _Frozen:
    forecast: Decimal
    deals: int
    frozen_at: str
    late: bool
    reconstructed: bool
    commit_forecast: float
    best_case_forecast: float


Key = tuple[str, date, str, str]


def _frozen_rows(ctx: Context) -> dict[Key, _Frozen]:
    """The frozen forecasts of the requested periods, by (granularity, first day, scope, scope id): one
    query per granularity, a few rows per period (the company, its teams and reps)."""

    def load() -> dict[Key, _Frozen]:
        found: dict[Key, _Frozen] = {}
        for g in ctx.requested(FROZEN_GRANULARITIES):
            first_day_of = {p.start: p.first_day for p in ctx.periods[g]}
            of_periods = FrozenForecast.objects.filter(granularity=g, period_start__in=list(first_day_of))
            rows = of_periods.values_list(
                "period_start", "scope", "scope_id", "forecast", "deals", "won_deals", "frozen_at",
                "reconstructed", "won_to_date", "commit", "best_case",
            )  # fmt: skip
            for (
                start,
                scope,
                scope_id,
                forecast,
                deals,
                won_deals,
                frozen_at,
                rebuilt,
                won,
                commit,
                best,
            ) in rows:
                found[(g, first_day_of[start], scope, scope_id)] = _Frozen(
                    forecast=forecast,
                    deals=deals + won_deals,
                    frozen_at=frozen_at.isoformat(),
                    late=frozen_at > start,
                    reconstructed=rebuilt,
                    commit_forecast=float(won + commit),
                    best_case_forecast=float(won + commit + best),
                )
        return found

    return ctx.memo("frozen_forecasts", load)


def _against_actual(
    measure: Callable[[Decimal, Decimal], Decimal | None],
) -> Callable[[Context, Kpi], Iterator[Row]]:
    """Rows of a KPI comparing each finished, frozen period's forecast with the revenue won in it."""

    def compute(ctx: Context, kpi: Kpi) -> Iterator[Row]:
        won = grouped(ctx, CLOSED_DEALS)
        frozen = _frozen_rows(ctx)
        periods = {(g, first_day) for g, first_day, scope, _id in frozen if scope == Scope.COMPANY}
        won_keys: dict[tuple[str, date], set[tuple[str, str]]] = {}
        for g, first_day, scope, scope_id in won:
            if scope in OWNER_SCOPES and (g, first_day) in periods:
                won_keys.setdefault((g, first_day), set()).add((scope, scope_id))
        frozen_keys: dict[tuple[str, date], set[tuple[str, str]]] = {}
        for g, first_day, scope, scope_id in frozen:
            frozen_keys.setdefault((g, first_day), set()).add((scope, scope_id))
        for g, first_day in sorted(periods):
            period = ctx.period(g, first_day)
            if period is None or not ctx.is_closed(period):
                continue
            for scope, scope_id in frozen_keys[(g, first_day)] | won_keys.get((g, first_day), set()):
                key = (g, first_day, scope, scope_id)
                said = frozen.get(key)
                forecast = said.forecast if said is not None else Decimal(0)
                actual = dec(won.get(key, {}).get("won_amount"))
                company = frozen[(g, first_day, Scope.COMPANY, "")]
                extra = FrozenForecastDetail(
                    frozen_at=company.frozen_at,
                    late=company.late,
                    reconstructed=company.reconstructed,
                    commit_forecast=said.commit_forecast if said else 0.0,
                    best_case_forecast=said.best_case_forecast if said else 0.0,
                    won=float(actual),
                )
                value = measure(forecast, actual) if actual else None
                yield Row(
                    g, first_day, scope, scope_id, value, forecast, actual, said.deals if said else 0, extra
                )

    return compute


def _accuracy(forecast: Decimal, actual: Decimal) -> Decimal:
    return (1 - abs(actual - forecast) / actual) * HUNDRED


def _bias(forecast: Decimal, actual: Decimal) -> Decimal:
    return (forecast - actual) / actual * HUNDRED


# The records behind the forecast: the deals in the frozen forecast of the period and scope (the owner and
# team when it was frozen), each with the probability it carried then.
_ITEM_SCOPES: dict[str, str] = {Scope.USER: "forecast_items__owner_id", Scope.TEAM: "forecast_items__team_id"}


def _frozen_deals(user: User, period: Period, scope: str, scope_id: str) -> QuerySet:
    """The deals of the period's frozen forecast in the scope, with what they carried then
    (``frozen_probability``, ``frozen_amount``, ``frozen_category``)."""
    in_scope = {_ITEM_SCOPES[scope]: scope_id} if scope in _ITEM_SCOPES else {}
    return (
        deal_list(user=user)
        .filter(
            forecast_items__granularity=period.granularity,
            forecast_items__period_start=period.start,
            **in_scope,
        )
        .annotate(
            frozen_probability=F("forecast_items__probability"),
            frozen_amount=F("forecast_items__amount"),
            frozen_category=F("forecast_items__category"),
        )
    )


def _frozen_total(records: QuerySet, period: Period, scope: str, scope_id: str) -> Decimal:
    """Σ amount × probability ÷ 100 as frozen (a deal already won then counts at 100 %)."""
    weighted = Coalesce(F("frozen_amount"), Value(Decimal(0))) * F("frozen_probability") / Value(Decimal(100))
    return records.order_by().aggregate(v=Sum(weighted))["v"] or Decimal(0)


DRILL = Drill(
    {
        NUMERATOR: Part(
            _frozen_deals,
            NUMERATOR,
            _frozen_total,
            _("In the forecast frozen at the start"),
            also=((SAMPLE, record_count),),
        ),
        DENOMINATOR: dataset_part(CLOSED_DEALS, "won_amount", DENOMINATOR, label=_("Won in the period")),
    }
)

FROZEN_FORECAST_ACCURACY = Kpi(
    code="frozen_forecast_accuracy",
    family=Family.SALES,
    label=_("Accuracy of the frozen forecast"),
    unit=Unit.PERCENT,
    better=Better.UP,
    formula=_(
        "1 − |won − forecast| ÷ won, for finished periods; forecast = the weighted forecast frozen when the "
        "period began (won so far + Σ amount × probability of the open deals expected to close in it), "
        "never recomputed; nothing won → no value"
    ),
    compute=_against_actual(_accuracy),
    granularities=FROZEN_GRANULARITIES,
    scopes=ALL_SCOPES,
    drill=DRILL,
    detail=FrozenForecastDetail,
    min_sample=MIN_EVENTS,
)

FROZEN_FORECAST_BIAS = Kpi(
    code="frozen_forecast_bias",
    family=Family.SALES,
    label=_("Bias of the frozen forecast"),
    unit=Unit.PERCENT,
    better=Better.NEUTRAL,
    formula=_(
        "(forecast − won) ÷ won, for finished periods, with the forecast frozen when the period began: "
        "above 0 the forecast promised more than was won (over-forecast), below 0 less; nothing won → no "
        "value"
    ),
    compute=_against_actual(_bias),
    granularities=FROZEN_GRANULARITIES,
    scopes=ALL_SCOPES,
    drill=DRILL,
    detail=FrozenForecastDetail,
    min_sample=MIN_EVENTS,
)

DATASETS = [CLOSED_DEALS]

KPIS = [FROZEN_FORECAST_ACCURACY, FROZEN_FORECAST_BIAS]
