"""Property-based fuzzing of every POST endpoint: random and hostile form data, as every role.

For each form and HTMX endpoint of the crm app (discovered from the URL patterns, like the access sweep),
the metrics app and the public survey link, hypothesis posts dictionaries of known field names and random
keys mapped to hostile values (huge and NUL-bearing strings, unicode, 1e309, negative and foreign ids,
SQL and HTML). Properties: the response is never a 5xx (the test client re-raises a server error), and a
refused request (4xx, or a form re-rendered with errors) leaves the main tables exactly as they were.
"""

import inspect
import re
from typing import Any

import pytest
from django import forms as django_forms
from django.db import connection
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm import automation_forms as crm_automation_forms
from crm import custom_field_forms as crm_custom_field_forms
from crm import data_forms as crm_data_forms
from crm import forms as crm_forms
from crm.automation.services import rule_create
from crm.campaigns import forms as crm_campaign_forms
from crm.custom_fields.services import field_create
from metrics import forms as metrics_forms
from metrics.cohorts import forms as metrics_cohort_forms
from metrics.health import forms as metrics_health_forms
from metrics.kpis import registry
from surveys import forms as survey_forms
from tests.factories import (
    make_agent,
    make_alert,
    make_campaign,
    make_customer,
    make_deal,
    make_duplicate_pair,
    make_import_job,
    make_invitation,
    make_manager,
    make_task,
    make_ticket,
    make_user,
    make_webhook,
)
from tests.fault_kit import celery_broker, redis_server

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

ROLES = ("rep", "agent", "manager")
# Tables whose rows a refused request must not touch.
MAIN_TABLES = (
    "crm_customer",
    "crm_deal",
    "crm_ticket",
    "crm_activity",
    "crm_importjob",
    "crm_duplicatecandidate",
    "crm_campaign",
    "metrics_kpitarget",
    "metrics_healthsettings",
    "metrics_alert",
    "surveys_survey",
    "surveys_surveyinvitation",
    "surveys_surveyresponse",
)
HOSTILE = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "x" * 100_000,
    "é" * 5_000,
    "😀" * 1_000,
    "\u202egnp.exe",
    "1e309",
    "-1e309",
    "NaN",
    "Infinity",
    "-0",
    "-1",
    "0",
    "-9223372036854775809",
    "9223372036854775808",
    "99999999999999999999999999999999",
    "1.000000000000000000001",
    "1,5",
    "' OR 1=1 --",
    "'; DROP TABLE crm_deal; --",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "{{ 7|add:7 }}{% debug %}",
    "%s%n%x",
    "../../../../etc/passwd",
    "2024-02-30",
    "0000-00-00",
    "9999-12-31",
    "2024-13-01T25:61",
    "null",
    "true",
    "[]",
    '{"a": 1}',
]


def _form_field_names() -> list[str]:
    """Every field name of every form class of the apps under test (so payloads reach real code)."""
    names: set[str] = {"step", "score", "comment", "next", "version", "q", "csrfmiddlewaretoken"}
    names.add("cf_lot")  # the world's custom field, in the customer forms
    # The rule form's rows (its fields are made per row).
    names |= {f"conditions-0-{part}" for part in ("field", "op", "value")}
    names |= {f"actions-0-{part}" for part in ("type", "days", "user", "stage", "field", "value", "body_en")}
    modules = (
        crm_forms,
        crm_data_forms,
        crm_custom_field_forms,
        crm_automation_forms,
        crm_campaign_forms,
        metrics_forms,
        metrics_cohort_forms,
        metrics_health_forms,
    )
    for module in (*modules, survey_forms):
        for _name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, django_forms.BaseForm):
                names.update(getattr(cls, "base_fields", {}))
    return sorted(names)


def _routes(namespace: str) -> list[tuple[str, str]]:
    """(url name, route) of every pattern in ``namespace``, including nested includes."""

    def walk(patterns, prefix: str) -> list[tuple[str, str]]:
        out = []
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                out += walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern) and pattern.name:
                out.append((f"{namespace}:{pattern.name}", prefix + str(pattern.pattern)))
        return out

    resolver = next(
        p for p in get_resolver().url_patterns if isinstance(p, URLResolver) and p.namespace == namespace
    )
    return walk(resolver.url_patterns, "")


def _endpoints() -> list[tuple[str, str]]:
    return _routes("crm") + _routes("metrics") + _routes("surveys_public")


