"""Charts a reader can trust: round ticks on second axes, no axis around a single value, empty charts
that say why, and readable per-person charts."""

from datetime import date
from decimal import Decimal

from django.utils import timezone

from metrics import charts
from metrics.kpis import get_kpi
from metrics.periods import Period
from metrics.selectors import SnapshotValues

MONTHS = [Period("month", date(2026, m, 1)) for m in (1, 2, 3, 4)]


def series(*values):
    return {
        p.first_day: SnapshotValues(Decimal(v), None, None, None, {}, False, timezone.now(), 1)
        for p, v in zip(MONTHS, values, strict=False)
        if v is not None
    }


def test_a_second_axis_gets_round_ticks():
    spec = charts.lines_chart(
        title="t",
        periods=MONTHS,
        lines=[("a", series(40, 50, 60, 70), "y"), ("b", series("13.3", "43", "72.8", "102.5"), "y2")],
        y2_title="b",
    )
    axis = spec["layout"]["yaxis2"]
    low, high, step = *axis["range"], axis["dtick"]
    assert step in (10, 20, 25, 50) and low == 0 and high >= 102.5
    assert (high / step).is_integer()


def test_no_axis_is_scaled_around_a_single_value():
    spec = charts.kpi_trend_chart(
        kpi=get_kpi("win_rate"),
        periods=MONTHS,
        series=series(None, None, None, 25),
        targets={},
        unit_label="%",
    )
    low, high = spec["layout"]["yaxis"]["range"]
    assert low == 0 and 25 < high <= 30


def test_an_empty_chart_says_why():
    spec = charts.kpi_trend_chart(
        kpi=get_kpi("win_rate"), periods=MONTHS, series={}, targets={}, unit_label="%"
    )
    assert spec["layout"]["annotations"][0]["text"] == "No data for these periods yet"
    both_axes = charts.lines_chart(
        title="t", periods=MONTHS, lines=[("a", {}, "y"), ("b", {}, "y2")], y2_title="b"
    )
    assert (
        both_axes["layout"]["yaxis"]["visible"] is False and both_axes["layout"]["yaxis2"]["visible"] is False
    )


def test_many_people_get_horizontal_bars():
    names = [f"Person {i}" for i in range(20)]
    spec = charts.by_user_chart(title="t", names=names, bars=list(range(20)), bar_name="b")
    bar = spec["data"][0]
    assert bar["orientation"] == "h" and bar["y"] == names
    assert spec["layout"]["yaxis"]["autorange"] == "reversed" and spec["layout"]["height"] > 400
    few = charts.by_user_chart(title="t", names=names[:3], bars=[1, 2, 3], bar_name="b")
    assert "orientation" not in few["data"][0]


def test_csat_and_ces_get_interval_whiskers():
    from metrics.dashboard import _interval_of

    csat = get_kpi("csat")
    values = {
        MONTHS[0].first_day: SnapshotValues(
            Decimal("80"), None, None, 50, {"wilson_low": 67.0, "wilson_high": 89.0}, False, timezone.now(), 1
        )
    }
    spec = charts.lines_chart(
        title="t", periods=MONTHS[:1], lines=[("CSAT", values, "y", _interval_of(csat))]
    )
    whiskers = spec["data"][0]["error_y"]
    assert whiskers["array"] == [9.0] and whiskers["arrayminus"] == [13.0]
    assert _interval_of(get_kpi("deals_won")) is None


def test_a_running_period_is_drawn_against_the_same_days_of_the_one_before():
    now = Period("month", timezone.localdate().replace(day=1))
    periods = [now.previous(), now]
    compared = {"value": 300.0, "from": periods[0].first_day.isoformat(), "until": "", "days": 3}
    rows = {
        periods[0].first_day: SnapshotValues(Decimal(900), None, None, None, {}, False, timezone.now(), 1),
        now.first_day: SnapshotValues(
            Decimal(400), None, None, None, {"compared": compared}, False, timezone.now(), 1
        ),
    }
    spec = charts.kpi_trend_chart(
        kpi=get_kpi("revenue_won"), periods=periods, series=rows, targets={}, unit_label="EUR"
    )
    bars, mark = spec["data"][:2]
    # The running month's bar says it is to date; the month before carries a mark at its first days.
    assert bars["x"][1].endswith("(to date)") and bars["y"] == [900, 400]
    assert mark["x"] == [bars["x"][0]] and mark["y"] == [300.0]
    # A period that has ended is drawn as it is.
    ended = charts.kpi_trend_chart(
        kpi=get_kpi("revenue_won"), periods=MONTHS, series=series(1, 2, 3, 4), targets={}, unit_label="EUR"
    )
    assert len(ended["data"]) == 1 and not ended["data"][0]["x"][-1].endswith("(to date)")
