"""Plotly figure builders: pure functions from snapshot data to a Plotly figure spec (``{"data", "layout"}``).

The specs are plain JSON for plotly.js, built as dicts rather than through ``plotly.graph_objects`` (whose
validation costs milliseconds per figure on every page view). Templates emit them with ``json_script`` and
``static/js/charts.js`` draws them; no inline scripts. Labels are translated in the request's language.
"""

import math
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext as _

from metrics.kpis.base import Kpi, Unit
from metrics.models import KpiTarget
from metrics.periods import Period
from metrics.selectors import SnapshotValues

PALETTE = ["#2f5bea", "#1f8a4c", "#d9822b", "#c8362f", "#6a42c2", "#0f8b8d", "#8a6d3b"]
PROMOTER, PASSIVE, DETRACTOR = "#1f8a4c", "#c9ced8", "#c8362f"

Spec = dict[str, Any]


def period_label(period: Period) -> str:
    day = period.first_day
    if period.granularity == "week":
        year, week, _weekday = day.isocalendar()
        return f"{year}-W{week:02d}"
    if period.granularity == "quarter":
        return f"{day.year} Q{(day.month - 1) // 3 + 1}"
    if period.granularity == "year":
        return str(day.year)
    return f"{day:%Y-%m}"


def axis_label(period: Period) -> str:
    """A period on a chart's axis: a week or month still running is marked as to date (KPIS.md §10.1)."""
    label = period_label(period)
    if period.start <= timezone.now() < period.end:
        return _("%(period)s (to date)") % {"period": label}
    return label