# Route prefix -> which of the rep's records a ``<int:pk>`` in it names.
OBJECT_FOR_PREFIX = {
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
FIELDS = _form_field_names()


@pytest.fixture
def world(settings):
    """A rep with one record of every kind, an agent, a manager, a survey link; Celery on our own Redis."""
    settings.SURVEYS_RATE_LIMIT = ""
    rep, agent, manager = make_user(), make_agent(), make_manager()
    customer = make_customer(rep)
    other = make_customer(make_user())
    objects = {
        "customer": customer,
        "deal": make_deal(customer),
        "ticket": make_ticket(customer, assignee=agent),
        "task": make_task(customer),
        "import_job": make_import_job(rep, "name\nFuzz Import Row\n"),
        "duplicate": make_duplicate_pair(customer, make_customer(rep, name="Fuzz Twin")),
        "foreign_deal": make_deal(other),
        **_webhook(manager),
        "custom_field": field_create(
            actor=manager, entity="customer", key="lot", label_en="Lot", kind="integer"
        ),
        "automation_rule": _rule(manager),
        "campaign": make_campaign(name="Fuzz campaign", cost=500, actor=manager),
        "alert": make_alert(rep),
    }
    clients = {}
    for role, user in (("rep", rep), ("agent", agent), ("manager", manager)):
        clients[role] = Client()
        clients[role].force_login(user)
    ids = sorted({str(o.pk) for o in objects.values()} | {str(u.pk) for u in (rep, agent, manager)})
    with redis_server() as (redis_url, _process), celery_broker(redis_url):
        yield {
            "clients": clients,
            "objects": objects,
            "ids": ids,
            "invitation": make_invitation(customer=customer),
            "kpi": next(iter(registry())),
        }


def _webhook(owner) -> dict:
    webhook, delivery = make_webhook(owner)
    return {"webhook": webhook, "webhook_delivery": delivery}


def _rule(manager):
    note = {"type": "add_note", "text_en": "Fuzz note"}
    return rule_create(
        actor=manager, name="Fuzz rule", trigger="deal.created", params={}, conditions=[], actions=[note]
    )


def _url(world: dict[str, Any], name: str, route: str) -> str:
    kwargs: dict[str, Any] = {}
    if "<int:pk>" in route:
        kwargs["pk"] = world["objects"][OBJECT_FOR_PREFIX[route.split("/", 1)[0]]].pk
    if "<slug:code>" in route:
        kwargs["code"] = world["kpi"]
    if "<slug:kind>" in route:  # a people picker
        kwargs["kind"] = "owner"
    if "<str:token>" in route:
        kwargs["token"] = world["invitation"].token
    if "<int:delivery_pk>" in route:
        kwargs["delivery_pk"] = world["objects"]["webhook_delivery"].pk
    known = {"<int:pk>", "<slug:code>", "<slug:kind>", "<str:token>", "<int:delivery_pk>"}
    unknown = set(re.findall(r"<[^>]+>", route)) - known
    assert not unknown, f"teach the fuzzer the converter(s) {unknown} of {name}"
    return reverse(name, kwargs=kwargs)


def _fingerprint() -> dict[str, str]:
    """A digest of every row of the main tables."""
    digests = {}
    with connection.cursor() as cursor:
        for table in MAIN_TABLES:
            cursor.execute(f"SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t.id), '')) FROM {table} t")  # noqa: S608
            digests[table] = cursor.fetchone()[0]
    return digests


# How the templates mark a form re-rendered with errors (crm/_field.html, crm/_form_errors.html, surveys).
ERROR_MARKERS = re.compile(rb'class="(errorlist|field-error|form-errors|survey-error)[" ]')


def _refused(status: int, body: bytes) -> bool:
    """A 4xx, or a page that re-renders a form with errors: the request must not have changed anything."""
    return status >= 400 or (status == 200 and ERROR_MARKERS.search(body) is not None)


# Keys are real field names or random ones; the world's ids are mixed in by the test itself.
payloads = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.text(min_size=1, max_size=20)),
    st.one_of(
        st.sampled_from(HOSTILE),
        st.text(max_size=300),
        st.integers().map(str),
        st.floats().map(repr),
        st.integers(min_value=-(2**63), max_value=-1).map(str),
        st.lists(st.sampled_from(HOSTILE), max_size=3),
    ),
    max_size=10,
)


@pytest.mark.parametrize(("name", "route"), _endpoints(), ids=[n for n, _r in _endpoints()])
def test_hostile_posts_never_fail_and_refusals_change_nothing(world, name, route):
    url = _url(world, name, route)

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        role=st.sampled_from(ROLES),
        data=payloads,
        id_value=st.sampled_from(world["ids"]),
        id_field=st.sampled_from(["customer", "deal", "ticket", "stage", "assignee", "owner", "pk"]),
        htmx=st.booleans(),
    )
    def post(role: str, data: dict[str, Any], id_value: str, id_field: str, htmx: bool) -> None:
        data = {key.replace("\x00", ""): value for key, value in data.items()}
        data.setdefault(id_field, id_value)
        before = _fingerprint()
        headers = {"HX-Request": "true"} if htmx else {}
        response = world["clients"][role].post(url, data, headers=headers)
        assert response.status_code < 500, f"POST {url} as {role}: {response.status_code}"
        body = b"" if response.streaming else response.content
        if _refused(response.status_code, body):
            assert _fingerprint() == before, f"refused POST {url} as {role} changed data: {data!r:.300}"

    post()


@pytest.mark.parametrize("target", ["a\x00b", "crm:deal_list", "https://evil.example/", "//evil.example/"])
def test_task_complete_ignores_a_next_that_is_not_a_local_path(client, target):
    """Found by the fuzzer: a bare word in ``next`` went to ``redirect()`` as a URL name (NoReverseMatch)."""
    task = make_task()
    client.force_login(task.customer.owner)
    response = client.post(reverse("crm:task_complete", args=[task.pk]), {"next": target})
    assert response.status_code == 302
    assert response["Location"] == reverse("crm:workspace")


def test_task_complete_returns_to_a_local_next(client):
    task = make_task()
    client.force_login(task.customer.owner)
    response = client.post(reverse("crm:task_complete", args=[task.pk]), {"next": "/crm/deals/?page=2"})
    assert response["Location"] == "/crm/deals/?page=2"
