"""The type-ahead people pickers (owners, assignees): options as the manager types, only the people of the
picker's kind, owners only for managers, typed text that still works without JavaScript, and the lists'
owner filters by a picked person or by a typed name."""

from urllib.parse import quote

import pytest
from django.urls import reverse

from accounts.models import User
from tests.factories import make_agent, make_customer, make_deal, make_manager, make_ticket, make_user

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


def options(client, kind: str, text: str, field: str = "owner"):
    encoded = quote(text.encode("utf-8", "surrogatepass"), safe="")
    return client.get(
        f"{reverse('accounts:staff_options', args=[kind])}?field={field}&{field}_search={encoded}",
        headers=HTMX,
    )


def gone(**names) -> User:
    user = make_user(**names)
    User.objects.filter(pk=user.pk).update(is_active=False)
    return user


@pytest.fixture
def manager(client):
    user = make_manager(username="boss", first_name="Bea", last_name="Boss")
    client.force_login(user)
    return user


def test_owner_options_match_names_and_leave_out_agents_and_people_who_left(client, manager):
    anna = make_user(first_name="Anna", last_name="Schmidt")
    gone(first_name="Anton", last_name="Gone")
    make_agent(first_name="Anneliese", last_name="Support")
    body = options(client, "owner", "an").content.decode()
    assert f'data-value="{anna.pk}"' in body and "Anna Schmidt" in body
    assert "Anton Gone" not in body and "Anneliese" not in body
    # Every typed word must match: first and last name together.
    body = options(client, "owner", "anna schm").content.decode()
    assert f'data-value="{anna.pk}"' in body
    assert "No one matches." in options(client, "owner", "anna müller").content.decode()


def test_the_owner_filter_offers_everyone_first_and_people_who_left(client, manager):
    left = gone(first_name="Anton", last_name="Gone")
    body = options(client, "owner-filter", "").content.decode()
    assert body.index("All owners") < body.index("Anton Gone")
    assert 'data-value=""' in body and f'data-value="{left.pk}"' in body and "left" in body


def test_options_are_capped_and_say_there_are_more(client, manager):
    for i in range(15):
        make_user(first_name="Rep", last_name=f"Nummer {i:02d}")
    body = options(client, "owner", "nummer").content.decode()
    assert body.count('role="option" id=') == 12 and "More match: keep typing." in body


def test_owner_options_are_for_managers_only_and_assignees_for_everyone(client):
    rep = make_user()
    make_agent(first_name="Agnes", last_name="Agent")
    client.force_login(rep)
    assert options(client, "owner", "").status_code == 404
    assert options(client, "owner-filter", "").status_code == 404
    assert "Agnes Agent" in options(client, "agent", "agn").content.decode()
    assert options(client, "nobody-kind", "").status_code == 404


@pytest.mark.parametrize("text", ["\x00", "\ud800", "x" * 10_000, "%", "' OR 1=1 --", "\u202e"])
def test_hostile_search_text_is_an_answer_not_an_error(client, manager, text):
    response = options(client, "owner", text)
    assert response.status_code == 200