def _num(value: Decimal | float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _layout(title: str, *, y_title: str = "", y2_title: str = "", **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {
            "text": title,
            "x": 0.01,
            "xanchor": "left",
            "y": 0.98,
            "yanchor": "top",
            "yref": "container",
            "font": {"size": 15},
        },
        "margin": {"l": 56, "r": 56 if y2_title else 16, "t": 78, "b": 48},
        # The legend sits between the title and the plot, clear of the (rotated) period labels.
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom"},
        "hovermode": "x unified",
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "colorway": PALETTE,
        "font": {
            "family": "system-ui, -apple-system, 'Segoe UI', 'PingFang SC', 'Noto Sans CJK SC', sans-serif"
        },
        "yaxis": {"title": {"text": y_title}, "gridcolor": "#e3e6ec", "zerolinecolor": "#c9ced8"},
        "xaxis": {"type": "category", "tickangle": -45, "automargin": True},
    }
    if y2_title:
        layout["yaxis2"] = {
            "title": {"text": y2_title},
            "overlaying": "y",
            "side": "right",
            "showgrid": False,
        }
    layout.update(extra)
    return layout


# Axes a reader can trust (applied to every figure built here)
# ---------------------------------------------------------------------------------------------------------

# More people than this on a per-person chart: horizontal bars, one row each, names readable.
HORIZONTAL_FROM = 12


def _nice_step(span: float, ticks: int = 5) -> float:
    """A round tick step (1, 2, 2.5 or 5 × 10^k) giving about ``ticks`` intervals over ``span``."""
    raw = span / ticks if span > 0 else 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def _nice_axis(values: list[float]) -> dict[str, Any]:
    """A range from a round number to a round number, with round ticks; zero stays in it for data that
    do not cross it, and a single value (or all values equal) is not blown up around itself."""
    lo, hi = min(min(values), 0.0), max(max(values), 0.0)
    if lo == hi:
        hi = 1.0
    # A little headroom, so the highest (or lowest) point does not sit on the frame.
    pad = (hi - lo) * 0.05
    lo, hi = (lo - pad if lo < 0 else lo), (hi + pad if hi > 0 else hi)
    step = _nice_step(hi - lo)
    return {"range": [math.floor(lo / step) * step, math.ceil(hi / step) * step], "dtick": step, "tick0": 0}


def _axis_values(data: list[dict], axis: str) -> list[float]:
    found: list[float] = []
    for trace in data:
        if trace.get("type") in ("funnel", "pie") or trace.get("yaxis", "y") != axis:
            continue
        found += [v for v in trace.get("y") or () if isinstance(v, int | float)]
        errors = (trace.get("error_y") or {}).get("array") or ()
        found += [
            v + e for v, e in zip(trace.get("y") or (), errors, strict=False) if isinstance(v, int | float)
        ]
    return found


def tidy(spec: Spec) -> Spec:
    """Round ticks on a second axis (no more 13.3 / 43 / 72.8), no axis scaled around a single value, and
    an empty figure that says why it is empty."""
    data, layout = spec["data"], spec["layout"]
    if not any(_axis_values(data, axis) for axis in ("y", "y2")) and not any(
        t.get("type") == "funnel" or t.get("orientation") == "h" for t in data
    ):
        layout["annotations"] = [
            {
                "text": _("No data for these periods yet"),
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "font": {"size": 14, "color": "#667085"},
            }
        ]
        for key in ("xaxis", "yaxis", "yaxis2"):
            if key in layout or key != "yaxis2":
                layout[key] = {**layout.get(key, {}), "visible": False}
        layout["showlegend"] = False
        return spec
    for axis, key in (("y", "yaxis"), ("y2", "yaxis2")):
        values = _axis_values(data, axis)
        if key not in layout or not values or "range" in layout[key]:
            continue
        if axis == "y2" or len(set(values)) == 1:
            layout[key] |= _nice_axis(values)
    return spec


def _values(series: dict[date, SnapshotValues], periods: Sequence[Period]) -> list[float | None]:
    return [_num(series[p.first_day].value) if p.first_day in series else None for p in periods]


def _target_trace(targets: dict[date, KpiTarget], periods: Sequence[Period], axis: str = "y") -> dict | None:
    values = [_num(targets[p.first_day].value) if p.first_day in targets else None for p in periods]
    if not any(v is not None for v in values):
        return None
    return {
        "type": "scatter",
        "mode": "markers",
        "name": _("Target"),
        "x": [axis_label(p) for p in periods],
        "y": values,
        "yaxis": axis,
        "marker": {"symbol": "line-ew-open", "size": 22, "color": "#1d2433", "line": {"width": 3}},
    }


def revenue_chart(
    *, periods: Sequence[Period], revenue: dict, deals_won: dict, forecast: dict, targets: dict, currency: str
) -> Spec:
    """Revenue won (bars) and deals won (line), with the weighted forecast for the current period."""
    x = [axis_label(p) for p in periods]
    current = periods[-1].first_day if periods else None
    data = [
        {
            "type": "bar",
            "name": _("Revenue won"),
            "x": x,
            "y": _values(revenue, periods),
            "marker": {"color": PALETTE[0]},
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": _("Deals won"),
            "x": x,
            "y": _values(deals_won, periods),
            "yaxis": "y2",
            "line": {"color": PALETTE[2]},
        },
    ]
    if current in forecast and forecast[current].value is not None:
        data.append(
            {
                "type": "bar",
                "name": _("Forecast (weighted)"),
                "x": [x[-1]],
                "y": [_num(forecast[current].value)],
                "marker": {"color": "rgba(47, 91, 234, .25)", "line": {"color": PALETTE[0], "width": 1.5}},
                "width": 0.5,
            }
        )
    if target := _target_trace(targets, periods):
        data.append(target)
    layout = _layout(_("Revenue and won deals"), y_title=currency, y2_title=_("deals"), barmode="overlay")
    return tidy({"data": data, "layout": layout})


def funnel_chart(kpi: Kpi, snapshot: SnapshotValues | None) -> Spec | None:
    """Stage-to-stage funnel of the deals created in the period (cohort, implied progression)."""
    steps = kpi.details_of(snapshot.extra).steps if snapshot else []
    if not steps or not any(s.reached for s in steps):
        return None
    return {
        "data": [
            {
                "type": "funnel",
                "y": [_(s.stage) for s in steps],
                "x": [s.reached for s in steps],
                "textinfo": "value+percent initial",
                "marker": {"color": PALETTE[0]},
            }
        ],
        "layout": _layout(
            _("Funnel: deals created in the period"),
            margin={"l": 120, "r": 16, "t": 44, "b": 24},
            hovermode="closest",
            xaxis={},
        ),
    }


def by_user_chart(
    *,
    title: str,
    names: Sequence[str],
    bars: Sequence[float | None],
    bar_name: str,
    line: Sequence[float | None] | None = None,
    line_name: str = "",
    y_title: str = "",
    y2_title: str = "",
) -> Spec:
    """One bar per person (sorted by the caller), optionally a second measure as dots on a right axis."""
    data: list[dict] = [
        {"type": "bar", "name": bar_name, "x": list(names), "y": list(bars), "marker": {"color": PALETTE[0]}}
    ]
    if line is not None:
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": line_name,
                "x": list(names),
                "y": list(line),
                "yaxis": "y2",
                "marker": {"color": PALETTE[2], "size": 9},
            }
        )
    layout = _layout(
        title, y_title=y_title, y2_title=y2_title if line is not None else "", hovermode="closest"
    )
    layout["xaxis"] = {"type": "category", "tickangle": -35, "automargin": True}
    if len(names) > HORIZONTAL_FROM:
        # Many people: horizontal bars, the first of the caller's order on top, a row per person.
        for trace in data:
            trace["x"], trace["y"] = trace["y"], trace["x"]
            trace["orientation"] = "h"
            if trace.get("yaxis") == "y2":
                trace.pop("yaxis")
                trace["xaxis"] = "x2"
        layout["xaxis"], layout["yaxis"] = (
            {"title": {"text": y_title}, "gridcolor": "#e3e6ec", "zeroline": True},
            {"type": "category", "autorange": "reversed", "automargin": True},
        )
        if line is not None:
            layout.pop("yaxis2", None)
            layout["xaxis2"] = {
                "title": {"text": y2_title},
                "overlaying": "x",
                "side": "top",
                "showgrid": False,
            }
        layout["height"] = 120 + 22 * len(names)
        return {"data": data, "layout": layout}
    return tidy({"data": data, "layout": layout})


