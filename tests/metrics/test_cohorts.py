"""Customer cohorts and their logo retention (KPIS.md §10.9) against hand-worked values, in a reporting zone
fourteen hours ahead of UTC: a customer who joins at 00:00 local on 1 January joined on 31 December in UTC."""

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from crm import services
from crm.data import merge
from crm.models import Customer
from metrics.kpis import get_kpi
from metrics.models import Scope
from metrics.periods import Period
from tests.factories import make_customer, make_manager, make_team, make_user
from tests.metrics.kit import compute, d

pytestmark = pytest.mark.django_db

ZONE = ZoneInfo("Pacific/Kiritimati")
NOW = datetime(2026, 6, 15, 12, tzinfo=ZONE)
COHORT = "cohort_retention"
JANUARY = date(2025, 1, 1)


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZONE)


@pytest.fixture(autouse=True)
def _far_zone(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


def set_status(customer: Customer, status: str, at: datetime) -> None:
    services.customer_set_status(customer=customer, status=status, actor=None, at=at)


@pytest.fixture
def january():
    """The January 2025 cohort of two reps (and those who only look like it)."""
    team = make_team()
    ann, bob = make_user(team=team), make_user(team=make_team())
    make_customer(ann, at=local(2025, 1, 1))  # 00:00 local (31 Dec 10:00 UTC): January; active throughout
    quits = make_customer(bob, at=local(2025, 1, 15))
    set_status(quits, "churned", local(2025, 3, 10))
    returns = make_customer(ann, at=local(2025, 1, 20))
    set_status(returns, "churned", local(2025, 1, 25))  # gone before January ends
    set_status(returns, "active", local(2025, 5, 5))  # back in May
    boundary = make_customer(ann, at=local(2025, 1, 31, 23, 59))
    set_status(boundary, "churned", local(2025, 3, 1))  # at the very end of February: active at its end
    make_customer(ann, at=local(2025, 2, 1))  # 00:00 local on 1 February: February's cohort
    # A January duplicate merged into a December customer: it leaves every KPI, the survivor stays in
    # December (its earlier start wins).
    survivor = make_customer(ann, at=local(2024, 12, 5))
    duplicate = make_customer(ann, at=local(2025, 1, 10))
    merge.customer_merge(survivor=survivor, merged=duplicate, actor=make_manager())
    make_customer(ann, at=local(2025, 1, 12), is_internal=True)
    make_customer(ann, status=Customer.Status.LEAD, at=local(2025, 1, 3))  # a lead is in no cohort
    return {"ann": ann, "bob": bob, "team": team}


def test_logo_retention_at_month_k_by_hand(january):
    # Members: throughout, quits, returns, boundary = 4. Active at the end of
    #   January (k = 0): throughout, quits, boundary = 3 (returns churned on the 25th)
    #   February (k = 1): the same 3 (boundary churned at 00:00 on 1 March, not before February's end)
    #   March (k = 2), April (k = 3): throughout = 1
    #   May (k = 4) … : throughout and returns = 2
    # The last month ended on 15 June 2026 is May 2026: k = 16.
    row = compute(COHORT, first_day=JANUARY, now=NOW)[(Scope.COMPANY, "")]
    assert row.extra.active == (3, 3, 1, 1, *[2] * 13)
    assert row.extra.month == 12
    assert (row.numerator, row.denominator, row.sample_size) == (d("2"), d("4"), 4)
    assert row.value == d("50") and not row.provisional


def test_cohorts_per_owner_and_team(january):
    rows = compute(COHORT, first_day=JANUARY, now=NOW)
    ann = rows[(Scope.USER, str(january["ann"].pk))]
    assert ann.extra.active[:5] == (2, 2, 1, 1, 2) and ann.sample_size == 3
    bob = rows[(Scope.USER, str(january["bob"].pk))]
    assert bob.extra.active[:3] == (1, 1, 0) and bob.value == d("0")
    assert rows[(Scope.TEAM, str(january["team"].pk))].extra == ann.extra


def test_february_and_december_cohorts(january):
    february = compute(COHORT, first_day=date(2025, 2, 1), now=NOW)[(Scope.COMPANY, "")]
    assert february.sample_size == 1 and february.extra.active[0] == 1
    december = compute(COHORT, first_day=date(2024, 12, 1), now=NOW)[(Scope.COMPANY, "")]
    assert december.sample_size == 1  # the survivor; the merged January duplicate is in no cohort


def test_a_young_cohort_is_provisional_and_a_forming_one_has_no_value(january):
    make_customer(january["ann"], at=local(2026, 5, 20))
    make_customer(january["ann"], at=local(2026, 6, 2))
    may = compute(COHORT, first_day=date(2026, 5, 1), now=NOW)[(Scope.COMPANY, "")]
    assert (may.value, may.provisional, may.extra.month, may.extra.active) == (d("100"), True, 0, (1,))
    june = compute(COHORT, first_day=date(2026, 6, 1), now=NOW)[(Scope.COMPANY, "")]
    assert (june.value, june.provisional, june.sample_size) == (None, True, 1)
    # A month without new customers: the company row says so (n = 0, no value).
    empty = compute(COHORT, first_day=date(2025, 8, 1), now=NOW)[(Scope.COMPANY, "")]
    assert (empty.value, empty.sample_size) == (None, 0)


def test_the_cohort_drilldown_gives_its_numbers(january):
    kpi = get_kpi(COHORT)
    manager = make_manager()
    period = Period("month", JANUARY)
    members = kpi.drilldown.records(manager, period, Scope.COMPANY, "", "denominator")
    assert members.count() == 4
    still = kpi.drilldown.records(manager, period, Scope.COMPANY, "", "numerator")
    assert {c.name for c in still} == {c.name for c in members if c.status == Customer.Status.ACTIVE}
    # A rep sees only their own customers, whatever scope they ask for.
    bob = kpi.drilldown.records(january["bob"], period, Scope.COMPANY, "", "denominator")
    assert bob.count() == 1
