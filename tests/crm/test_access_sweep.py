"""Walk every URL of the crm app as every role, with a record that role must not see: always 404.

The sweep discovers the URL patterns itself, so a new page that forgets the access rules fails here. A new
kind of ``<pk>`` route must be added to ``FORBIDDEN_OBJECT`` (the test says so).
"""

from datetime import timedelta

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from accounts.models import User
from crm.automation.services import rule_create
from crm.custom_fields.services import field_create
from metrics.cohorts.services import cohort_snapshots_recompute
from metrics.health.services import health_refresh
from metrics.kpis.health import KPIS as HEALTH_KPIS
from metrics.kpis.revenue_retention import KPIS
from metrics.kpis.velocity import TIME_IN_STAGE, VELOCITY, open_stages
from metrics.services.velocity import time_in_stage_recompute
from tests.factories import (
    make_agent,
    make_alert,
    make_campaign,
    make_closed_deal,
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
    "campaigns": "campaign",
    "alerts": "alert",
}


def _crm_routes(namespace: str = "crm") -> list[tuple[str, str]]:
    """(url name, route) of every pattern in the crm namespace (or another app's)."""
    resolver = get_resolver()
    app = next(p for p in resolver.url_patterns if isinstance(p, URLResolver) and p.namespace == namespace)
    return [(f"{namespace}:{p.name}", str(p.pattern)) for p in app.url_patterns if isinstance(p, URLPattern)]


@pytest.fixture
def world():
    """Two reps with a customer each (with deal, ticket, task), two agents, a manager."""
    rep, other_rep = make_user(username="rep"), make_user(username="other_rep")
    agent, other_agent = make_agent(username="agent"), make_agent(username="other_agent")
    manager = make_manager(username="boss")
    campaign = make_campaign(name="Secret campaign", actor=manager)
    secret = make_customer(other_rep, name="Secret Holdings AG", campaign=campaign)
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
            "campaign": campaign,
            "alert": make_alert(other_rep),  # about the other rep's numbers
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


@pytest.mark.parametrize("role", ["rep", "agent"])
def test_every_metrics_object_url_is_404_for_what_the_role_may_not_see(client, world, role):
    """The metrics app's ``<pk>`` URLs too: an alert about another person, another rep's customer."""
    client.force_login(world[role])
    checked = 0
    for name, route in _crm_routes("metrics"):
        if "<int:pk>" not in route:
            continue
        prefix = route.split("/", 1)[0]
        assert prefix in FORBIDDEN_OBJECT, f"add the route {route!r} ({name}) to FORBIDDEN_OBJECT"
        url = reverse(name, args=[world["forbidden"][FORBIDDEN_OBJECT[prefix]].pk])
        for method, htmx in (("get", False), ("post", False), ("get", True), ("post", True)):
            headers = {"HX-Request": "true"} if htmx else {}
            response = getattr(client, method)(url, headers=headers)
            status = response.status_code
            assert status in (404, 405), f"{method.upper()} {url} as {role}: {status}"
            checked += status == 404
    assert checked >= 2


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


@pytest.mark.parametrize("role", ["rep", "agent"])
def test_cohorts_and_revenue_retention_never_show_another_reps_customers(client, world, role):
    """The cohorts page and the drill-downs of its KPIs (metrics URLs, every role may open them): the
    forbidden customer's revenue and cohort count for its owner only, and its name is never listed."""
    secret = world["forbidden"]["customer"]
    for days in (400, 20):
        at = timezone.now() - timedelta(days=days)
        make_closed_deal(secret, created=at, closed=at)
    cohort_snapshots_recompute()
    client.force_login(world[role])
    urls = [reverse("metrics:cohorts")]
    urls += [
        f"{reverse('metrics:kpi_detail', args=[kpi.code])}?granularity=month&part={part}"
        for kpi in KPIS
        for part in kpi.drilldown.parts
    ]
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, url
        assert b"Secret Holdings" not in response.content, f"{url} shows the secret customer to a {role}"


@pytest.mark.parametrize("role", ["rep", "agent"])
def test_customer_health_never_shows_another_reps_customers(client, world, role):
    """The health list, its bands, its KPIs' drill-downs and a customer's score (metrics URLs every role
    may open) go through the customer access rules: the forbidden customer is scored, and never shown."""
    health_refresh()
    client.force_login(world[role])
    secret = world["forbidden"]["customer"]
    health = reverse("metrics:health")
    urls = [health, f"{health}?band=at_risk", f"{health}?band=healthy"]
    urls += [
        f"{reverse('metrics:kpi_detail', args=[kpi.code])}?granularity=month&part={part}"
        for kpi in HEALTH_KPIS
        if kpi.drilldown is not None
        for part in kpi.drilldown.parts
    ]
    for url in urls:
        for headers in ({}, {"HX-Request": "true"}):
            response = client.get(url, headers=headers)
            assert response.status_code == 200, url
            assert b"Secret Holdings" not in response.content, f"{url} shows the secret customer to a {role}"
    assert client.get(reverse("metrics:customer_health", args=[secret.pk])).status_code == 404
    assert client.get(reverse("metrics:health_settings")).status_code == 404


@pytest.mark.parametrize("role", ["rep", "agent", "manager"])
def test_velocity_and_time_in_stage_never_show_another_reps_deals(client, world, role):
    """Velocity's drill-downs, time in stage's stays per stage and their download (metrics URLs): the
    forbidden deal, still in its first stage, is listed for a manager only; an agent sees no deals and
    may not download them."""
    time_in_stage_recompute(full=True)
    client.force_login(world[role])
    velocity = reverse("metrics:kpi_detail", args=[VELOCITY.code])
    stages = reverse("metrics:kpi_detail", args=[TIME_IN_STAGE.code])
    urls = [f"{velocity}?part={part}" for part in VELOCITY.drilldown.parts]
    urls += [f"{stages}?stage={stage.pk}" for stage in open_stages()]
    shown = b""
    for url in urls:
        for headers in ({}, {"HX-Request": "true"}):
            response = client.get(url, headers=headers)
            assert response.status_code == 200, url
            shown += response.content
    download = client.get(reverse("metrics:stays_export"), {"stage": open_stages()[0].pk})
    if role == "agent":
        assert download.status_code == 404
    else:
        shown += b"".join(download.streaming_content)
    assert (b"Secret deal" in shown) == (role == "manager"), f"{role} and the secret deal"
