"""Retention KPIs against hand-worked values (KPIS.md §3). Times are Europe/Berlin wall-clock times."""

from datetime import date
from decimal import Decimal

import pytest

from crm import services
from crm.models import Customer, Deal
from metrics.models import Scope
from tests.factories import make_closed_deal, make_customer, make_team, make_user
from tests.metrics.kit import compute, d, detail, local, row, value

pytestmark = pytest.mark.django_db

APRIL = date(2026, 4, 1)


def set_status(customer: Customer, status: str, at) -> None:
    services.customer_set_status(customer=customer, status=status, actor=None, at=at)


@pytest.fixture
def customers():
    """The March population of the churn and retention tests, all owned by one rep of one team."""
    team = make_team()
    rep = make_user(team=team)
    before = local(2025, 6, 1)
    c1 = make_customer(rep, at=before)  # active all along
    c2 = make_customer(rep, at=before)
    set_status(c2, "churned", local(2026, 3, 10))
    c3 = make_customer(rep, at=before)  # churns and comes back within March
    set_status(c3, "churned", local(2026, 3, 5))
    set_status(c3, "active", local(2026, 3, 20))
    c4 = make_customer(rep, at=local(2026, 3, 5))  # joins and churns inside March
    set_status(c4, "churned", local(2026, 3, 25))
    make_customer(rep, at=local(2026, 3, 12))  # c5: new in March, stays
    c6 = make_customer(rep, at=before)
    set_status(c6, "churned", local(2026, 1, 10))
    make_customer(rep, at=local(2026, 3, 1))  # c7: became a customer at 00:00 on 1 March → new in March
    return {"rep": rep, "team": team, "c1": c1}


def test_churn_rate_b2b(customers):
    # S (active just before 1 March) = c1, c2, c3. Churned in March among S: c2 and c3 (counted once even
    # though c3 came back); c4 joined and churned inside March and is not in S → 2 / 3 = 66.666667 %.
    r = row("churn_rate")
    assert (r.numerator, r.denominator) == (2, 3)
    assert value("churn_rate") == d("66.666667")
    assert value("churn_rate", Scope.USER, customers["rep"].pk) == d("66.666667")
    assert value("churn_rate", Scope.TEAM, customers["team"].pk) == d("66.666667")
    # February: S = c1, c2, c3 (c6 churned in January), nobody churned → 0 %, a real zero.
    assert value("churn_rate", first_day=date(2026, 2, 1)) == d("0")
    # Before anyone was a customer: S = 0 → NULL.
    assert row("churn_rate", first_day=date(2025, 1, 1)).value is None


def test_retention_rate_set_based_and_textbook(customers):
    # Active at the start and at the end of March: c1 and c3 → 2 / 3.
    assert value("retention_rate") == d("66.666667")
    # Textbook (E − N) / S: E = c1, c3, c5, c7 = 4; N = new in March c4, c5, c7 = 3 → (4 − 3) / 3.
    r = row("retention_rate_textbook")
    assert detail(r.extra) == {"end": 4, "new": 3}
    assert value("retention_rate_textbook") == d("33.333333")
    assert row("retention_rate", first_day=date(2025, 1, 1)).value is None


def test_active_customers_at_the_end_of_each_period(customers):
    assert value("active_customers") == d("4")  # c1, c3, c5, c7
    assert value("active_customers", first_day=date(2026, 2, 1)) == d("3")  # c1, c2, c3
    assert value("active_customers", granularity="quarter", first_day=date(2026, 1, 1)) == d("4")
    # The whole year 2025 from the same data: c1, c2, c3, c6 were active on 31 December.
    assert value("active_customers", granularity="year", first_day=date(2025, 1, 1)) == d("4")


