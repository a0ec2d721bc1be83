"""Every read of the calibration page: stored rows only (the latest calibration, frozen forecasts and the
accuracy and bias snapshots), each a single query, so the page costs the same at any data size.

Who sees what: a manager sees the company, every rep and the stage calibration (the outcomes of every
rep's deals); a rep sees their own accuracy, bias and Brier score and the stages' configured
probabilities, as on their dashboard (their own numbers, never a colleague's or the company's).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from accounts.models import User
from crm.models import PipelineStage
from metrics.forecasts.models import ForecastCalibration, FrozenForecast
from metrics.kpis import forecasting
from metrics.models import KpiSnapshot, Scope
from metrics.periods import Period, period_of
from metrics.stats import wilson_interval

# Below this many closed deals that reached a stage, its win rate is shown but nothing is suggested: a
# handful of deals says little (0 of 5 would suggest 0 %).
MIN_CALIBRATION_DEALS = 20


@dataclass(frozen=True)
class StageCalibration:
    """One open stage: its configured probability beside the win rate of the closed deals that reached
    it, with the rate's Wilson 95 % interval, and the suggested probability when the configured one lies
    outside that interval (and enough deals back it)."""

    stage: PipelineStage
    configured: int
    reached: int
    won: int

    @property
    def rate(self) -> float | None:
        return self.won / self.reached if self.reached else None

    @property
    def interval(self) -> tuple[float, float] | None:
        return wilson_interval(self.won, self.reached)

    @property
    def low_sample(self) -> bool:
        return self.reached < MIN_CALIBRATION_DEALS

    @property
    def outside(self) -> bool:
        """The configured probability lies outside the win rate's 95 % interval."""
        interval = self.interval
        if interval is None:
            return False
        low, high = interval
        return not low <= self.configured / 100 <= high

    @property
    def suggestion(self) -> int | None:
        """The empirical win rate in whole percent, when the configured probability is off (KPIS.md §10.6)."""
        if self.low_sample or not self.outside or self.rate is None:
            return None
        suggested = round(self.rate * 100)
        return suggested if suggested != self.configured else None

    @property
    def percent(self) -> float | None:
        return None if self.rate is None else 100 * self.rate

    @property
    def interval_percent(self) -> tuple[float, float] | None:
        interval = self.interval
        return None if interval is None else (100 * interval[0], 100 * interval[1])


def calibration_latest() -> ForecastCalibration | None:
    """The newest stored calibration (the nightly task's)."""
    return ForecastCalibration.objects.order_by("-computed_at", "-id").first()


def stage_calibration_list(*, calibration: ForecastCalibration | None) -> list[StageCalibration]:
    """Every open stage (the default pipeline's first) with its configured probability as it is now and
    the stored counts (none yet: zero)."""
    counts = {row["stage"]: row for row in (calibration.stages if calibration else [])}
    stages = PipelineStage.objects.filter(kind=PipelineStage.Kind.OPEN).select_related("pipeline")
    stages = stages.order_by("-pipeline__is_default", "pipeline__name", "order")
    return [
        StageCalibration(
            stage=stage,
            configured=stage.probability,
            reached=int(counts.get(stage.pk, {}).get("reached") or 0),
            won=int(counts.get(stage.pk, {}).get("won") or 0),
        )
        for stage in stages
    ]


@dataclass(frozen=True)
class Brier:
    score: float
    n: int


def brier_score(*, calibration: ForecastCalibration | None, granularity: str, key: str) -> Brier | None:
    """mean((p − outcome)²) of one scope's items (``company``, ``team:<id>``, ``user:<id>``) of one
    granularity's frozen forecasts; None when no frozen deal of it has closed."""
    if calibration is None:
        return None
    cell = (calibration.brier.get(granularity) or {}).get(key)
    if not cell or not cell[1]:
        return None
    return Brier(score=float(cell[0]) / int(cell[1]), n=int(cell[1]))


def forecast_series(
    *, user: User, granularity: str, periods: Sequence[Period], scope: str, scope_ids: Sequence[str]
) -> dict[str, dict[str, dict[date, KpiSnapshot]]]:
    """The accuracy and bias snapshots of ``periods`` for the scope ids asked for, by scope id, KPI code
    and first day (one query). A rep gets their own row only, whatever is asked."""
    if not user.is_manager:
        scope, scope_ids = Scope.USER, [str(user.pk)] if str(user.pk) in scope_ids else []
    if not periods or not scope_ids:
        return {}
    codes = [kpi.code for kpi in forecasting.KPIS]
    rows = KpiSnapshot.objects.filter(
        kpi__in=codes,
        granularity=granularity,
        scope=scope,
        scope_id__in=list(scope_ids),
        period_start__gte=periods[0].start,
        period_start__lt=periods[-1].end,
    ).only("kpi", "scope_id", "period_start", "value", "numerator", "denominator", "sample_size")
    found: dict[str, dict[str, dict[date, KpiSnapshot]]] = {}
    for row in rows:
        day = period_of(row.period_start, granularity).first_day
        found.setdefault(row.scope_id, {}).setdefault(row.kpi, {})[day] = row
    return found


def frozen_forecast_for(*, user: User, period: Period, scope: str, scope_id: str) -> FrozenForecast | None:
    """The frozen forecast of one period and scope (a rep: their own only)."""
    if not user.is_manager and (scope != Scope.USER or scope_id != str(user.pk)):
        return None
    return FrozenForecast.objects.filter(
        granularity=period.granularity, period_start=period.start, scope=scope, scope_id=scope_id
    ).first()
