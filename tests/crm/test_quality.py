"""The data-quality rule set: SQL and Python forms agree, failures link to records, scoped selectors."""

from decimal import Decimal

import pytest
from django.core.paginator import Paginator
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm.data import quality
from crm.models import Customer, Deal, Ticket
from tests.factories import make_closed_deal, make_customer, make_deal, make_manager, make_ticket, make_user

pytestmark = pytest.mark.django_db


def failing(rule_code: str) -> set[int]:
    rule = quality.RULES_BY_CODE[rule_code]
    return set(quality.live_records(rule.model).filter(rule.failing).values_list("pk", flat=True))


def test_rule_codes_are_unique_and_every_rule_has_both_forms():
    assert len(quality.RULES_BY_CODE) == len(quality.RULES)
    assert all(rule.check is not None for rule in quality.RULES)
    assert quality.RULESET_VERSION >= 1


@pytest.mark.parametrize("placeholder", ["", "  ", "-", "n/a", "N/A", "unknown", "?", "none"])
def test_placeholders_count_as_empty(placeholder):
    assert quality.is_empty(placeholder)
    customer = make_customer(industry="Energy", city="Berlin", segment="smb")
    Customer.objects.filter(pk=customer.pk).update(industry=placeholder)
    assert failing("customer_industry") == {customer.pk}
    assert quality.RULES_BY_CODE["customer_industry"].fails({"industry": placeholder})


def test_customer_rules_in_sql_and_python_agree():
    good = make_customer(
        email="ok@example.com", phone="+49 30 1234567", industry="IT", city="Berlin", segment="smb"
    )
    no_contact = make_customer(email="", phone="", industry="IT", city="Berlin", segment="smb")
    bad_email = make_customer(industry="IT", city="Berlin", segment="smb")
    Customer.objects.filter(pk=bad_email.pk).update(email="not-an-email")
    bad_phone = make_customer(industry="IT", city="Berlin", segment="smb")
    Customer.objects.filter(pk=bad_phone.pk).update(phone="12", phone_key="")
    assert failing("customer_contact") == {no_contact.pk}
    assert failing("customer_email_format") == {bad_email.pk}
    assert failing("customer_phone_format") == {bad_phone.pk}
    for customer in Customer.objects.all():
        values = {f: getattr(customer, f) for f in ("email", "phone", "industry", "city", "segment")}
        broken = {rule.code for rule in quality.row_failures(Customer, values)}
        in_sql = {rule.code for rule in quality.rules_for(Customer) if customer.pk in failing(rule.code)}
        assert broken == in_sql, customer
    assert not quality.row_failures(
        Customer, {f: getattr(good, f) for f in ("email", "phone", "industry", "city", "segment")}
    )


def test_deal_rules():
    customer = make_customer()
    open_bare = make_deal(customer, amount=None)
    dated = make_deal(customer, expected_close_date=timezone.localdate())
    won_free = make_closed_deal(customer, amount=None)
    won_zero = make_closed_deal(customer, amount=Decimal("0"))
    won_ok = make_closed_deal(customer, amount=Decimal("10"))
    assert failing("deal_open_amount") == {open_bare.pk}
    assert failing("deal_open_close_date") == {open_bare.pk}
    assert failing("deal_won_amount") == {won_free.pk, won_zero.pk}
    assert failing("deal_won_close_date") == set()
    assert dated.pk not in failing("deal_open_close_date")
    assert won_ok.pk not in failing("deal_won_amount")
    assert quality.RULES_BY_CODE["deal_won_amount"].fails({"status": "won", "amount": None})
    assert quality.RULES_BY_CODE["deal_won_close_date"].fails({"status": "won", "closed_at": None})
    assert not quality.RULES_BY_CODE["deal_won_amount"].fails({"status": "open", "amount": None})
    assert set(Deal.objects.filter(quality.invalid(Deal)).values_list("pk", flat=True)) == {
        won_free.pk,
        won_zero.pk,
    }