def test_a_running_month_compares_churn_and_retention_with_the_same_days_of_the_month_before(customers):
    """KPIS.md §10.1: on 12 April, April to date is compared with 1–12 March, not with all of March. Of
    S = c1, c2, c3, c2 (10 March) and c3 (5 March) churned in those days; c3's return on 20 March keeps
    its chain, as in March's own figure. Active on 13 March: c1, c4, c5, c7; new in those days: c4, c5,
    c7."""
    now = local(2026, 4, 12, 12)

    def compared(code: str) -> dict:
        rows = compute(code, first_day=APRIL, now=now, also=(date(2026, 3, 1),))
        return rows[(Scope.COMPANY, "")].extra.compared

    churn = compared("churn_rate")
    assert (churn["numerator"], churn["denominator"], churn["until"]) == (2.0, 3.0, "2026-03-13")
    assert churn["value"] == pytest.approx(66.666667)
    retention = compared("retention_rate")
    assert (retention["numerator"], retention["denominator"]) == (2.0, 3.0)
    assert compared("active_customers")["value"] == 4.0
    textbook = compared("retention_rate_textbook")
    assert (textbook["numerator"], textbook["denominator"]) == (1.0, 3.0)
    team = compute("churn_rate", first_day=APRIL, now=now, also=(date(2026, 3, 1),))
    assert team[(Scope.TEAM, str(customers["team"].pk))].extra.compared["numerator"] == 2.0


def test_customer_activity_for_weeks(customers):
    # ISO week of Monday 2 March: S = c1, c2, c3, c7 (c7 joined on Sunday 1 March, the week before);
    # c3 churned on Thursday 5 March and stayed churned that week → 1 / 4.
    assert value("churn_rate", granularity="week", first_day=date(2026, 3, 2)) == d("25")


def test_renewal_rate_with_grace_period():
    customer = make_customer(at=local(2025, 1, 1))

    def term(end: date, kind: str = Deal.Kind.NEW) -> Deal:
        return make_closed_deal(
            customer,
            created=local(2025, 2, 1),
            closed=local(2025, 3, 1),
            term_start=date(2025, 3, 1),
            term_end=end,
            kind=kind,
        )

    def renew(original: Deal, closed) -> Deal:
        return make_closed_deal(
            customer, created=local(2026, 1, 1), closed=closed, kind=Deal.Kind.RENEWAL, renewal_of=original
        )

    renew(term(date(2026, 3, 15)), local(2026, 4, 10))  # renewed 26 days after the end: in grace
    renew(term(date(2026, 3, 20)), local(2026, 4, 25))  # 36 days after: too late
    renew(term(date(2026, 3, 31)), local(2026, 2, 20))  # early renewal: counts in March, when due
    term(date(2026, 3, 10))  # not renewed
    term(date(2026, 3, 12), kind=Deal.Kind.UPSELL)  # upsells co-terminate: not up for renewal
    # 2 renewed of 4 due in March → 50 %.
    r = row("renewal_rate")
    assert (r.numerator, r.denominator) == (2, 4)
    assert r.value == Decimal(50)
    # Nothing due in April → NULL; a period whose 30-day grace is still open is provisional.
    assert row("renewal_rate", first_day=APRIL).value is None
    assert row("renewal_rate", first_day=date(2026, 6, 1)).provisional is True


def test_deal_based_renewal_rate_needs_no_contract_terms():
    """KPIS.md §10.12: renewal deals won ÷ renewal deals closed in the period, by close date."""
    rep = make_user()
    customer = make_customer(rep, at=local(2025, 1, 1))

    def renewal(closed, *, won: bool = True, **fields) -> Deal:
        return make_closed_deal(
            customer, created=local(2026, 1, 5), closed=closed, won=won, kind=Deal.Kind.RENEWAL, **fields
        )

    renewal(local(2026, 3, 1))  # on the boundary: March
    renewal(local(2026, 3, 31, 23, 59))
    renewal(local(2026, 3, 15), won=False)
    renewal(local(2026, 3, 16), won=False, lost_reason="Duplicate of another deal")  # data hygiene
    renewal(local(2026, 2, 28, 23, 59))  # February
    make_closed_deal(customer, created=local(2026, 1, 5), closed=local(2026, 3, 10))  # new business
    r = row("renewal_rate_deals")
    assert (r.numerator, r.denominator) == (2, 3)
    assert value("renewal_rate_deals") == d("66.666667")
    assert value("renewal_rate_deals", Scope.USER, rep.pk) == d("66.666667")
    assert value("renewal_rate_deals", first_day=date(2026, 2, 1)) == d("100")
    # Without contract terms the term-based rate has nothing due: the deal-based one still answers.
    assert value("renewal_rate") is None


