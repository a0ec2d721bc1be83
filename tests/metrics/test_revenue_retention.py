"""NRR, GRR and the revenue waterfall (KPIS.md §10.9) against hand-worked values, in a reporting zone fourteen
hours ahead of UTC (a local day starts at 10:00 the day before in UTC), so a deal closed just after local
midnight falls in another month than its UTC date says."""

from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from crm.data import merge
from crm.models import Customer
from metrics.kpis import get_kpi
from metrics.kpis.customer_history import Movement, Retained
from metrics.models import Scope
from metrics.periods import Period
from tests.factories import make_closed_deal, make_customer, make_manager, make_team, make_user
from tests.metrics.kit import compute, d

pytestmark = pytest.mark.django_db

ZONE = ZoneInfo("Pacific/Kiritimati")
NOW = datetime(2026, 6, 15, 12, tzinfo=ZONE)
NRR, GRR, WATERFALL = "net_revenue_retention", "gross_revenue_retention", "revenue_waterfall"


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZONE)


@pytest.fixture(autouse=True)
def _far_zone(settings):
    settings.TIME_ZONE = "Pacific/Kiritimati"


def won(customer: Customer, at: datetime, amount: str) -> None:
    make_closed_deal(customer, created=at, closed=at, amount=Decimal(amount))


def rows(code: str, first_day: date, granularity: str = "month", now: datetime = NOW) -> dict:
    return compute(code, granularity=granularity, first_day=first_day, now=now)


@pytest.fixture
def book():
    """Customers of two reps in two teams. March 2026's windows: earlier = [1 Apr 2024, 1 Apr 2025), later =
    [1 Apr 2025, 1 Apr 2026), both in local days."""
    team, other_team = make_team(), make_team()
    ann, bob = make_user(team=team), make_user(team=other_team)
    a, b, c, new, old, flat = (make_customer(owner, at=local(2023, 1, 2)) for owner in [ann] * 5 + [bob])
    won(a, local(2024, 6, 10), "1000")
    won(a, local(2025, 9, 1), "1500")  # expansion 500
    won(b, local(2024, 12, 1), "2000")
    won(b, local(2025, 3, 31, 23, 30), "500")  # the last half hour of the earlier window
    won(b, local(2025, 4, 1), "1000")  # 00:00 local (31 March 10:00 UTC): the later window; contraction 1500
    won(c, local(2024, 4, 1), "800")  # the first instant of the earlier window; nothing later: churned 800
    won(new, local(2025, 5, 1), "3000")  # a new customer: in neither side
    won(old, local(2023, 12, 1), "700")  # revenue only before the earlier window: not in the base
    won(old, local(2026, 1, 10), "400")
    won(flat, local(2024, 10, 1), "1000")
    won(flat, local(2025, 6, 1), "1000")
    # A duplicate merged into a customer: its deals move to the survivor, which then has 600 before and 900
    # after (expansion 300); had the duplicate stayed, it would have churned 600 and the survivor been new.
    survivor, duplicate = make_customer(ann, at=local(2023, 1, 2)), make_customer(ann, at=local(2023, 1, 2))
    won(duplicate, local(2024, 9, 1), "600")
    won(survivor, local(2025, 11, 1), "900")
    merge.customer_merge(survivor=survivor, merged=duplicate, actor=make_manager())
    internal = make_customer(ann, at=local(2023, 1, 2), is_internal=True)
    won(internal, local(2024, 5, 1), "5000")
    return {"ann": ann, "bob": bob, "team": team, "other_team": other_team}


def test_nrr_and_grr_by_hand(book):
    # Base (revenue in the earlier 12 months): a 1000, b 2500, c 800, the survivor 600, flat 1000 = 5900.
    # Later: a 1500, b 1000, c 0, the survivor 900, flat 1000 = 4400 → NRR 4400 / 5900.
    # GRR caps each at its earlier revenue: 1000 + 1000 + 0 + 600 + 1000 = 3600 → 3600 / 5900.
    nrr, grr = rows(NRR, date(2026, 3, 1)), rows(GRR, date(2026, 3, 1))
    company = nrr[(Scope.COMPANY, "")]
    assert (company.numerator, company.denominator, company.sample_size) == (d("4400"), d("5900"), 5)
    assert d(str(company.value)) == d("74.576271")
    assert (grr[(Scope.COMPANY, "")].numerator, grr[(Scope.COMPANY, "")].denominator) == (
        d("3600"),
        d("5900"),
    )
    assert d(str(grr[(Scope.COMPANY, "")].value)) == d("61.016949")
    details = company.extra
    assert (details.base, details.expansion, details.contraction, details.churned) == (5900, 800, 1500, 800)
    assert (details.expanded, details.contracted, details.lost) == (2, 1, 1)
    assert details.windows == ("2024-04-01", "2025-04-01", "2026-04-01")
    # base + expansion − contraction − churned = NRR's numerator; base − contraction − churned = GRR's.
    assert details.base + details.expansion - details.contraction - details.churned == 4400
    assert details.base - details.contraction - details.churned == 3600


