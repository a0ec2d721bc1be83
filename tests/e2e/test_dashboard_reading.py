"""How the dashboard reads its own numbers, in a real browser (KPIS.md §10): a running period says it is to
date, a change that is noise is not coloured, an agent's first screen is service, the go-live page shows
formatted inputs."""

import re
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from crm.models import CompanySettings
from metrics.models import KpiSnapshot, Scope
from metrics.periods import period_of
from tests.e2e.conftest import sign_in
from tests.factories import make_agent, make_manager

pytestmark = pytest.mark.django_db(transaction=True)


def _snap(code, period, value, *, scope=Scope.COMPANY, scope_id="", **fields):
    KpiSnapshot.objects.create(
        kpi=code,
        granularity=period.granularity,
        period_start=period.start,
        period_end=period.end,
        scope=scope,
        scope_id=scope_id,
        value=Decimal(value),
        computed_at=timezone.now(),
        definition_version=1,
        **fields,
    )


def test_manager_sees_a_to_date_period_and_noise_left_uncoloured(page, shot):
    make_manager(username="greta")
    last = period_of(timezone.now(), "month").previous()
    # 30 % of 40 closed deals against 25 % of 40: +5 pp, within normal variation.
    _snap("win_rate", last.previous(), "25", numerator=10, denominator=40, sample_size=40)
    _snap("win_rate", last, "30", numerator=12, denominator=40, sample_size=40)
    sign_in(page, "greta")
    page.goto("/metrics/")
    expect(page.locator(".scope-line")).to_contain_text(re.compile(r"month to date, \d+ of \d+ days"))
    page.get_by_role("link", name="Show the last complete period").click()
    expect(page.locator(".scope-line")).not_to_contain_text("to date")
    card = page.locator(".kpi-card", has_text="Win rate")
    expect(card).to_contain_text("+5.0 pp")
    expect(card).to_contain_text("within normal variation")
    expect(card.locator(".kpi-change")).not_to_have_class(re.compile(r"\b(good|bad)\b"))
    expect(page.locator(".scorecard")).to_contain_text("Are sales growing?")
    shot(page, "dashboard-scorecard")


def test_an_agents_first_screen_is_service(page):
    agent = make_agent(username="sam")
    now = period_of(timezone.now(), "month")
    _snap("frt_median", now, "2.5", scope=Scope.USER, scope_id=str(agent.pk), sample_size=12)
    sign_in(page, "sam")
    page.goto("/metrics/")
    expect(page.locator(".kpi-family h2").first).to_have_text("Service")
    expect(page.locator(".kpi-family h2", has_text="Sales")).to_have_count(0)


def test_go_live_page_shows_formatted_inputs(page):
    make_manager(username="greta")
    company = CompanySettings.load()
    company.go_live_date = timezone.localdate().replace(year=timezone.localdate().year - 1, day=1)
    company.save()
    year = period_of(timezone.now(), "year").previous()
    extra = {
        "horizon": ["2024-12-02", "2026-12-01"],
        "costs": 120000.0,
        "gains": 535454.4493762399,
        "payback_months": 4.037878483442742,
    }
    _snap("crm_roi", year, "346.2", extra=extra)
    sign_in(page, "greta")
    page.goto("/metrics/go-live/")
    roi = page.locator("section", has_text="CRM ROI").first
    expect(roi).to_contain_text("2024-12 – 2026-12")
    expect(roi).to_contain_text("4.0 months")
    expect(roi).not_to_contain_text("535454.44")
    expect(roi).not_to_contain_text("payback_months")