def nps_chart(*, kpi: Kpi, periods: Sequence[Period], series: dict[date, SnapshotValues], title: str) -> Spec:
    """Promoter / passive / detractor shares as stacked bars, NPS as a line with its 95 % margin of error."""
    x = [axis_label(p) for p in periods]
    rows = [series.get(p.first_day) for p in periods]
    details = [kpi.details_of(r.extra) if r else None for r in rows]

    def share(name: str) -> list[float | None]:
        return [getattr(d, name) if d else None for d in details]

    nps = [round(r.value) if r and r.value is not None else None for r in rows]
    moe = share("moe95")
    data = [
        {
            "type": "bar",
            "name": _("Promoters %"),
            "x": x,
            "y": share("promoters_pct"),
            "marker": {"color": PROMOTER},
        },
        {
            "type": "bar",
            "name": _("Passives %"),
            "x": x,
            "y": share("passives_pct"),
            "marker": {"color": PASSIVE},
        },
        {
            "type": "bar",
            "name": _("Detractors %"),
            "x": x,
            "y": share("detractors_pct"),
            "marker": {"color": DETRACTOR},
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": _("NPS ± 95 % margin"),
            "x": x,
            "y": nps,
            "yaxis": "y2",
            "line": {"color": "#1d2433", "width": 2},
            "error_y": {"type": "data", "array": [m or 0 for m in moe], "visible": True, "color": "#667085"},
        },
    ]
    layout = _layout(title, y_title=_("share of answers (%)"), y2_title="NPS", barmode="stack")
    layout["yaxis"]["range"] = [0, 100]
    layout["yaxis2"]["range"] = [-100, 100]
    layout["yaxis2"]["dtick"] = 50
    return tidy({"data": data, "layout": layout})