def test_nrr_scopes_follow_the_customers_owner(book):
    nrr = rows(NRR, date(2026, 3, 1))
    # Bob owns only the flat customer: 1000 → 1000.
    bob = nrr[(Scope.USER, str(book["bob"].pk))]
    assert (bob.numerator, bob.denominator, bob.value) == (d("1000"), d("1000"), d("100"))
    ann = nrr[(Scope.TEAM, str(book["team"].pk))]
    assert (ann.numerator, ann.denominator) == (d("3400"), d("4900"))
    # The people's numbers add up to the company's.
    people = [r for (scope, _id), r in nrr.items() if scope == Scope.USER]
    assert sum(r.numerator for r in people) == nrr[(Scope.COMPANY, "")].numerator


def test_a_quarter_and_a_year_read_the_12_months_ending_at_their_end(book):
    march = rows(NRR, date(2026, 3, 1))[(Scope.COMPANY, "")]
    q1 = rows(NRR, date(2026, 1, 1), "quarter")[(Scope.COMPANY, "")]
    assert (q1.numerator, q1.denominator) == (march.numerator, march.denominator)
    # 2025: earlier = 2024 (a 1000, b 2000, c 800, survivor 600, flat 1000 = 5400), later = 2025 (a 1500,
    # b 500 + 1000, c 0, survivor 900, flat 1000 = 4900); old's 2023 revenue is before the earlier window.
    year = rows(NRR, date(2025, 1, 1), "year")[(Scope.COMPANY, "")]
    assert (year.numerator, year.denominator) == (d("4900"), d("5400"))


def test_a_running_month_reads_the_12_months_to_today(book):
    # On 15 June 2026 June runs: later = [16 Jun 2025, 16 Jun 2026), earlier = [16 Jun 2024, 16 Jun 2025).
    # Earlier: a 0 (10 Jun 2024 is before it), b 2500 + 1000, c 0, survivor 600, flat 1000 + 1000 (1 Jun
    # 2025), new 3000 → base 9100 (b 3500, survivor 600, flat 2000, new 3000). Later: b 0, survivor 900,
    # flat 0, new 0 → 900.
    june = rows(NRR, date(2026, 6, 1))[(Scope.COMPANY, "")]
    assert june.extra.windows == ("2024-06-16", "2025-06-16", "2026-06-16")
    assert (june.numerator, june.denominator, june.sample_size) == (d("900"), d("9100"), 4)


def test_no_base_is_no_value(book):
    # March 2024: earlier = [1 Apr 2022, 1 Apr 2023): nobody had revenue then.
    r = rows(NRR, date(2024, 3, 1))[(Scope.COMPANY, "")]
    assert (r.value, r.denominator) == (None, d("0"))
    # A period that has not begun has no row at all.
    assert rows(NRR, date(2026, 7, 1)) == {}


@pytest.fixture
def quarters():
    """Q4 2025 against Q1 2026, one customer per bucket (and one merge)."""
    rep = make_user(team=make_team())
    grows, shrinks, leaves, newcomer, returns, steady = (
        make_customer(rep, at=local(2024, 1, 2)) for _ in range(6)
    )
    won(grows, local(2025, 11, 5), "1000")
    won(grows, local(2026, 1, 1), "1500")  # 00:00 local on 1 January (31 Dec 10:00 UTC): Q1
    won(shrinks, local(2025, 10, 1), "2000")
    won(shrinks, local(2026, 2, 14), "1200")
    won(leaves, local(2025, 12, 31, 23, 59), "700")  # the last minute of Q4, nothing in Q1
    won(newcomer, local(2026, 3, 31, 23, 59), "900")  # first revenue ever, in the last minute of Q1
    won(returns, local(2025, 5, 1), "400")  # revenue in Q2 2025, none in Q4, some in Q1: reactivated
    won(returns, local(2026, 2, 1), "600")
    won(steady, local(2025, 12, 1), "300")
    won(steady, local(2026, 3, 1), "300")
    survivor, duplicate = make_customer(rep, at=local(2024, 1, 2)), make_customer(rep, at=local(2024, 1, 2))
    won(duplicate, local(2025, 12, 10), "400")
    won(survivor, local(2026, 1, 20), "500")
    merge.customer_merge(survivor=survivor, merged=duplicate, actor=make_manager())
    return rep


