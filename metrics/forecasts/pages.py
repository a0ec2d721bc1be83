"""The context of the forecast calibration page, built from the selectors' stored rows."""

from datetime import date
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from metrics import charts, dashboard
from metrics.forecasts import selectors, services
from metrics.forms import StageProbabilityApplyForm
from metrics.kpis.base import MIN_EVENTS
from metrics.kpis.forecasting import FROZEN_FORECAST_ACCURACY, FROZEN_FORECAST_BIAS
from metrics.models import KpiSnapshot, Scope
from metrics.periods import Period, period_of
from metrics.selectors import rep_names


def _latest(series: dict[date, KpiSnapshot], periods: list[Period]) -> KpiSnapshot | None:
    """The newest of ``periods`` with a value."""
    for period in reversed(periods):
        row = series.get(period.first_day)
        if row is not None and row.value is not None:
            return row
    return None


# Above this bias (percent, over the shown periods), with at least this many deals in the forecasts, a
# rep's forecasts are marked as too optimistic.
OVER_FORECAST = 25
OVER_FORECAST_MIN_DEALS = 30


def _pooled_bias(rows: list[KpiSnapshot]) -> tuple[Decimal, int] | None:
    """The bias over several periods: (Σ forecast − Σ won) ÷ Σ won of those with a value (KPIS.md §10.6),
    and the deals behind it; None when nothing was won in them."""
    rows = [r for r in rows if r.value is not None and r.denominator]
    won = sum((r.denominator for r in rows if r.denominator is not None), Decimal(0))
    if not won:
        return None
    forecast = sum((r.numerator for r in rows if r.numerator is not None), Decimal(0))
    return (forecast - won) / won * 100, sum(r.sample_size or 0 for r in rows)


def _person_row(
    name: str,
    scope_id: str,
    series: dict[str, dict[date, KpiSnapshot]],
    periods: list[Period],
    brier: selectors.Brier | None,
) -> dict[str, Any]:
    accuracy = series.get(FROZEN_FORECAST_ACCURACY.code, {})
    bias = series.get(FROZEN_FORECAST_BIAS.code, {})
    latest_accuracy, latest_bias = _latest(accuracy, periods), _latest(bias, periods)
    sample = latest_bias.sample_size if latest_bias is not None else None
    pooled = _pooled_bias([bias[p.first_day] for p in periods if p.first_day in bias])
    return {
        "name": name,
        "scope_id": scope_id,
        "accuracy": dashboard.format_value(FROZEN_FORECAST_ACCURACY, latest_accuracy.value)
        if latest_accuracy
        else "—",
        "bias": dashboard.format_value(FROZEN_FORECAST_BIAS, latest_bias.value) if latest_bias else "—",
        "pooled": None if pooled is None else dashboard.format_value(FROZEN_FORECAST_BIAS, pooled[0]),
        "pooled_value": None if pooled is None else pooled[0],
        "pooled_n": None if pooled is None else pooled[1],
        "over": pooled is not None and pooled[0] > OVER_FORECAST and pooled[1] >= OVER_FORECAST_MIN_DEALS,
        "sample": sample,
        "low_sample": sample is not None and sample < MIN_EVENTS,
        "accuracy_line": dashboard.sparkline_points(
            [accuracy[p.first_day].value if p.first_day in accuracy else None for p in periods]
        ),
        "bias_line": dashboard.sparkline_points(
            [bias[p.first_day].value if p.first_day in bias else None for p in periods]
        ),
        "brier": brier,
    }


def forecast_page_context(*, user: User, granularity: str, count: int) -> dict[str, Any]:
    """The page for ``user``: the trend of accuracy and bias over the last ``count`` finished periods
    (the company's for a manager, their own for a rep), per rep (a rep: only themselves), the current
    period's frozen forecast, and for managers the stage calibration with its suggestions."""
    current = period_of(timezone.now(), granularity)
    periods = [current.previous(steps) for steps in range(count, 0, -1)]
    calibration = selectors.calibration_latest()
    if user.is_manager:
        people = rep_names()
        scope, scope_id = Scope.COMPANY, ""
    else:
        people = {str(user.pk): str(user.get_full_name() or user.get_username())}
        scope, scope_id = Scope.USER, str(user.pk)
    per_person = selectors.forecast_series(
        user=user, granularity=granularity, periods=periods, scope=Scope.USER, scope_ids=list(people)
    )
    trend_series = (
        selectors.forecast_series(
            user=user, granularity=granularity, periods=periods, scope=scope, scope_ids=[scope_id]
        ).get(scope_id, {})
        if user.is_manager
        else per_person.get(scope_id, {})
    )
    rows = [
        _person_row(
            name,
            pk,
            per_person.get(pk, {}),
            periods,
            selectors.brier_score(calibration=calibration, granularity=granularity, key=f"user:{pk}"),
        )
        for pk, name in people.items()
        if pk in per_person
    ]
    # The most over-forecast first: whose forecast to discount.
    rows.sort(key=lambda r: (r["pooled_value"] is None, -(r["pooled_value"] or 0), r["name"]))
    trend = charts.lines_chart(
        title=_("Accuracy and bias of the frozen forecast"),
        periods=periods,
        lines=[
            (str(FROZEN_FORECAST_ACCURACY.label), trend_series.get(FROZEN_FORECAST_ACCURACY.code, {}), "y"),
            (str(FROZEN_FORECAST_BIAS.label), trend_series.get(FROZEN_FORECAST_BIAS.code, {}), "y"),
        ],
        y_title="%",
    )
    brier_key = "company" if user.is_manager else f"user:{user.pk}"
    return {
        "granularity": granularity,
        "current": current,
        "current_label": charts.period_label(current),
        "frozen": selectors.frozen_forecast_for(user=user, period=current, scope=scope, scope_id=scope_id),
        "trend": trend,
        "rows": rows,
        "calibration": calibration,
        "stages": selectors.stage_calibration_list(calibration=calibration) if user.is_manager else None,
        "brier": selectors.brier_score(calibration=calibration, granularity=granularity, key=brier_key),
        "min_calibration_deals": selectors.MIN_CALIBRATION_DEALS,
        "accuracy_kpi": FROZEN_FORECAST_ACCURACY,
        "bias_kpi": FROZEN_FORECAST_BIAS,
    }


def stage_probability_apply(*, form: StageProbabilityApplyForm, actor: User) -> tuple[str | None, str]:
    """Apply the suggestion the (bound) form carries: (the error to show, or None; the message that says
    what changed, or "")."""
    if not form.is_valid():
        return form.errors_text(), ""
    stage, probability, expected = (form.cleaned_data[name] for name in ("stage", "probability", "expected"))
    try:
        services.stage_probability_apply(stage=stage, probability=probability, expected=expected, actor=actor)
    except ValidationError as exc:
        return " ".join(exc.messages), ""
    done = _(
        "%(stage)s now has %(new)s %%. Forecasts frozen from now on use it; those frozen "
        "before keep %(old)s %%."
    ) % {"stage": stage, "new": probability, "old": expected}
    return None, done