def test_the_customer_form_takes_a_picked_owner_or_one_unambiguous_typed_name(client, manager):
    anna = make_user(first_name="Anna", last_name="Schmidt")
    make_user(first_name="Jan", last_name="Meyer")
    make_user(first_name="Jana", last_name="Meyer")
    url = reverse("crm:customer_create")
    data = {"name": "Neu GmbH", "kind": "company", "source": "other", "language": "en"}

    # Without JavaScript only the text box is sent: one match is enough.
    response = client.post(url, {**data, "owner_search": "schmidt"})
    assert response.status_code == 302
    assert anna.customers.filter(name="Neu GmbH").exists()

    response = client.post(url, {**data, "name": "Zwei GmbH", "owner_search": "meyer"}, headers=HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert "More than one person matches “meyer”: pick one from the list." in body
    assert 'value="meyer"' in body  # the typed text comes back with the error

    response = client.post(url, {**data, "name": "Drei GmbH", "owner_search": "niemand"}, headers=HTMX)
    assert "No one matches “niemand”." in response.content.decode()

    # A picked id wins over the text box (which holds the picked name).
    jan = User.objects.get(first_name="Jan")
    response = client.post(url, {**data, "name": "Vier GmbH", "owner": jan.pk, "owner_search": "Jan Meyer"})
    assert response.status_code == 302 and jan.customers.filter(name="Vier GmbH").exists()

    # An id of someone who is not an owner (an agent) is refused.
    agent = make_agent()
    response = client.post(url, {**data, "name": "Fünf GmbH", "owner": agent.pk}, headers=HTMX)
    assert "Choose someone from the list." in response.content.decode()


def test_the_form_renders_the_picked_person_only_not_everyone(client, manager):
    for i in range(30):
        make_user(first_name="Rep", last_name=f"Nummer {i:02d}")
    body = client.get(reverse("crm:customer_create")).content.decode()
    assert 'role="combobox"' in body and "Nummer 07" not in body


def test_deal_and_customer_lists_filter_by_a_picked_owner_or_a_typed_name(client, manager):
    anna, bert = (
        make_user(first_name="Anna", last_name="Schmidt"),
        make_user(first_name="Bert", last_name="Ernst"),
    )
    make_deal(make_customer(anna, name="Kunde Anna"), title="Deal Anna")
    make_deal(make_customer(bert, name="Kunde Bert"), title="Deal Bert")

    body = client.get(reverse("crm:deal_list"), {"owner": bert.pk}).content.decode()
    assert "Deal Bert" in body and "Deal Anna" not in body
    assert 'value="Bert Ernst"' in body  # the picker shows who is picked

    body = client.get(reverse("crm:customer_list"), {"owner_search": "schm"}).content.decode()
    assert "Kunde Anna" in body and "Kunde Bert" not in body

    hostile = quote("\x00\ud800".encode("utf-8", "surrogatepass"), safe="")
    body = client.get(f"{reverse('crm:customer_list')}?owner_search={hostile}").content.decode()
    assert "Kunde Anna" not in body  # nobody matches: an empty list, not an error


def test_a_rep_gets_no_owner_filter_and_cannot_widen_the_list_with_it(client):
    rep, other = make_user(), make_user(first_name="Otto", last_name="Other")
    make_customer(other, name="Fremdkunde")
    client.force_login(rep)
    body = client.get(
        reverse("crm:customer_list"), {"owner_search": "otto", "owner": other.pk}
    ).content.decode()
    assert "Fremdkunde" not in body and 'name="owner_search"' not in body


def test_a_ticket_is_assigned_by_picking_an_agent(client, manager):
    agnes = make_agent(first_name="Agnes", last_name="Agent")
    ticket = make_ticket(make_customer(make_user()))
    response = client.post(reverse("crm:ticket_assign", args=[ticket.pk]), {"assignee": agnes.pk})
    assert response.status_code == 302
    ticket.refresh_from_db()
    assert ticket.assignee == agnes
    body = client.get(reverse("crm:ticket_detail", args=[ticket.pk])).content.decode()
    assert 'value="Agnes Agent"' in body and 'role="combobox"' in body


def test_the_dashboard_and_kpi_pages_pick_a_person_by_typing(client, manager):
    rita = make_user(first_name="Rita", last_name="Rep")
    make_agent(first_name="Agnes", last_name="Agent")
    for _ in range(30):
        make_user(first_name="Rep", last_name="Nummer")
    body = client.get(reverse("metrics:dashboard")).content.decode()
    assert 'role="combobox"' in body and "Nummer" not in body  # no list of every person
    assert 'placeholder="Everyone"' in body
    people = options(client, "person", "a").content.decode()
    assert "Rita Rep" in people and "Agnes Agent" in people and "Bea Boss" not in people  # reps and agents
    # Without JavaScript the typed name picks the one person it matches.
    response = client.get(reverse("metrics:dashboard"), {"rep_search": "rita"})
    assert response.context["filters"].rep == rita
    page = client.get(reverse("metrics:kpi_detail", args=["win_rate"]), {"rep": rita.pk}).content.decode()
    assert 'value="Rita Rep"' in page
    # Several match: everyone's numbers, as for any filter value that is not valid.
    assert client.get(reverse("metrics:dashboard"), {"rep_search": "nummer"}).context["filters"].rep is None


def test_the_security_log_filters_by_a_picked_or_typed_user(client, manager):
    rita = make_user(first_name="Rita", last_name="Rep")
    body = client.get(reverse("accounts:security_events")).content.decode()
    assert 'role="combobox"' in body and 'placeholder="Everyone"' in body
    response = client.get(reverse("accounts:security_events"), {"user_search": "rita rep"})
    assert response.context["form"].cleaned_data["user"] == rita
    assert (
        'value="Rita Rep"'
        in client.get(reverse("accounts:security_events"), {"user": rita.pk}).content.decode()
    )
