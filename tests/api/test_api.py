"""The API at /api/v1/: tokens, the same access rules and services as the pages, one error shape."""

from decimal import Decimal

import pytest

from accounts.models import ApiToken, SecurityEvent, UsageEvent
from crm.models import Customer, Deal
from tests.factories import make_agent, make_customer, make_deal, make_manager, make_ticket, make_user, stage

pytestmark = pytest.mark.django_db


def test_no_token_or_a_bad_one_is_401_and_logged(client):
    assert client.get("/api/v1/customers/").status_code == 401
    response = client.get("/api/v1/customers/", headers={"Authorization": "Bearer mcrm_nope"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert SecurityEvent.objects.filter(kind="api_token_refused").exists()


def test_a_reps_token_sees_only_their_customers_and_a_foreign_id_is_404(api):
    rep, other = make_user(), make_user()
    mine, theirs = make_customer(rep), make_customer(other)
    client = api(rep)
    ids = [row["id"] for row in client.get("/customers/").json()["results"]]
    assert ids == [mine.pk]
    assert client.get(f"/customers/{mine.pk}").status_code == 200
    for path in (
        f"/customers/{theirs.pk}",
        f"/deals/{make_deal(theirs).pk}",
        f"/tickets/{make_ticket(theirs).pk}",
    ):
        response = client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_create_goes_through_the_services_with_via_api(api):
    rep = make_user()
    response = api(rep).post(
        "/customers/", {"name": "Acme API", "email": "a@acme.example", "kind": "company"}
    )
    assert response.status_code == 201, response.content
    customer = Customer.objects.get(pk=response.json()["id"])
    assert customer.owner == rep and customer.status == Customer.Status.LEAD
    event = UsageEvent.objects.get(object_id=customer.pk, verb="create")
    assert event.via == UsageEvent.Via.API


def test_invalid_input_is_422_with_field_messages(api):
    client = api(make_user())
    response = client.post("/customers/", {"name": "", "email": "not-an-email", "phone": "12"})
    assert response.status_code == 422
    fields = response.json()["error"]["fields"]
    assert {"name", "email", "phone"} <= set(fields)
    response = client.post("/customers/", {"name": ["a list"]})
    assert response.status_code == 422 and "name" in response.json()["error"]["fields"]


@pytest.mark.parametrize(
    "value", ["\u0000", "a\x00b", "\ud800", "x" * 10_000, 10**30, {"nested": True}, None, True, 3.5]
)
def test_hostile_values_never_500(api, value):
    client = api(make_user())
    for body in ({"name": value}, {"name": "Ok", "email": value}, {"name": "Ok", "owner": value}):
        assert client.post("/customers/", body).status_code in (201, 422)
    text = ascii(value)[:200]  # the test client cannot put a lone surrogate in a URL; ascii() escapes it
    assert client.get("/customers/", q=text, cursor=text).status_code in (200, 422)


def test_read_only_token_cannot_write(api):
    response = api(make_user(), ApiToken.Scope.READ).post("/customers/", {"name": "Nope"})
    assert response.status_code == 403 and response.json()["error"]["code"] == "forbidden"


def test_stale_deal_version_is_409_with_what_changed_and_who(api):
    manager = make_manager()
    deal = make_deal()
    client = api(manager)
    first = client.patch(f"/deals/{deal.pk}", {"title": "First", "version": deal.version})
    assert first.status_code == 200, first.content
    assert first.json()["version"] == deal.version + 1
    stale = client.patch(f"/deals/{deal.pk}", {"amount": "5", "version": deal.version})
    assert stale.status_code == 409
    error = stale.json()["error"]
    assert (
        error["code"] == "conflict"
        and "title" in error["changes"]
        and error["current_version"] == deal.version + 1
    )
    assert Deal.objects.get(pk=deal.pk).amount == Decimal("1000")
    via_header = client.patch(
        f"/deals/{deal.pk}", {"amount": "5"}, headers={"If-Match": f'"{deal.version + 1}"'}
    )
    assert via_header.status_code == 200 and Decimal(via_header.json()["amount"]) == 5


def test_deal_won_and_lost_with_a_reason(api):
    deal = make_deal()
    client = api(deal.owner)
    lost = stage("lost")
    response = client.post(f"/deals/{deal.pk}/move", {"stage": lost.pk})
    assert response.status_code == 422 and "lost_reason" in response.json()["error"]["fields"]
    response = client.post(f"/deals/{deal.pk}/move", {"stage": lost.pk, "lost_reason": "Price"})
    assert response.status_code == 200 and response.json()["status"] == Deal.Status.LOST


def test_cursor_pages_cover_every_row_once(api):
    rep = make_user()
    customers = {make_customer(rep).pk for _ in range(7)}
    client, seen, cursor = api(rep), [], None
    while True:
        params = {"limit": 3, "order": "-created_at"} | ({"cursor": cursor} if cursor else {})
        page = client.get("/customers/", **params).json()
        seen += [row["id"] for row in page["results"]]
        cursor = page["next"]
        if not cursor:
            break
    assert sorted(seen) == sorted(customers) and len(seen) == len(set(seen))
    assert client.get("/customers/", cursor="bm9wZQ").status_code == 422


def test_idempotency_key_replays_the_first_answer(api):
    client = api(make_user())
    first = client.post("/customers/", {"name": "Once"}, headers={"Idempotency-Key": "k1"})
    again = client.post("/customers/", {"name": "Once"}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() and again["Idempotent-Replayed"] == "true"
    assert Customer.objects.filter(name="Once").count() == 1
    other = client.post("/customers/", {"name": "Twice"}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_rate_limit_answers_429_with_retry_after(api, settings):
    settings.CRM_API_RATE = "3/d"  # a day's window: the test never straddles two
    client = api(make_user())
    answers = [client.get("/pipelines/").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    assert int(client.get("/pipelines/")["Retry-After"]) >= 1


def test_a_reps_token_cannot_read_another_reps_kpi_scope(api):
    rep, other = make_user(), make_user()
    client = api(rep)
    assert client.get("/kpis/win_rate", scope="user", id=str(other.pk)).status_code == 404
    assert client.get("/kpis/win_rate", scope="company").status_code == 404
    own = client.get("/kpis/win_rate")
    assert own.status_code == 200 and own.json()["scope"] == "user" and own.json()["id"] == str(rep.pk)
    manager = api(make_manager())
    assert manager.get("/kpis/win_rate", scope="user", id=str(other.pk)).status_code == 200
    assert manager.get("/kpis/no_such_kpi").status_code == 404


def test_agents_cannot_create_deals_and_see_only_their_queue(api):
    agent = make_agent()
    customer = make_customer()
    client = api(agent)
    assert client.post("/deals/", {"customer": customer.pk, "title": "X"}).status_code == 404


def test_openapi_document_and_docs_page(client, api):
    schema = client.get("/api/v1/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    assert "/api/v1/customers/" in schema["paths"]
    assert client.get("/api/v1/docs").status_code == 302  # signed-in staff only
    client.force_login(make_user())
    page = client.get("/api/v1/docs")
    assert (
        page.status_code == 200
        and b"swagger-ui-bundle.js" in page.content
        and b"cdn" not in page.content.lower()
    )


def test_field_messages_come_in_the_token_users_language(api):
    client = api(make_user(language="zh-hans"))
    response = client.post("/customers/", {"name": ""})
    assert response.status_code == 422
    assert "这个字段是必填项" in response.json()["error"]["fields"]["name"][0]


def test_token_requests_need_no_csrf_token_and_sessions_do_not_open_the_api(client):
    from django.test import Client

    from tests.api.conftest import token_for

    rep = make_user()
    strict = Client(enforce_csrf_checks=True)
    response = strict.post(
        "/api/v1/customers/",
        {"name": "No CSRF needed"},
        content_type="application/json",
        headers={"Authorization": f"Bearer {token_for(rep)}"},
    )
    assert response.status_code == 201
    signed_in = Client(enforce_csrf_checks=True)
    signed_in.force_login(rep)
    assert signed_in.get("/api/v1/customers/").status_code == 401  # a session is not a token


def test_every_write_counts_as_api_use_not_staff_adoption(api):
    deal = make_deal()
    client = api(deal.owner)
    client.post(f"/deals/{deal.pk}/move", {"stage": stage("won").pk})
    client.post("/activities/", {"deal": deal.pk, "kind": "call", "subject": "Kick-off"})
    events = UsageEvent.objects.filter(user=deal.owner, at__gt=deal.created_at)
    assert events.exists() and set(events.values_list("via", flat=True)) == {UsageEvent.Via.API}


def test_a_stale_customer_version_is_409_and_writes_nothing(api):
    rep = make_user()
    customer = make_customer(rep, city="Berlin")
    client = api(rep)
    read = client.get(f"/customers/{customer.pk}").json()
    assert client.patch(f"/customers/{customer.pk}", {"city": "Köln"}).status_code == 422  # no version
    first = client.patch(f"/customers/{customer.pk}", {"city": "Köln", "version": read["version"]})
    assert first.status_code == 200 and first.json()["version"] == read["version"] + 1
    stale = client.patch(f"/customers/{customer.pk}", {"city": "Bonn", "version": read["version"]})
    assert stale.status_code == 409 and stale.json()["error"]["changes"]["city"] == ["Berlin", "Köln"]
    assert Customer.objects.get(pk=customer.pk).city == "Köln"


def test_an_agent_takes_a_ticket_and_a_rep_cannot_assign(api):
    agent = make_agent()
    ticket = make_ticket()
    response = api(agent).post(f"/tickets/{ticket.pk}/assign", {"assignee": agent.pk})
    assert response.status_code == 200 and response.json()["assignee"] == agent.pk
    assert (
        api(ticket.customer.owner).post(f"/tickets/{ticket.pk}/assign", {"assignee": None}).status_code == 404
    )
    assert api(agent).post(f"/tickets/{ticket.pk}/assign", {"assignee": "x"}).status_code == 422


def test_a_rate_that_is_not_understood_limits_nothing(api, settings):
    settings.CRM_API_RATE = "many/often"
    client = api(make_user())
    assert {client.get("/pipelines/").status_code for _ in range(5)} == {200}


def test_a_rate_limited_post_is_not_replayed_for_its_idempotency_key(api, settings):
    settings.CRM_API_RATE = "1/d"
    client = api(make_user())
    assert client.get("/pipelines/").status_code == 200
    limited = client.post("/customers/", {"name": "Later"}, headers={"Idempotency-Key": "k2"})
    assert limited.status_code == 429
    settings.CRM_API_RATE = "100/d"
    retried = client.post("/customers/", {"name": "Later"}, headers={"Idempotency-Key": "k2"})
    assert retried.status_code == 201 and Customer.objects.filter(name="Later").count() == 1


def test_an_activity_is_read_by_whoever_may_see_it_and_a_foreign_one_is_404(api):
    from tests.factories import make_task

    rep, other, agent = make_user(), make_user(), make_agent()
    mine = make_task(make_customer(rep), subject="Send the offer")
    theirs = make_task(make_customer(other))
    ticket = make_ticket(make_customer(other), assignee=agent)
    on_ticket = api(agent).post("/activities/", {"ticket": ticket.pk, "kind": "note", "subject": "Called"})
    assert on_ticket.status_code == 201
    read = api(rep).get(f"/activities/{mine.pk}")
    assert read.status_code == 200
    body = read.json()
    assert (body["id"], body["kind"], body["subject"], body["customer"], body["user"]) == (
        mine.pk,
        "task",
        "Send the offer",
        mine.customer_id,
        rep.pk,
    )
    assert body["due_at"] is not None and body["done_at"] is None and body["custom"] == {}
    for client, pk in ((api(rep), theirs.pk), (api(rep), 10**12), (api(agent), mine.pk)):
        response = client.get(f"/activities/{pk}")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert api(agent).get(f"/activities/{on_ticket.json()['id']}").status_code == 200
    assert api(make_manager()).get(f"/activities/{theirs.pk}").status_code == 200
    assert api(rep).get("/activities/nope").status_code == 422