def test_ticket_rules_and_spam_is_not_checked(no_auto_assign):
    customer = make_customer()
    make_ticket(customer)
    spam = make_ticket(customer)
    # PostgreSQL refuses a solved ticket without a solved time, except for spam, which no rule checks.
    Ticket.objects.filter(pk=spam.pk).update(status="closed", is_spam=True, closed_at=timezone.now())
    assert Ticket.objects.filter(quality.RULES_BY_CODE["ticket_solved_time"].failing).count() == 1
    assert failing("ticket_solved_time") == set()
    now = timezone.now()
    assert quality.RULES_BY_CODE["ticket_solved_time"].fails({"status": "closed", "solved_at": None})
    assert quality.RULES_BY_CODE["ticket_solved_after_created"].fails(
        {"created_at": now, "solved_at": now - timezone.timedelta(days=1)}
    )


def test_merged_and_internal_customers_are_not_checked():
    survivor = make_customer(email="", phone="")
    merged = make_customer(email="", phone="")
    internal = make_customer(email="", phone="", is_internal=True)
    Customer.objects.filter(pk=merged.pk).update(merged_into=survivor)
    assert failing("customer_contact") == {survivor.pk}
    assert internal.pk not in failing("customer_contact")


def test_failures_stream_with_links_to_the_records():
    customer = make_customer(email="", phone="", name="Nobody Reachable")
    found = [f for f in quality.iter_failures() if f.rule == "customer_contact"]
    assert len(found) == 1
    failure = found[0]
    assert (failure.model, failure.pk, failure.title) == ("customer", customer.pk, "Nobody Reachable")
    assert failure.url == customer.get_absolute_url()
    assert failure.message == "No e-mail address and no phone number."


def test_failure_counts_take_one_query_per_model():
    make_customer(email="", phone="")
    make_deal(amount=None)
    with CaptureQueriesContext(connection) as queries:
        counts = quality.failure_counts()
    assert len(queries) == 3
    assert counts["customer_contact"] == 1 and counts["deal_open_amount"] == 1
    assert set(counts) == set(quality.RULES_BY_CODE)


def test_failure_list_is_scoped_paginatable_and_filterable():
    rep, other = make_user(), make_user()
    mine = [make_customer(rep, email="", phone="", name=f"Mine {i}") for i in range(3)]
    make_customer(other, email="", phone="", name="Theirs")
    make_deal(mine[0], amount=None, title="My bare deal")
    rows = quality.quality_failure_list(user=rep)
    page = Paginator(rows, 2).get_page(1)
    assert page.paginator.count == len(list(rows))
    links = quality.failure_links(page.object_list)
    assert len(links) == 2 and all(link.url for link in links)
    contact = quality.failure_links(quality.quality_failure_list(user=rep, rule="customer_contact"))
    assert [link.title for link in contact] == ["Mine 0", "Mine 1", "Mine 2"]
    everything = quality.failure_links(
        quality.quality_failure_list(user=make_manager(), rule="customer_contact")
    )
    assert "Theirs" in [link.title for link in everything]
    assert list(quality.quality_failure_list(user=rep, rule="no_such_rule")) == []
    deals = quality.failure_links(quality.quality_failure_list(user=rep, rule="deal_open_amount"))
    assert [(d.model, d.title) for d in deals] == [("deal", "My bare deal")]


def test_failure_counts_per_rule_for_a_user():
    rep = make_user()
    make_customer(rep, email="", phone="")
    make_customer(make_user(), email="", phone="")
    counts = {row["rule"].code: row for row in quality.quality_failure_counts(user=rep)}
    assert counts["customer_contact"]["failing"] == 1
    assert counts["customer_contact"]["checked"] == 1
    assert counts["deal_won_amount"]["checked"] == 0


def test_failing_any_finds_incomplete_records():
    complete = make_customer(email="a@b.example", industry="IT", city="Berlin", segment="smb")
    incomplete = make_customer(email="a@c.example", industry="IT", city="", segment="smb")
    required = quality.failing_any(Customer, kinds=[quality.Kind.REQUIRED])
    assert set(Customer.objects.filter(required).values_list("pk", flat=True)) == {incomplete.pk}
    assert set(Customer.objects.exclude(required).values_list("pk", flat=True)) == {complete.pk}


def test_the_rule_indexes_have_the_rules_own_conditions():
    """crm.models indexes the rules that almost nothing breaks; each condition must stay the rule's."""
    indexes = [
        index for model in quality.MODELS for index in model._meta.indexes if index.name.startswith("dq_")
    ]
    assert len(indexes) == 8
    for index in indexes:
        rule = quality.RULES_BY_CODE[index.name.removeprefix("dq_")]
        assert index.condition == rule.failing, index.name