def lines_chart(
    *,
    title: str,
    periods: Sequence[Period],
    lines: Iterable[tuple[str, dict, str]],
    y_title: str = "",
    y2_title: str = "",
    targets: dict | None = None,
) -> Spec:
    """Several KPI series as lines; each line is (name, series, axis "y" or "y2"), optionally with a
    function giving a snapshot's 95 % interval (low, high), drawn as whiskers."""
    x = [axis_label(p) for p in periods]
    data = []
    for name, series, axis, *interval in lines:
        trace = {
            "type": "scatter",
            "mode": "lines+markers",
            "name": name,
            "x": x,
            "y": _values(series, periods),
            "yaxis": axis,
            "connectgaps": False,
        }
        if interval and interval[0] is not None:
            bounds = [interval[0](series[p.first_day]) if p.first_day in series else None for p in periods]
            if any(bounds):
                pairs = list(zip(bounds, trace["y"], strict=True))
                highs = [round(b[1] - v, 4) if b and v is not None else 0 for b, v in pairs]
                lows = [round(v - b[0], 4) if b and v is not None else 0 for b, v in pairs]
                trace["error_y"] = {
                    "type": "data",
                    "symmetric": False,
                    "array": highs,
                    "arrayminus": lows,
                    "visible": True,
                    "thickness": 1,
                    "color": "#667085",
                }
        data.append(trace)
    if targets and (target := _target_trace(targets, periods)):
        data.append(target)
    return tidy({"data": data, "layout": _layout(title, y_title=y_title, y2_title=y2_title)})


def kpi_trend_chart(
    *, kpi: Kpi, periods: Sequence[Period], series: dict, targets: dict, unit_label: str
) -> Spec:
    """One KPI over time (bars for flows and amounts, a line for rates), with its targets."""
    as_bars = kpi.unit in (Unit.COUNT, Unit.CURRENCY)
    x = [axis_label(p) for p in periods]
    values = _values(series, periods)
    if kpi.unit == Unit.POINTS:
        values = [None if v is None else round(v) for v in values]
    trace: dict[str, Any] = {"name": str(kpi.label), "x": x, "y": values}
    # Periods below the KPI's minimum sample are drawn hollow (KPIS.md §10.2): not to be read as real.
    sizes = [getattr(series.get(p.first_day), "sample_size", None) for p in periods]
    low = [n is not None and n < kpi.min_sample for n in sizes]
    if as_bars:
        trace |= {"type": "bar", "marker": {"color": PALETTE[0]}}
        if any(low):
            trace["marker"] |= {
                "color": ["rgba(0,0,0,0)" if is_low else PALETTE[0] for is_low in low],
                "line": {"color": PALETTE[0], "width": 1.5},
            }
    else:
        trace |= {"type": "scatter", "mode": "lines+markers"}
        if any(low):
            trace["marker"] = {"symbol": ["circle-open" if is_low else "circle" for is_low in low], "size": 8}
    data = [trace]
    if to_date := _same_days_trace(kpi, periods, series, x):
        data.append(to_date)
    if target := _target_trace(targets, periods):
        data.append(target)
    return tidy({"data": data, "layout": _layout(str(kpi.label), y_title=unit_label)})


def _same_days_trace(kpi: Kpi, periods: Sequence[Period], series: dict, x: list[str]) -> dict | None:
    """While the last period runs: a mark on the period before at its value over the same elapsed days
    (KPIS.md §10.1), so a bar to date is read against how far the one before had got, not its whole."""
    if len(periods) < 2 or not (periods[-1].start <= timezone.now() < periods[-1].end):
        return None
    snapshot = series.get(periods[-1].first_day)
    compared = kpi.details_of(snapshot.extra).compared if snapshot is not None else None
    if not compared or compared.get("value") is None:
        return None
    value = compared["value"]
    return {
        "type": "scatter",
        "mode": "markers",
        "name": _("The period before, same days"),
        "x": [x[-2]],
        "y": [round(value) if kpi.unit == Unit.POINTS else value],
        "marker": {"symbol": "line-ew-open", "size": 30, "line": {"width": 3, "color": PALETTE[2]}},
    }


# Cohorts and revenue retention (KPIS.md §10.9)
# ---------------------------------------------------------------------------------------------------------

