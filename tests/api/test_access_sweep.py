"""The API's access sweep: every object endpoint, as a rep and as an agent, on records of someone else's
customer (a ticket assigned to another agent) answers 404, reads and writes alike, and changes nothing;
list endpoints never include them."""

import pytest
from django.utils import timezone

from accounts.models import ApiToken
from crm.models import Activity, Customer, Deal, Ticket
from tests.factories import make_agent, make_customer, make_deal, make_task, make_ticket, make_user, stage

pytestmark = pytest.mark.django_db


@pytest.fixture
def foreign():
    other_rep, other_agent = make_user(), make_agent()
    customer = make_customer(other_rep)
    deal = make_deal(customer)
    ticket = make_ticket(customer, assignee=other_agent)
    task = make_task(customer)
    return {"customer": customer, "deal": deal, "ticket": ticket, "task": task}


def _requests(f):
    c, d, t, a = f["customer"].pk, f["deal"].pk, f["ticket"].pk, f["task"].pk
    return [
        ("get", f"/customers/{c}", None),
        ("patch", f"/customers/{c}", {"name": "Taken"}),
        ("post", f"/customers/{c}/status", {"status": "churned", "reason": "x"}),
        ("get", f"/deals/{d}", None),
        ("patch", f"/deals/{d}", {"title": "Taken", "version": 1}),
        ("post", f"/deals/{d}/move", {"stage": stage("won").pk}),
        ("post", "/deals/", {"customer": c, "title": "On a foreign customer"}),
        ("get", f"/tickets/{t}", None),
        ("patch", f"/tickets/{t}", {"custom": {}}),
        ("post", f"/tickets/{t}/messages", {"body": "Hello"}),
        ("post", f"/tickets/{t}/status", {"status": "solved"}),
        ("post", f"/tickets/{t}/assign", {"assignee": None}),
        ("post", "/tickets/", {"customer": c, "subject": "x", "category": "question", "channel": "email"}),
        ("post", "/activities/", {"customer": c, "kind": "call", "subject": "x"}),
        ("post", "/activities/", {"deal": d, "kind": "call", "subject": "x"}),
        ("post", "/activities/", {"ticket": t, "kind": "call", "subject": "x"}),
        ("get", f"/activities/{a}", None),
        ("post", f"/activities/{a}/complete", None),
    ]


@pytest.mark.parametrize("role", ["rep", "agent"])
def test_foreign_records_are_404_everywhere(api, foreign, role):
    user = make_user() if role == "rep" else make_agent()
    client = api(user, ApiToken.Scope.WRITE)
    before = (
        Customer.objects.get(pk=foreign["customer"].pk).name,
        Deal.objects.count(),
        Ticket.objects.count(),
    )
    for method, path, body in _requests(foreign):
        response = client.get(path) if method == "get" else client.send(method, path, body)
        # A ticket on a foreign customer may be refused as invalid (the customer is not in the form's
        # choices): 422 names the field, and nothing about the customer is revealed.
        allowed = (404, 422) if path in ("/deals/", "/tickets/") else (404,)
        assert response.status_code in allowed, (method, path, response.status_code, response.content)
    after = (
        Customer.objects.get(pk=foreign["customer"].pk).name,
        Deal.objects.count(),
        Ticket.objects.count(),
    )
    assert before == after
    assert Activity.objects.filter(subject="x").count() == 0
    unchanged = Ticket.objects.get(pk=foreign["ticket"].pk)
    assert unchanged.status == Ticket.Status.NEW and unchanged.assignee == foreign["ticket"].assignee
    assert Activity.objects.get(pk=foreign["task"].pk).done_at is None
    for path in ("/customers/", "/deals/", "/tickets/", "/activities/", "/surveys/responses"):
        assert client.get(path).json()["results"] == [], path


def test_lists_hold_the_users_own_records(api):
    rep = make_user()
    customer = make_customer(rep)
    deal, ticket = make_deal(customer), make_ticket(customer)
    make_task(customer, due_at=timezone.now())
    client = api(rep)
    assert [r["id"] for r in client.get("/deals/").json()["results"]] == [deal.pk]
    assert [r["id"] for r in client.get("/tickets/").json()["results"]] == [ticket.pk]
    assert len(client.get("/activities/", tasks="true").json()["results"]) == 1
