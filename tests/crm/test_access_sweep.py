"""Walk every URL of the crm app as every role, with a record that role must not see: always 404.

The sweep discovers the URL patterns itself, so a new page that forgets the access rules fails here. A new
kind of ``<pk>`` route must be added to ``FORBIDDEN_OBJECT`` (the test says so).
"""

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from accounts.models import User
from crm.automation.services import rule_create
from crm.custom_fields.services import field_create
from tests.factories import (
    make_agent,
    make_customer,
    make_deal,
    make_duplicate_pair,
    make_import_job,
    make_manager,
    make_task,
    make_ticket,
    make_user,
    make_webhook,
)

pytestmark = pytest.mark.django_db

# Route prefix -> which forbidden record a ``<pk>`` in it names.
FORBIDDEN_OBJECT = {
    "customers": "customer",
    "deals": "deal",
    "tickets": "ticket",
    "tasks": "task",
    "imports": "import_job",
    "duplicates": "duplicate",
    "webhooks": "webhook",
    "fields": "custom_field",
    "automation": "automation_rule",
}


def _crm_routes() -> list[tuple[str, str]]:
    """(url name, route) of every pattern in the crm namespace."""
    resolver = get_resolver()
    crm = next(p for p in resolver.url_patterns if isinstance(p, URLResolver) and p.namespace == "crm")
    return [(f"crm:{p.name}", str(p.pattern)) for p in crm.url_patterns if isinstance(p, URLPattern)]


@pytest.fixture
def world():
    """Two reps with a customer each (with deal, ticket, task), two agents, a manager."""
    rep, other_rep = make_user(username="rep"), make_user(username="other_rep")
    agent, other_agent = make_agent(username="agent"), make_agent(username="other_agent")
    manager = make_manager(username="boss")
    secret = make_customer(other_rep, name="Secret Holdings AG")
    ticket = make_ticket(secret, assignee=other_agent, subject="Secret ticket")
    return {
        "rep": rep,
        "agent": agent,
        "manager": manager,
        "forbidden": {
            "customer": secret,
            "deal": make_deal(secret, title="Secret deal"),
            "ticket": ticket,
            "task": make_task(secret, subject="Secret task"),
            "import_job": make_import_job(other_rep, "name\nSecret Import Row\n"),
            "duplicate": make_duplicate_pair(secret, make_customer(other_rep, name="Secret Twin")),
            **_webhook(manager),
            "custom_field": field_create(actor=manager, entity="customer", key="secret", label_en="Secret"),
            "automation_rule": _rule(manager),
        },
    }


def _rule(manager):
    note = {"type": "add_note", "text_en": "Secret note"}
    return rule_create(
        actor=manager, name="Secret rule", trigger="deal.created", params={}, conditions=[], actions=[note]
    )


def _webhook(owner) -> dict:
    webhook, delivery = make_webhook(owner)
    return {"webhook": webhook, "webhook_delivery": delivery}


@pytest.mark.parametrize("role", ["rep", "agent"])
def test_every_object_url_is_404_for_a_record_the_role_may_not_see(client, world, role):
    client.force_login(world[role])
    checked = 0
    for name, route in _crm_routes():
        if "<int:pk>" not in route:
            continue
        prefix = route.split("/", 1)[0]
        assert prefix in FORBIDDEN_OBJECT, f"add the route {route!r} ({name}) to FORBIDDEN_OBJECT"
        args = [world["forbidden"][FORBIDDEN_OBJECT[prefix]].pk]
        if "<int:delivery_pk>" in route:
            args.append(world["forbidden"]["webhook_delivery"].pk)
        url = reverse(name, args=args)
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            assert response.status_code in (404, 405), (
                f"{method.upper()} {url} as {role}: {response.status_code}"
            )
            if response.status_code == 405:
                continue
            checked += 1
            response = getattr(client, method)(url, headers={"HX-Request": "true"})
            assert response.status_code == 404, f"htmx {method.upper()} {url} as {role}"
    assert checked >= 10


@pytest.mark.parametrize("role", ["rep", "agent", "manager"])
def test_collection_urls_never_show_another_reps_records(client, world, role):
    client.force_login(world[role])
    for name, route in _crm_routes():
        if "<int:pk>" in route:
            continue
        response = client.get(reverse(name))
        assert response.status_code in (200, 404, 405), f"{name} as {role}: {response.status_code}"
        body = (b"".join(response.streaming_content) if response.streaming else response.content).decode()
        if role != "manager":
            for secret in ("Secret Holdings", "Secret deal", "Secret ticket", "Secret task"):
                assert secret not in body, f"{name} shows {secret!r} to a {role}"


@pytest.mark.parametrize("role", ["rep", "agent"])
def test_logging_an_activity_on_a_forbidden_record_is_404(client, world, role):
    client.force_login(world[role])
    forbidden = world["forbidden"]
    for field in ("customer", "deal", "ticket"):
        response = client.post(
            reverse("crm:activity_create"), {field: forbidden[field].pk, "kind": "note", "subject": "x"}
        )
        assert response.status_code == 404


def test_duplicate_warning_names_only_visible_customers(client, world):
    client.force_login(world["rep"])
    response = client.get(reverse("crm:customer_duplicates"), {"name": "Secret Holdings"})
    body = response.content.decode()
    assert response.status_code == 200
    assert "Secret Holdings" not in body
    assert "belongs to a colleague" in body


def test_manager_sees_the_record_the_others_may_not(client, world):
    client.force_login(world["manager"])
    for name, obj in (
        ("crm:customer_detail", "customer"),
        ("crm:deal_detail", "deal"),
        ("crm:ticket_detail", "ticket"),
    ):
        assert client.get(reverse(name, args=[world["forbidden"][obj].pk])).status_code == 200
    assert world["manager"].role == User.Role.MANAGER