GAIN, LOSS, TOTAL = "#1f8a4c", "#c8362f", PALETTE[0]


def waterfall_chart(*, title: str, steps: Sequence[tuple[str, float, str]], currency: str) -> Spec:
    """Bars from the previous total to the current one. ``steps``: (label, amount, measure), the measure
    "absolute" for the starting total, "relative" for a move (negative for revenue lost) and "total" for the
    end, which plotly adds up from the moves (so the bars show that they add up)."""
    from django.utils.formats import number_format

    def shown(amount: float) -> str:
        return f"{'+' if amount > 0 else ''}{number_format(amount, 0, force_grouping=True)}"

    data = [
        {
            "type": "waterfall",
            "orientation": "v",
            "x": [label for label, _amount, _measure in steps],
            "y": [0 if measure == "total" else amount for _label, amount, measure in steps],
            "measure": [measure for _label, _amount, measure in steps],
            "text": [
                shown(amount) if measure == "relative" else number_format(amount, 0, force_grouping=True)
                for _label, amount, measure in steps
            ],
            "textposition": "outside",
            "cliponaxis": False,
            "connector": {"line": {"color": "#c9ced8", "width": 1}},
            "increasing": {"marker": {"color": GAIN}},
            "decreasing": {"marker": {"color": LOSS}},
            "totals": {"marker": {"color": TOTAL}},
            "hovertemplate": "%{x}: %{text} " + currency + "<extra></extra>",
        }
    ]
    layout = _layout(title, y_title=currency, showlegend=False, hovermode="closest")
    layout["xaxis"] = {"type": "category", "automargin": True}
    return {"data": data, "layout": layout}


def cohort_heatmap(*, title: str, rows: Sequence[dict[str, Any]], months: int, low_n: int) -> Spec | None:
    """Cohort × months since joining: the share of each cohort active at the end of each month. ``rows``
    (oldest first): ``label``, ``size`` and ``shares`` / ``active`` per month (None where not yet ended).
    Cohorts of fewer than ``low_n`` customers are drawn grey and faint (KPIS.md §10.2: not read as real)."""
    if not rows or months <= 0:
        return None
    x = list(range(months))
    labels = [f"{row['label']} · n = {row['size']}" for row in rows]

    def trace(low: bool) -> dict[str, Any]:
        z, hover = [], []
        for row in rows:
            mine = (row["size"] < low_n) == low
            shares = (list(row["shares"]) + [None] * months)[:months]
            active = (list(row["active"]) + [None] * months)[:months]
            z.append([share if mine else None for share in shares])
            hover.append(
                [
                    _("%(active)s of %(size)s active") % {"active": a, "size": row["size"]}
                    if a is not None
                    else ""
                    for a in active
                ]
            )
        return {
            "type": "heatmap",
            "x": x,
            "y": labels,
            "z": z,
            "zmin": 0,
            "zmax": 100,
            "customdata": hover,
            "xgap": 1,
            "ygap": 1,
            "hoverongaps": False,
            "colorscale": [[0, "#e8eaef"], [1, "#c9ced8"]] if low else [[0, "#f4f7fe"], [1, "#1d3fae"]],
            "showscale": not low,
            "opacity": 0.55 if low else 1,
            "colorbar": {"title": {"text": "%"}, "thickness": 10},
            "hovertemplate": "%{y}<br>" + _("month") + " %{x}: %{z:.1f} %<br>%{customdata}<extra></extra>",
        }

    layout = _layout(title, hovermode="closest", showlegend=False)
    layout["xaxis"] = {
        "title": {"text": _("months since joining")},
        "dtick": 1,
        "side": "top",
        "automargin": True,
    }
    layout["yaxis"] = {"autorange": "reversed", "automargin": True, "type": "category"}
    layout["margin"] = {"l": 8, "r": 8, "t": 96, "b": 16}
    layout["height"] = max(260, 120 + 22 * len(rows))
    data = [trace(low=False)]
    if any(row["size"] < low_n for row in rows):
        data.append(trace(low=True))
    return {"data": data, "layout": layout}