def test_repeat_purchase_rate():
    rep = make_user()
    returning, first_timer, twice = (make_customer(rep, at=local(2025, 1, 1)) for _ in range(3))
    make_closed_deal(returning, created=local(2026, 1, 2), closed=local(2026, 1, 10))
    make_closed_deal(returning, created=local(2026, 3, 1), closed=local(2026, 3, 10))
    make_closed_deal(first_timer, created=local(2026, 3, 1), closed=local(2026, 3, 11))
    make_closed_deal(twice, created=local(2026, 3, 1), closed=local(2026, 3, 12))
    make_closed_deal(twice, created=local(2026, 3, 1), closed=local(2026, 3, 20))
    # Buyers in March: all three; at least their second won deal: returning and twice → 2 / 3.
    r = row("repeat_purchase_rate")
    assert (r.numerator, r.denominator) == (2, 3)
    assert value("repeat_purchase_rate") == d("66.666667")
    # January: the returning customer's first purchase → 0 of 1.
    assert value("repeat_purchase_rate", first_day=date(2026, 1, 1)) == d("0")
    assert row("repeat_purchase_rate", first_day=APRIL).value is None


def test_referral_share_of_new_customers():
    rep = make_user()
    make_customer(rep, at=local(2026, 3, 3), source="referral")
    for source in ("website", "ads", "event"):
        make_customer(rep, at=local(2026, 3, 3), source=source)
    assert value("referral_share") == d("25")
    assert row("referral_share", first_day=APRIL).value is None
    assert set(compute("referral_share")) == {(Scope.COMPANY, ""), (Scope.USER, str(rep.pk))}


def test_merging_a_churned_duplicate_into_an_active_customer_restates_the_past(customers):
    """KPIS.md §10.13: the merged-away record leaves every period, its status history stays with it, and
    the survivor keeps its own. The customer did not churn: past churn is as if the duplicate had never
    existed, and the survivor never looks churned."""
    from crm.data import merge
    from crm.models import CustomerStatusChange
    from tests.factories import make_manager

    rep = customers["rep"]
    survivor = make_customer(rep, at=local(2025, 6, 1))  # active all along
    duplicate = make_customer(rep, at=local(2025, 6, 1))
    set_status(duplicate, "churned", local(2026, 3, 15))
    # March with the duplicate: S = c1, c2, c3, survivor, duplicate; churned c2, c3, duplicate → 3 / 5.
    assert (row("churn_rate").numerator, row("churn_rate").denominator) == (3, 5)
    assert value("active_customers") == d("5")  # c1, c3, c5, c7, survivor
    duplicate_history = list(duplicate.status_changes.values_list("pk", flat=True))

    merge.customer_merge(survivor=survivor, merged=duplicate, actor=make_manager())

    # As if the duplicate had never existed: churned c2 and c3 of S = c1, c2, c3, survivor → 2 / 4.
    assert (row("churn_rate").numerator, row("churn_rate").denominator) == (2, 4)
    assert value("active_customers") == d("5")
    assert value("active_customers", first_day=date(2026, 2, 1)) == d("4")  # c1, c2, c3, survivor
    assert row("churn_rate", Scope.USER, rep.pk).numerator == 2
    # The duplicate's history stayed with it; the survivor's has no churn (its status did not change).
    assert set(duplicate.status_changes.values_list("pk", flat=True)) == set(duplicate_history)
    assert not CustomerStatusChange.objects.filter(customer=survivor, to_status="churned").exists()
    survivor.refresh_from_db()
    assert survivor.status == "active" and survivor.churned_at is None


def test_merging_into_a_churned_survivor_that_the_duplicate_keeps_active_adds_one_status_row(customers):
    """The merge adds a status row to the survivor, stamped with the merge time, only when it changes the
    survivor's status (an active duplicate makes a churned survivor active again, from now)."""
    from crm.data import merge
    from crm.models import CustomerStatusChange
    from tests.factories import make_manager

    rep = customers["rep"]
    survivor = make_customer(rep, at=local(2025, 6, 1))
    set_status(survivor, "churned", local(2026, 2, 10))
    duplicate = make_customer(rep, at=local(2025, 6, 1))
    merge.customer_merge(survivor=survivor, merged=duplicate, actor=make_manager())
    rows = list(CustomerStatusChange.objects.filter(customer=survivor).order_by("at"))
    assert [r.to_status for r in rows] == ["active", "churned", "active"]
    assert rows[-1].reason == "merge" and rows[-1].at > local(2026, 6, 1)
    # Past periods keep the survivor's own history: it churned in February.
    # S (active just before 1 February) = c1, c2, c3, survivor; the survivor churned → 1 / 4.
    february = row("churn_rate", first_day=date(2026, 2, 1))
    assert (february.numerator, february.denominator) == (1, 4)
