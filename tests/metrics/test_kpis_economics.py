"""Unit economics and ROI against hand-worked values (KPIS.md §5)."""

from datetime import date
from decimal import Decimal

import pytest

from crm import services
from crm.models import CompanySettings
from metrics.models import Scope
from tests.factories import make_closed_deal, make_crm_cost, make_customer, make_spend, make_user
from tests.metrics.kit import d, detail, local, row, value

pytestmark = pytest.mark.django_db

APRIL = date(2026, 4, 1)


@pytest.fixture
def march():
    """Four customers since 2025 (one churns in March), one new website customer, spend and revenue."""
    rep = make_user()
    c1, _c2, _c3, c4 = (make_customer(rep, at=local(2025, 1, 1)) for _ in range(4))
    services.customer_set_status(customer=c4, status="churned", actor=None, at=local(2026, 3, 10))
    make_customer(rep, at=local(2026, 3, 15), source="website")
    make_closed_deal(c1, created=local(2026, 3, 1), closed=local(2026, 3, 20), amount=Decimal(2000))
    make_spend(date(2026, 3, 1), "marketing", 900, channel="website")
    make_spend(date(2026, 3, 1), "sales", 300, channel="outbound")
    make_spend(date(2026, 3, 1), "retention", 400)
    make_spend(date(2026, 5, 1), "marketing", 500, channel="ads")
    return rep


def test_cac_company_and_per_source(march):
    # Company: (900 + 300) ÷ 1 new customer = 1200. Website: 900 ÷ 1. Outbound: 300 ÷ 0 → NULL.
    assert value("cac") == d("1200")
    assert value("cac", Scope.SOURCE, "website") == d("900")
    assert row("cac", Scope.SOURCE, "outbound").value is None
    # April: no spend entered → NULL (not 0). May: spend but no new customer → NULL.
    assert row("cac", first_day=APRIL).value is None
    assert row("cac", first_day=date(2026, 5, 1)).value is None
    # Spend is monthly: no weekly CAC.
    assert row("cac", granularity="week", first_day=date(2026, 3, 16)) is None
    assert value("cac", granularity="quarter", first_day=date(2026, 1, 1)) == d("1200")


def test_retention_cost_per_retained_customer(march):
    # 400 retention spend ÷ 3 customers active at the start and the end of March (c4 churned).
    assert value("retention_cost_per_customer") == d("133.333333")
    assert row("retention_cost_per_customer", first_day=APRIL).value is None


def test_clv_churn_based(march):
    # ARPA = 2000 won ÷ 5 customers active in March = 400; × 60 % margin = 240; churn = 1 ÷ 4 = 25 %
    # → CLV = 240 ÷ 0.25 = 960.
    r = row("clv")
    assert r.value == Decimal(960)
    assert r.extra.arpa == 400.0
    assert r.extra.churn_rate_percent == 25.0
    # February: nobody churned → CLV cannot be computed (NULL, not infinite).
    assert row("clv", first_day=date(2026, 2, 1)).value is None


def test_clv_to_cac(march):
    # 960 ÷ 1200 = 0.8.
    assert value("clv_cac_ratio") == d("0.8")
    assert row("clv_cac_ratio", first_day=APRIL).value is None


@pytest.fixture
def roi_inputs():
    company = CompanySettings.load()
    company.go_live_date = date(2026, 1, 1)
    company.save()
    rep = make_user(at=local(2025, 12, 1))  # one licensed user over January–March 2026
    customer = make_customer(rep, at=local(2024, 1, 1))
    for month, won in ((3, True), (5, True), (7, False), (9, False)):  # baseline 2025: 50 %
        make_closed_deal(customer, created=local(2025, month, 1), closed=local(2025, month, 10), won=won)
    for month, won in ((1, True), (2, True), (3, True), (3, False)):  # since go-live: 75 %
        make_closed_deal(customer, created=local(2026, month, 1), closed=local(2026, month, 10), won=won)
    make_crm_cost(date(2025, 12, 1), 1000, kind="one_off")
    make_crm_cost(date(2026, 1, 1), 100)


def test_crm_roi_since_go_live(roi_inputs):
    # Gains Jan–Mar: (75 % − 50 %) × 4000 closed × 60 % = 600, plus 4 h × 45 × 3 user-months = 540.
    # Costs: 1000 one-off + 3 × 100 = 1300 → ROI = (1140 − 1300) ÷ 1300 = −12.307692 %.
    r = row("crm_roi")
    assert r.numerator == Decimal(-160)
    assert r.denominator == Decimal(1300)
    assert value("crm_roi") == d("-12.307692")
    assert r.extra.win_rate_baseline == 50.0
    assert r.extra.win_rate_after_go_live == 75.0
    assert r.extra.licensed_user_months == 3
    # The uplift of 25 pp from 3 of 4 against 2 of 4 is anything from −32.0 to +65.5 pp (Newcombe's
    # interval): the ROI is then (uplift × 4000 × 60 % + 540 − 1300) ÷ 1300, from −117 % to +62 %.
    assert (r.extra.win_rate_uplift_low, r.extra.win_rate_uplift_high) == pytest.approx(
        (-31.96, 65.53), abs=0.01
    )
    low, high = ((p / 100 * 4000 * 0.6 + 540 - 1300) / 1300 * 100 for p in (-31.96, 65.53))
    assert (r.extra.roi_low, r.extra.roi_high) == pytest.approx((low, high), abs=0.05)
    assert value("crm_roi", granularity="quarter", first_day=date(2026, 1, 1)) == d("-12.307692")
    # Before go-live: no value.
    assert row("crm_roi", first_day=date(2025, 12, 1)).value is None


def test_crm_roi_needs_a_go_live_date(march):
    r = row("crm_roi")
    assert r.value is None
    assert detail(r.extra) == {"missing": "go_live_date"}


def test_crm_roi_range_from_a_full_rebuild(roi_inputs):
    """The whole engine, as the nightly rebuild runs it, with a history covering the year before go-live."""
    from metrics.models import KpiSnapshot
    from metrics.services import snapshots_rebuild_all

    old = make_customer(make_user(at=local(2024, 1, 1)), at=local(2024, 1, 1))
    make_closed_deal(old, created=local(2024, 6, 1), closed=local(2024, 6, 10), won=False)

    assert snapshots_rebuild_all().status == "ok"
    year = KpiSnapshot.objects.get(
        kpi="crm_roi", granularity="year", scope=Scope.COMPANY, period_start__year=2026
    )
    assert year.extra["win_rate_after_go_live"] == 75.0
    assert year.extra["roi_low"] < year.value < year.extra["roi_high"]
