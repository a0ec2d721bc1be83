"""The type-ahead customer picker: options as the user types, only the user's customers, never the whole
list on the page, clear errors when nothing was picked."""

from urllib.parse import quote

import pytest
from django.urls import reverse

from crm.models import Activity, Deal
from tests.factories import make_agent, make_customer, make_manager, make_ticket, make_user, stage

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
OPTIONS = "crm:customer_options"


@pytest.fixture
def rep(client):
    user = make_user(username="rita")
    client.force_login(user)
    return user


def options(client, text: str, field: str = "customer") -> str:
    # Percent-encoded by hand: the bytes of a lone surrogate too, as a hostile client sends them.
    encoded = quote(text.encode("utf-8", "surrogatepass"), safe="")
    response = client.get(f"{reverse(OPTIONS)}?field={field}&{field}_search={encoded}", headers=HTMX)
    assert response.status_code == 200
    return response.content.decode()


def test_options_match_name_email_and_phone_among_the_users_customers_only(client, rep):
    mine = make_customer(rep, name="Müller Maschinenbau", email="info@mueller.example", phone="0351 4695316")
    make_customer(rep, name="Schmidt & Söhne")
    make_customer(make_user(), name="Müller Logistik")  # another rep's
    body = options(client, "müller")
    assert f'data-value="{mine.pk}"' in body and 'role="option"' in body
    assert "Müller Logistik" not in body and "Schmidt" not in body
    assert f'data-value="{mine.pk}"' in options(client, "info@mueller")
    assert f'data-value="{mine.pk}"' in options(client, "4695316")
    assert "No customer matches." in options(client, "nobody like this")


def test_options_are_capped_and_say_there_are_more(client):
    manager = make_manager()
    client.force_login(manager)
    for i in range(15):
        make_customer(make_user(), name=f"Acme {i:02d}")
    body = options(client, "acme")
    assert body.count('role="option" id=') == 12
    assert "More match: keep typing." in body


def test_an_agent_finds_only_the_customers_of_their_tickets(client):
    agent = make_agent()
    client.force_login(agent)
    theirs = make_customer(make_user(), name="Ticket Kunde")
    make_ticket(theirs, assignee=agent)
    make_customer(make_user(), name="Ticket Fremd")
    body = options(client, "ticket")
    assert "Ticket Kunde" in body and "Ticket Fremd" not in body


@pytest.mark.parametrize(
    ("text", "listed"),
    [("\x00", True), ("a\x00b", False), ("\ud800", False), ("x" * 10_000, False), ("%", False), ("_", False),
     ("' OR 1=1 --", False)],
)  # fmt: skip
def test_hostile_search_text_is_an_answer_not_an_error(client, rep, text, listed):
    """A NUL is dropped (an empty search lists the first customers), a lone surrogate cannot match, and
    LIKE's wildcards are literal characters."""
    make_customer(rep, name="Plain GmbH")
    assert ("Plain GmbH" in options(client, text)) is listed


def test_a_bad_field_name_falls_back_to_the_customer_field(client, rep):
    customer = make_customer(rep, name="Plain GmbH")
    response = client.get(reverse(OPTIONS), {"field": "<script>", "customer_search": "plain"}, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "<script>" not in body
    assert f'id="customer-option-{customer.pk}"' in body


def test_the_deal_form_renders_the_picked_customer_only_not_every_customer(client, rep):
    customers = [make_customer(rep, name=f"Kunde {i:03d}") for i in range(40)]
    body = client.get(reverse("crm:deal_create")).content.decode()
    assert 'role="combobox"' in body and "Kunde 0" not in body  # no list of 40 options
    chosen = customers[7]
    body = client.get(reverse("crm:deal_create"), {"customer": chosen.pk}).content.decode()
    assert f'value="{chosen.pk}"' in body and 'value="Kunde 007"' in body
    assert "Kunde 008" not in body
    # Another rep's customer in the link is not shown (nor its name leaked).
    foreign = make_customer(make_user(), name="Fremdkunde")
    body = client.get(reverse("crm:deal_create"), {"customer": foreign.pk}).content.decode()
    assert "Fremdkunde" not in body


@pytest.mark.parametrize(
    ("customer", "message"),
    [
        ("", "Choose a customer: type part of the name and pick it from the list."),
        ("9" * 25, "Choose one of your customers from the list."),
        ("abc", "Choose one of your customers from the list."),
    ],
)
def test_a_deal_without_a_picked_customer_is_a_field_error(client, rep, customer, message):
    data = {"customer": customer, "customer_search": "Kunde", "title": "Neu", "kind": "new",
            "stage": stage().pk, "source": "website"}  # fmt: skip
    response = client.post(reverse("crm:deal_create"), data, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and message in body and 'id="id_customer-error"' in body
    assert not Deal.objects.exists()


def test_the_quick_log_without_a_customer_says_so_and_keeps_the_text(client, rep):
    data = {"quick": "1", "customer": "", "kind": "call", "subject": "Rückruf wegen Angebot"}
    response = client.post(reverse("crm:activity_create"), data, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200
    assert "Choose the customer" in body and "Rückruf wegen Angebot" in body
    assert not Activity.objects.exists()
    response = client.post(reverse("crm:activity_create"), data)  # without JavaScript: back, with the message
    assert response.status_code == 302 and response["Location"] == reverse("crm:workspace")
    customer = make_customer(rep)
    response = client.post(reverse("crm:activity_create"), {**data, "customer": customer.pk}, headers=HTMX)
    assert response.status_code == 200 and Activity.objects.filter(customer=customer).exists()


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-inf", "sNaN"])
def test_an_amount_that_is_not_a_number_is_a_field_error_shown_as_typed(client, rep, amount):
    customer = make_customer(rep, name="Kunde")
    data = {"customer": customer.pk, "title": "Neu", "kind": "new", "stage": stage().pk, "source": "website",
            "amount": amount}  # fmt: skip
    response = client.post(reverse("crm:deal_create"), data, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and 'id="id_amount-error"' in body and f'value="{amount}"' in body
    assert not Deal.objects.exists()
