"""Data-quality KPIs against hand-worked values (KPIS.md §7): measured now, for the current period."""

from datetime import date, timedelta
from decimal import Decimal

import pytest

from crm import services
from crm.models import Customer
from metrics.kpis.data_quality import duplicate_clusters
from metrics.models import Scope
from tests.factories import make_closed_deal, make_customer, make_deal, make_user, stage
from tests.metrics.kit import NOW, d, detail, row, value

pytestmark = pytest.mark.django_db

JUNE = date(2026, 6, 1)
# The checks describe the records that exist at the computation's "now": these are created before it.
BEFORE = NOW - timedelta(days=30)


def current(code: str, scope: str = Scope.COMPANY, scope_id: object = "") -> Decimal | None:
    return value(code, scope, scope_id, first_day=JUNE, now=NOW)


def test_duplicate_rate_clusters_by_email_and_phone():
    rep = make_user()
    make_customer(rep, at=BEFORE, email="a@x.com")
    make_customer(rep, at=BEFORE, email="A@X.com")
    make_customer(rep, at=BEFORE, email="a@x.com", phone="+49 30 1234567")
    make_customer(rep, at=BEFORE, email="", phone="030 1234567")  # same number in national form: joins via c3
    make_customer(rep, at=BEFORE)
    make_customer(rep, at=BEFORE)
    merged = make_customer(rep, at=BEFORE, email="a@x.com")
    Customer.objects.filter(pk=merged.pk).update(merged_into=Customer.objects.exclude(pk=merged.pk).first())
    make_customer(rep, at=BEFORE, email="a@x.com", is_internal=True)
    # One cluster of 4 live customers → 3 redundant of 6 live customers = 50 %.
    r = row("duplicate_rate", first_day=JUNE, now=NOW)
    assert (r.numerator, r.denominator) == (3, 6)
    assert current("duplicate_rate") == d("50")
    assert current("duplicate_rate", Scope.USER, rep.pk) == d("50")
    # Field values have no history: only the current period has a value.
    assert row("duplicate_rate", first_day=date(2026, 5, 1), now=NOW) is None


@pytest.fixture
def records():
    rep = make_user()
    c1 = make_customer(rep, at=BEFORE, industry="Retail", city="Berlin", segment="smb")
    c2 = make_customer(
        rep, at=BEFORE, email="", phone="+49 30 7654321", industry="n/a", city="", segment="smb"
    )
    c3 = make_customer(rep, at=BEFORE)
    Customer.objects.filter(pk=c3.pk).update(email="not-an-email")
    make_customer(rep, at=BEFORE, email="", phone="call me")  # c4: phone not a possible number
    make_deal(c1, at=BEFORE, amount=Decimal(1000), expected_close_date=date(2026, 7, 1))
    make_deal(c2, at=BEFORE, amount=None)
    make_closed_deal(c1, amount=None, created=BEFORE, closed=BEFORE)  # won without an amount
    return rep


def test_field_completeness_slot_level(records):
    # Customers (e-mail or phone, industry, city, segment): c1 4/4, c2 2/4 ("n/a" and "" are empty),
    # c3 1/4, c4 1/4; open deals (amount, expected close date): 2/2 and 0/2 → 10 / 20 = 50 %.
    r = row("field_completeness", first_day=JUNE, now=NOW)
    assert (r.numerator, r.denominator) == (10, 20)
    assert current("field_completeness") == d("50")


def test_validation_error_rate(records):
    # Failing a rule: c3 (e-mail syntax), c4 (phone), the won deal without amount → 3 of 4 customers +
    # 3 deals = 42.857143 %.
    r = row("validation_error_rate", first_day=JUNE, now=NOW)
    assert detail(r.extra) == {
        "customers_invalid": 2,
        "customers_checked": 4,
        "deals_invalid": 1,
        "deals_checked": 3,
    }
    assert current("validation_error_rate") == d("42.857143")


def test_stale_open_deals():
    customer = make_customer()
    old, recent = NOW - timedelta(days=60), NOW - timedelta(days=5)
    make_deal(customer, at=old)  # no activity for 60 days: stale
    touched = make_deal(customer, at=old)
    services.activity_log(
        actor=customer.owner, customer=customer, kind="call", subject="Check-in", deal=touched, at=recent
    )
    make_deal(customer, at=recent)  # young
    moved = make_deal(customer, at=old)
    services.deal_move_stage(
        deal=moved, stage=stage("open", 20), actor=customer.owner, at=NOW - timedelta(days=10)
    )
    make_deal(customer, at=recent, expected_close_date=date(2026, 6, 14))  # past its expected close date
    # 2 of 5 open deals are stale → 40 %.
    assert current("stale_deals") == d("40")


def test_no_records_means_no_value():
    assert row("field_completeness", first_day=JUNE, now=NOW).value is None
    assert row("stale_deals", first_day=JUNE, now=NOW).value is None


def test_duplicate_clusters_are_reused_until_a_customer_changes():
    rep = make_user()
    first = make_customer(rep, at=BEFORE, email="a@x.com")
    second = make_customer(rep, at=BEFORE, email="b@x.com")
    assert duplicate_clusters() == []
    # An edit through the service stamps the customer: the cached answer no longer applies.
    services.customer_update(customer=second, actor=rep, data={"email": "A@x.com"})
    assert duplicate_clusters() == [[(first.pk, rep.pk), (second.pk, rep.pk)]]
    # A delete lowers the count; a new customer raises the last id.
    second.delete()
    assert duplicate_clusters() == []
    make_customer(rep, at=BEFORE, email="a@x.com")
    assert len(duplicate_clusters()) == 1
