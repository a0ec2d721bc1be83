"""Personal data of one customer: the JSON export, and erasure that keeps every KPI-relevant number."""

import json
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count, Sum
from django.urls import reverse
from django.utils import timezone

from accounts.models import SecurityEvent
from crm import services
from crm.data.merge import customer_merge
from crm.data.privacy import customer_erase_personal_data
from crm.models import (
    Activity,
    Customer,
    CustomerStatusChange,
    Deal,
    DealStageChange,
    Ticket,
    TicketMessage,
)
from surveys.models import SurveyResponse
from tests.factories import (
    make_agent,
    make_answer,
    make_closed_deal,
    make_customer,
    make_deal,
    make_manager,
    make_survey,
    make_ticket,
    make_user,
)

pytestmark = pytest.mark.django_db

NAME = "Zyxwvut Quibbleworth"
SECRETS = ("quibble", "7654321", "Zyxwvut")


@pytest.fixture
def person():
    """A customer with deals, a ticket with messages, activities, a survey answer and a merged duplicate."""
    rep = make_user()
    customer = make_customer(
        rep, name=NAME, email="zq@quibble-example.org", phone="+49 30 7654321", city="Quibbleton",
        industry="Quibbleware",
    )  # fmt: skip
    services.customer_update(customer=customer, actor=rep, data={"city": "Quibbleton Nord"})
    make_closed_deal(customer, amount=Decimal("1200"), title=f"{NAME} renewal")
    make_closed_deal(customer, won=False, amount=Decimal("300"))
    make_deal(customer, amount=Decimal("450"))
    ticket = make_ticket(
        customer, subject=f"Invoice question from {NAME}", description="Call zq@quibble-example.org"
    )
    services.ticket_reply(ticket=ticket, actor=rep, body=f"Dear {NAME}, thanks for writing.")
    services.activity_log(
        actor=rep,
        customer=customer,
        kind=Activity.Kind.CALL,
        subject="Intro call",
        notes=f"{NAME} likes cats",
    )
    make_answer(
        make_survey("nps"), customer, 3, timezone.now() - timedelta(days=1), comment="Quibble is slow"
    )
    duplicate = make_customer(rep, name=f"{NAME} Ltd", email="billing@quibble-example.org")
    customer_merge(survivor=customer, merged=duplicate, actor=make_manager(), choices={"email": duplicate.pk})
    customer.refresh_from_db()
    return customer


def kpi_numbers() -> dict:
    """The counts and sums the KPIs are computed from."""
    return {
        "customers": list(Customer.objects.values("status").annotate(n=Count("id")).order_by("status")),
        "deals": list(
            Deal.objects.values("status").annotate(n=Count("id"), total=Sum("amount")).order_by("status")
        ),
        "tickets": list(Ticket.objects.values("status").annotate(n=Count("id")).order_by("status")),
        "activities": Activity.objects.count(),
        "answers": SurveyResponse.objects.aggregate(n=Count("id"), score=Sum("score")),
        "status_changes": CustomerStatusChange.objects.count(),
        "stage_changes": DealStageChange.objects.count(),
        "messages": TicketMessage.objects.count(),
        "dates": list(Customer.objects.order_by("id").values_list("id", "created_at", "became_customer_at")),
    }


def tables_containing(text: str) -> list[str]:
    """Every table of the database with a row whose text contains ``text`` (case-insensitive)."""
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            quoted = connection.ops.quote_name(table)
            query = f"SELECT 1 FROM {quoted} AS t WHERE t::text ILIKE %s LIMIT 1"  # noqa: S608 (quoted name)
            cursor.execute(query, [f"%{text}%"])
            if cursor.fetchone():
                found.append(table)
    return found


