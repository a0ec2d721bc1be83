"""PATCH /tickets/{id}: what the ticket page edits (its custom-field values), through the same service:
validated at ``custom.<key>``, with history and a usage event via the API; a value someone else changed
since the client read it (``seen``) is refused with 409, as the page refuses it."""

import pytest

from accounts.models import ApiToken, UsageEvent
from crm import services
from crm.custom_fields.services import field_create
from crm.models import Ticket
from tests.factories import make_agent, make_customer, make_manager, make_ticket, make_user

pytestmark = pytest.mark.django_db

KINDS = [{"key": "scanner", "en": "Scanner", "zh": "扫描仪"}, {"key": "pump", "en": "Pump", "zh": "泵"}]


@pytest.fixture
def fields():
    manager = make_manager()
    field_create(actor=manager, entity="ticket", key="serial", label_en="Serial", kind="integer")
    field_create(
        actor=manager, entity="ticket", key="device", label_en="Device", kind="choice", choices=KINDS
    )
    field_create(actor=manager, entity="ticket", key="lot", label_en="Lot", kind="text")


@pytest.fixture
def rep():
    return make_user()


@pytest.fixture
def ticket(rep, fields, no_auto_assign):
    return make_ticket(make_customer(rep), custom={"serial": 7, "lot": "L-1"})


def test_patch_changes_only_the_keys_sent_with_history_and_a_usage_event(api, rep, ticket):
    response = api(rep).patch(f"/tickets/{ticket.pk}", {"custom": {"device": "Pump", "serial": None}})
    assert response.status_code == 200, response.content
    assert response.json()["custom"] == {"device": "pump", "lot": "L-1"}
    ticket.refresh_from_db()
    assert ticket.custom == {"device": "pump", "lot": "L-1"}
    latest = ticket.history.latest("history_date")
    assert latest.history_user == rep and latest.custom == ticket.custom
    event = UsageEvent.objects.filter(user=rep, verb=UsageEvent.Verb.UPDATE, object_id=ticket.pk).get()
    assert event.via == UsageEvent.Via.API


def test_patch_refuses_bad_values_at_their_keys_and_writes_nothing(api, rep, ticket):
    client = api(rep)
    response = client.patch(f"/tickets/{ticket.pk}", {"custom": {"serial": "seven", "device": "x", "no": 1}})
    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    assert set(fields) == {"custom.serial", "custom.device", "custom.no"}
    assert "is not one of the choices" in fields["custom.device"][0]
    assert Ticket.objects.get(pk=ticket.pk).custom == {"serial": 7, "lot": "L-1"}
    missing = client.patch(f"/tickets/{ticket.pk}", {"seen": {}})
    assert missing.status_code == 422 and "custom" in missing.json()["error"]["fields"]
    for body in ({"custom": []}, {"custom": {"lot": "x"}, "seen": "x"}):
        assert client.patch(f"/tickets/{ticket.pk}", body).status_code == 422


def test_an_empty_change_writes_nothing(api, rep, ticket):
    history = ticket.history.count()
    response = api(rep).patch(f"/tickets/{ticket.pk}", {"custom": {}})
    assert response.status_code == 200 and response.json()["custom"] == {"serial": 7, "lot": "L-1"}
    assert ticket.history.count() == history


def test_a_value_changed_since_it_was_read_is_a_409_naming_who_changed_it(api, rep, ticket):
    client = api(rep)
    seen = client.get(f"/tickets/{ticket.pk}").json()["custom"]
    manager = make_manager(first_name="Mei", last_name="Lin")
    services.custom_values_set(obj=ticket, actor=manager, changes={"serial": 8}, via="web")
    stale = client.patch(f"/tickets/{ticket.pk}", {"custom": {"serial": 9, "lot": "L-2"}, "seen": seen})
    assert stale.status_code == 409, stale.content
    error = stale.json()["error"]
    assert error["code"] == "conflict"
    assert error["changes"] == {"custom.serial": [7, 8]}
    assert error["changed_by"] == [str(manager)]
    assert Ticket.objects.get(pk=ticket.pk).custom == {"serial": 8, "lot": "L-1"}
    # A key nobody else touched, or the value the other user already set, goes through.
    fine = client.patch(f"/tickets/{ticket.pk}", {"custom": {"serial": "8", "lot": "L-2"}, "seen": seen})
    assert fine.status_code == 200, fine.content
    # Read as the field reads input ("7" is the integer 7); read again, the change applies.
    again = client.patch(f"/tickets/{ticket.pk}", {"custom": {"serial": 9}, "seen": {"serial": "8"}})
    assert again.status_code == 200 and again.json()["custom"]["serial"] == 9
    # Without ``seen`` the keys sent are written as they are.
    blind = client.patch(f"/tickets/{ticket.pk}", {"custom": {"serial": 10}})
    assert blind.json()["custom"] == {"serial": 10, "lot": "L-2"}


def test_a_field_cleared_meanwhile_is_a_conflict_too(api, rep, ticket):
    client = api(rep)
    seen = client.get(f"/tickets/{ticket.pk}").json()["custom"]
    services.custom_values_set(obj=ticket, actor=make_manager(), changes={"lot": None}, via="web")
    stale = client.patch(f"/tickets/{ticket.pk}", {"custom": {"lot": "L-9"}, "seen": seen})
    assert stale.status_code == 409
    assert stale.json()["error"]["changes"] == {"custom.lot": ["L-1", None]}


def test_others_tickets_are_404_and_a_read_token_may_not_write(api, rep, ticket):
    agent, other_agent = make_agent(), make_agent()
    services.ticket_assign(ticket=ticket, assignee=agent, actor=make_manager())
    for outsider in (make_user(), other_agent):
        response = api(outsider).patch(f"/tickets/{ticket.pk}", {"custom": {"lot": "Taken"}})
        assert response.status_code == 404, response.content
    read_only = api(rep, ApiToken.Scope.READ).patch(f"/tickets/{ticket.pk}", {"custom": {"lot": "x"}})
    assert read_only.status_code in (401, 403)
    assert Ticket.objects.get(pk=ticket.pk).custom == {"serial": 7, "lot": "L-1"}
    ok = api(agent).patch(f"/tickets/{ticket.pk}", {"custom": {"lot": "A-1"}})
    assert ok.status_code == 200 and ok.json()["custom"] == {"serial": 7, "lot": "A-1"}


def test_the_openapi_document_describes_the_ticket_patch(api):
    document = api(make_user()).get("/openapi.json").json()
    operation = document["paths"]["/api/v1/tickets/{ticket_id}"]["patch"]
    assert set(operation["responses"]) >= {"200", "404", "409", "422"}
    body = document["components"]["schemas"]["TicketUpdateIn"]
    assert body["required"] == ["custom"] and "seen" in body["properties"]
