"""How the dashboard reads its own numbers, in a real browser (KPIS.md §10), with "today" frozen on the
4th of December (the server runs in this process: its clock is the frozen one): a running period says it
is to date and compares like for like, a change that is noise is not coloured, an agent's first screen is
service, the go-live page shows formatted inputs."""

import re
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from playwright.sync_api import expect

from crm.models import CompanySettings
from metrics.models import KpiSnapshot, Scope
from metrics.periods import period_of
from tests.e2e.conftest import sign_in
from tests.factories import make_agent, make_manager

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fourth_of_december():
    """Today is Friday 4 December 2026, 10:00 in the reporting time zone: the first week of a month."""
    with time_machine.travel(datetime(2026, 12, 4, 10, 0, tzinfo=ZoneInfo(settings.TIME_ZONE)), tick=True):
        yield


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
    december = period_of(timezone.now(), "month")
    last = december.previous()
    # December so far: 9 of 10 won, against 1–4 November, when 2 of 10 were: a real change, compared
    # like for like (not with all of November's 12 of 40).
    to_date = {"value": 20.0, "numerator": 2, "denominator": 10, "n": 10, "from": "2026-11-01",
               "until": "2026-11-05", "days": 4}  # fmt: skip
    _snap(
        "win_rate", december, "90", numerator=9, denominator=10, sample_size=10, extra={"compared": to_date}
    )
    # 30 % of 40 closed deals against 25 % of 40: +5 pp, within normal variation.
    _snap("win_rate", last.previous(), "25", numerator=10, denominator=40, sample_size=40)
    _snap("win_rate", last, "30", numerator=12, denominator=40, sample_size=40)
    sign_in(page, "greta")
    page.goto("/metrics/")
    expect(page.locator(".scope-line")).to_contain_text("month to date, 4 of 31 days")
    card = page.locator(".kpi-card", has_text="Win rate")
    expect(card).to_contain_text("+70.0 pp")
    expect(card).to_contain_text("vs November 1 – November 4")
    expect(card.locator(".kpi-change")).to_have_class(re.compile(r"\bgood\b"))
    page.get_by_role("link", name="Show the last complete period").click()
    expect(page.locator(".scope-line")).not_to_contain_text("to date")
    card = page.locator(".kpi-card", has_text="Win rate")
    expect(card).to_contain_text("+5.0 pp")
    expect(card).not_to_contain_text("vs November")
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
        "win_rate_after_go_live": 31.25,
        "win_rate_baseline": 27.0,
        "win_rate_uplift_low": 1.234567,
        "win_rate_uplift_high": 7.3,
        "roi_low": 112.49,
        "roi_high": 611.6,
    }
    _snap("crm_roi", year, "346.2", extra=extra)
    sign_in(page, "greta")
    page.goto("/metrics/go-live/")
    roi = page.locator("section", has_text="CRM ROI").first
    expect(roi).to_contain_text("2024-12 – 2026-12")
    expect(roi).to_contain_text("4.0 months")
    expect(roi).to_contain_text("Win rate since go-live31.3 %")  # 31.25, rounded half up
    expect(roi).to_contain_text("+4.3 pp (95 % interval +1.2 pp to +7.3 pp)")
    expect(roi).to_contain_text("112 % to 612 %")  # rounded, not cut off
    expect(roi).not_to_contain_text("535454.44")
    expect(roi).not_to_contain_text("payback_months")