def test_export_holds_everything_about_the_customer_and_no_tokens(client, person):
    client.force_login(make_manager())
    response = client.get(reverse("crm:customer_personal_data", args=[person.pk]))
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    data = json.loads(response.content)
    assert data["customer"]["name"] == NAME and data["customer"]["email"] == "billing@quibble-example.org"
    assert len(data["deals"]) == 3 and all("stage_changes" in deal for deal in data["deals"])
    assert data["tickets"][0]["messages"][0]["body"].startswith("Dear")
    assert data["tickets"][0]["status_history"]
    assert any(a["notes"] == f"{NAME} likes cats" for a in data["activities"])
    assert data["survey_responses"][0]["comment"] == "Quibble is slow"
    assert data["survey_invitations"] and "token_hash" not in data["survey_invitations"][0]
    assert len(data["audit_history"]["customer"]) >= 2 and data["status_history"] and data["merges"]
    assert SecurityEvent.objects.filter(kind="personal_data_export", detail__customer=person.pk).exists()


@pytest.mark.parametrize("make", [make_user, make_agent])
def test_personal_data_pages_are_404_for_reps_and_agents(client, person, make):
    user = person.owner if make is make_user else make()
    client.force_login(user)
    assert client.get(reverse("crm:customer_personal_data", args=[person.pk])).status_code == 404
    assert client.get(reverse("crm:customer_erase", args=[person.pk])).status_code == 404
    assert (
        client.post(reverse("crm:customer_erase", args=[person.pk]), {"confirm_name": NAME}).status_code
        == 404
    )
    assert Customer.objects.get(pk=person.pk).name == NAME


def test_detail_page_shows_the_buttons_to_managers_only(client, person):
    client.force_login(make_manager())
    page = client.get(person.get_absolute_url()).content.decode()
    assert reverse("crm:customer_personal_data", args=[person.pk]) in page
    client.force_login(person.owner)
    page = client.get(person.get_absolute_url()).content.decode()
    assert reverse("crm:customer_erase", args=[person.pk]) not in page


def test_erasure_needs_the_typed_name(client, person):
    client.force_login(make_manager())
    response = client.post(reverse("crm:customer_erase", args=[person.pk]), {"confirm_name": "Someone else"})
    assert response.status_code == 200 and b"not the customer" in response.content
    assert Customer.objects.get(pk=person.pk).name == NAME


def test_erasure_keeps_kpi_numbers_and_leaves_no_personal_string(client, person):
    assert tables_containing("quibble")  # the search finds the data before erasure
    before = kpi_numbers()
    manager = make_manager()
    client.force_login(manager)
    response = client.post(reverse("crm:customer_erase", args=[person.pk]), {"confirm_name": NAME})
    assert response.status_code == 302 and response["Location"] == person.get_absolute_url()
    assert kpi_numbers() == before
    for text in SECRETS:
        assert tables_containing(text) == [], text
    person.refresh_from_db()
    assert person.name == f"Erased customer #{person.pk}"
    assert person.email == person.phone == person.city == person.industry == person.email_key == ""
    assert person.history.filter(name=f"Erased customer #{person.pk}").count() == person.history.count()
    assert Deal.objects.filter(customer=person, title=f"Erased customer #{person.pk} renewal").exists()
    assert SecurityEvent.objects.get(kind="personal_data_erase").user == manager
    assert client.get(person.get_absolute_url()).status_code == 200
    assert client.get(reverse("crm:customer_merges", args=[person.pk])).status_code == 200


def test_erasure_service_refuses_non_managers(person):
    with pytest.raises(Exception, match="Only managers"):
        customer_erase_personal_data(customer=person, actor=person.owner)


def test_erasure_clears_the_customers_free_text_custom_values_and_keeps_the_rest():
    from crm.custom_fields.services import field_create

    manager = make_manager()
    field_create(actor=manager, entity="customer", key="contact_note", label_en="Contact note", kind="text")
    field_create(
        actor=manager,
        entity="customer",
        key="tier",
        label_en="Tier",
        kind="choice",
        choices=[{"key": "gold", "en": "Gold"}],
    )
    customer = make_customer(custom={"contact_note": "Ask for Zyxwvut at home", "tier": "gold"})
    customer_erase_personal_data(customer=customer, actor=manager)
    customer.refresh_from_db()
    assert customer.custom == {"tier": "gold"}
    assert all("Zyxwvut" not in str(row.custom) for row in customer.history.all())