def test_a_waterfall_that_adds_up(quarters):
    # Q4 2025: grows 1000, shrinks 2000, leaves 700, steady 300, survivor 400 (the duplicate's) = 4400.
    # Q1 2026: grows 1500, shrinks 1200, newcomer 900, returns 600, steady 300, survivor 500 = 5000.
    # new 900 (newcomer); expansion 500 (grows) + 100 (survivor); contraction 800 (shrinks); churned 700
    # (leaves); reactivated 600 (returns).
    r = rows(WATERFALL, date(2026, 1, 1), "quarter")[(Scope.COMPANY, "")]
    w = r.extra
    assert (w.previous, w.current) == (4400, 5000)
    assert (w.new, w.expansion, w.contraction, w.churned, w.reactivated) == (900, 600, 800, 700, 600)
    assert (w.new_customers, w.expanded, w.contracted, w.lost, w.reactivated_customers) == (1, 2, 1, 1, 1)
    assert w.previous + w.new + w.expansion - w.contraction - w.churned + w.reactivated == w.current
    assert r.value == d("600") and r.sample_size == 7
    assert w.spans == ("2025-10-01", "2026-01-01", "2026-01-01", "2026-04-01")
    rep = rows(WATERFALL, date(2026, 1, 1), "quarter")[(Scope.USER, str(quarters.pk))]
    assert rep.extra == w


def test_a_running_month_is_compared_with_the_same_days_of_the_month_before():
    rep = make_user()
    grows, gap, leaves, first = (make_customer(rep, at=local(2024, 1, 2)) for _ in range(4))
    won(grows, local(2026, 5, 10), "1000")
    won(grows, local(2026, 6, 5), "1500")
    won(gap, local(2026, 5, 20), "800")  # after 15 May: outside the span compared with
    won(gap, local(2026, 6, 3), "600")  # … so reactivated, not contraction
    won(leaves, local(2026, 5, 2), "500")
    won(first, local(2026, 6, 10), "700")
    w = rows(WATERFALL, date(2026, 6, 1))[(Scope.COMPANY, "")].extra
    assert w.spans == ("2026-05-01", "2026-05-16", "2026-06-01", "2026-06-16")
    assert (w.previous, w.current) == (1500, 2800)
    assert (w.new, w.expansion, w.contraction, w.churned, w.reactivated) == (700, 500, 0, 500, 600)
    assert w.previous + w.new + w.expansion - w.contraction - w.churned + w.reactivated == w.current


def test_the_waterfall_of_every_month_adds_up_to_revenue_won(quarters):
    revenue = compute("revenue_won", granularity="month", first_day=date(2026, 2, 1), now=NOW)
    waterfall = rows(WATERFALL, date(2026, 2, 1))[(Scope.COMPANY, "")]
    assert Decimal(str(waterfall.extra.current)) == revenue[(Scope.COMPANY, "")].value


def test_the_sums_are_exact_in_cents():
    m = Movement()
    for before, now, first in ((10, 35, False), (0, 7, True), (0, 9, False), (50, 0, False), (40, 1, False)):
        m.add(before, now, first_now=first)
    assert m.previous + m.new + m.expansion - m.contraction - m.churned + m.reactivated == m.current
    r = Retained()
    for before, now in ((10, 35), (50, 0), (40, 1), (5, 5)):
        r.add(before, now)
    assert (r.base, r.now, r.kept) == (105, 41, 16)


def test_the_kpis_are_left_to_their_own_task():
    for code in (NRR, GRR, WATERFALL, "cohort_retention"):
        assert get_kpi(code).own_task
    assert Period("month", date(2026, 3, 1)).end == local(2026, 4, 1)
