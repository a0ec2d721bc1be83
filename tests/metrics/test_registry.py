"""The registry is the single source of each KPI: nothing outside its family module names it, every chart,
breakdown, detail and section is declared on it, and its details are typed."""

import re
from pathlib import Path

import pytest

from metrics.kpis import charts, in_section, registry
from metrics.kpis.base import Section, Significance, Unit
from metrics.kpis.details import Detail

ROOT = Path(__file__).resolve().parents[2]
# The registry package: the family modules, and the engine whose datasets and measures may share a name
# with a KPI ("new_customers" is a dataset and a KPI) without referring to it.
REGISTRY = ROOT / "metrics" / "kpis"
# Words that are KPI codes and also other things: the survey kind "csat" (surveys.models.Survey.Kind).
OTHER_MEANINGS = {"csat"}


def _app_sources() -> list[Path]:
    found = []
    for folder in ("accounts", "crm", "metrics", "surveys", "templates"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".html", ".txt") and "migrations" not in path.parts:
                found.append(path)
    return [p for p in found if REGISTRY not in p.parents]


def test_no_kpi_code_is_named_outside_its_family_module():
    codes = set(registry()) - OTHER_MEANINGS
    alternatives = "|".join(map(re.escape, sorted(codes)))
    pattern = re.compile(rf"""["']({alternatives})["']""")
    named = [
        f"{path.relative_to(ROOT)}: {match}"
        for path in _app_sources()
        for match in pattern.findall(path.read_text())
    ]
    assert named == []


def test_every_chart_sits_on_the_dashboard_once_in_order():
    found = charts()
    orders = [chart.order for chart, _plots in found]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    ids = [chart.id for chart, _plots in found]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"chart-[a-z0-9-]+", i) for i in ids)
    for chart, plots in found:
        if chart.kind in ("revenue", "by_person"):
            assert "bars" in {plot.role for _kpi, plot in plots}, chart.id


def test_sections_list_their_kpis():
    assert [k.code for k in in_section(Section.GO_LIVE_ROI)] == ["crm_roi"]
    assert len(in_section(Section.WEEKLY_REPORT)) == 10
    assert {k.unit for k in in_section(Section.CHANNELS)} >= {Unit.PERCENT, Unit.CURRENCY}


@pytest.mark.parametrize("kpi", list(registry().values()), ids=list(registry()))
def test_each_kpi_declares_what_its_numbers_mean(kpi):
    assert issubclass(kpi.detail, Detail)
    assert kpi.significance in Significance.values
    if kpi.significance in (Significance.PROPORTION, Significance.NPS, Significance.MEAN):
        assert kpi.min_sample > 0, "a tested KPI needs a minimum sample"
    # Every detail class reads back what it writes, and what older rows lack.
    assert kpi.details_of(None) == kpi.detail()
    assert kpi.details_of(kpi.detail().to_json()) == kpi.detail()


# KPIs whose running week or month is still compared with the whole period before (KPIS.md §10.1), and
# why. Every other KPI of weeks or months carries the same elapsed days of the period before.
WHOLE_PERIOD_COMPARED = {
    "sales_growth_pop": "is itself a like-for-like comparison of revenue",
    "sales_growth_yoy": "is itself a like-for-like comparison of revenue",
    "funnel_conversion": "a cohort followed to its outcome",
    "forecast_accuracy": "has no value until its period has ended",
    "frozen_forecast_accuracy": "has no value until its period has ended",
    "frozen_forecast_bias": "has no value until its period has ended",
    "cac": "spend is entered per month",
    "retention_cost_per_customer": "spend is entered per month",
    "clv": "from a year of revenue and the churn of whole periods",
    "clv_cac_ratio": "from a year of revenue and the churn of whole periods",
    "crm_roi": "a go-live comparison of whole months",
    "cohort_retention": "a cohort followed to its outcome",
    "net_revenue_retention": "two 12-month windows: a running period's end today, as long as any other's",
    "gross_revenue_retention": "two 12-month windows: a running period's end today, as long as any other's",
    "revenue_waterfall": "is itself a like-for-like comparison of revenue (the same days while it runs)",
}

# What a KPI's builder offers the engine's like-for-like comparison (``services._with_like_for_like``).
LIKE_FOR_LIKE_HOOKS = ("facts_dataset", "statistics_dataset", "at_offset")


def test_every_kpi_of_weeks_or_months_compares_a_running_period_like_for_like_or_says_why_not():
    def like_for_like(kpi) -> bool:
        builder = kpi.compute
        return any(getattr(builder, name, None) is not None for name in LIKE_FOR_LIKE_HOOKS)

    candidates = [
        kpi
        for kpi in registry().values()
        if not kpi.current_only and {"week", "month"} & set(kpi.granularities)
    ]
    without = {kpi.code for kpi in candidates if not like_for_like(kpi)}
    assert without == set(WHOLE_PERIOD_COMPARED)
