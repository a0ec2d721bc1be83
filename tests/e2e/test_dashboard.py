"""A manager opens the dashboard, changes the filters, opens a KPI and its drill-down — in a real browser."""

import re
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from crm.models import Customer
from metrics.models import KpiSnapshot, Scope
from metrics.periods import period_of
from tests.e2e.conftest import sign_in
from tests.factories import make_customer, make_manager, make_user

pytestmark = pytest.mark.django_db(transaction=True)


def _snapshots() -> None:
    for granularity in ("month", "quarter"):
        period = period_of(timezone.now(), granularity)
        for steps in range(6):
            p = period.previous(steps)
            for code, value in (
                ("revenue_won", 40000 + 3000 * steps),
                ("deals_won", 12 - steps),
                ("win_rate", 30 + steps),
                ("new_customers", 3),
            ):
                KpiSnapshot.objects.create(
                    kpi=code,
                    granularity=granularity,
                    period_start=p.start,
                    period_end=p.end,
                    scope=Scope.COMPANY,
                    value=Decimal(value),
                    numerator=Decimal(value),
                    computed_at=timezone.now(),
                    definition_version=1,
                )


def test_manager_filters_the_dashboard_and_drills_into_a_kpi(page, shot):
    make_manager(username="greta", first_name="Greta")
    customer = make_customer(make_user(), name="Nordwind Segel GmbH")
    Customer.objects.filter(pk=customer.pk).update(became_customer_at=timezone.now())
    _snapshots()
    sign_in(page, "greta")
    page.goto("/metrics/")
    expect(page.locator(".kpi-card").first).to_be_visible()
    expect(page.locator("[data-plotly='chart-revenue'] .main-svg").first).to_be_attached()
    shot(page, "dashboard")

    page.locator("select[name=granularity]").select_option("quarter")
    expect(page).to_have_url(re.compile(r"granularity=quarter"))
    expect(page.locator(".scope-line")).to_contain_text("Quarter")
    page.go_back()
    expect(page.locator(".scope-line")).to_contain_text("Month")

    page.get_by_role("link", name="New customers").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("New customers")
    expect(page.locator("#drilldown")).to_contain_text("Nordwind Segel GmbH")
    expect(page.locator("[data-plotly='chart-trend'] .main-svg").first).to_be_attached()
    shot(page, "kpi-detail")
