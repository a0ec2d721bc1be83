"""The sweep: hostile input to every URL pattern as every role, and to every step of an import.

What it covers:

- every URL pattern of the resolver (crm, accounts, metrics, surveys, surveys_public, the root patterns
  and the Django admin), GET and POST, normal and htmx, as anonymous, rep, agent, manager and admin;
- every parameter a view reads — found in its source and the forms it builds (``sweep_kit.view_reads``),
  in the forms and links of the rendered pages, plus the common ones when a view reads the whole query —
  with every value of ``sweep_kit.HOSTILE`` (empty, whitespace, NUL, the ``\\u0000`` escape, lone
  surrogates, RTL override, full-width digits, 10 000 characters, years 0/1/9999, negative, huge and NaN
  numbers, SQL, HTML, …): one parameter at a time inside an otherwise filled-in form, all parameters at
  once, reversed ranges, and as a JSON body; hostile path segments and record ids;
- every import step (upload, mapping, preview, start, the check and run tasks, progress, report) with
  broken and hostile files (empty, binary, UTF-16, 250 columns, a 200 kB cell, broken quotes, damaged
  and oversized-dimension XLSX, a hostile value in each column of each kind) and hostile form values.

Every request runs in a savepoint that is rolled back, so each one meets the same world. A server error
(a 500, or an exception while streaming a download or running an import task) fails the test, and so
does a request slower than 5 s; they are counted per request and listed at the end, one per root cause
(exception type + innermost project frame), also in the findings file (``CRM_SWEEP_FINDINGS``, default
/tmp/sweep_findings.md).

CI runs a deterministic sample (``random.Random(CRM_SWEEP_SEED)``, seed 8 unless set). The full sweep:

    make sweep                               # CRM_SWEEP=full pytest tests/test_sweep.py
    CRM_SWEEP=full CRM_SWEEP_SEED=3 pytest tests/test_sweep.py -k imports

Both print the summary line ``sweep: <n> requests, <n> server errors (500s), <n> slow (> 5 s), <s> s``.
"""

import csv
import io
import itertools
import logging
import os
import random
import re
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from django.apps import apps
from django.contrib.admin.views.main import (
    ALL_VAR,
    ERROR_FLAG,
    IS_FACETS_VAR,
    IS_POPUP_VAR,
    ORDER_VAR,
    PAGE_VAR,
    SEARCH_VAR,
    TO_FIELD_VAR,
)
from django.contrib.contenttypes.models import ContentType
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import resolve, reverse
from django.utils import timezone, translation
from openpyxl import Workbook

from accounts.models import ApiToken
from accounts.services.api_tokens import api_token_create
from crm.automation.models import AutomationRun, note
from crm.automation.services import rule_create
from crm.custom_fields.models import CustomField
from crm.custom_fields.services import field_create
from crm.data import imports, merge
from crm.data.imports import import_job_run
from crm.data.imports import services as import_services
from crm.data.imports import writing as import_writing
from crm.models import Customer, ImportJob
from crm.tasks import check_import, run_import
from metrics.health.services import health_refresh
from metrics.kpis import registry
from surveys.emails import unsubscribe_token
from tests import sweep_kit
from tests.factories import (
    make_admin,
    make_agent,
    make_alert,
    make_answer,
    make_campaign,
    make_customer,
    make_deal,
    make_duplicate_pair,
    make_import_job,
    make_invitation,
    make_manager,
    make_survey,
    make_task,
    make_team,
    make_ticket,
    make_user,
    make_webhook,
)
from tests.fault_kit import celery_broker, redis_server
from tests.sweep_kit import HOSTILE, Endpoint, Harness, Ledger, PageScan, Sent, import_crash

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

FULL = os.environ.get("CRM_SWEEP", "ci") == "full"
MODE = "full" if FULL else "ci"
SEED = int(os.environ.get("CRM_SWEEP_SEED", "8"))
FINDINGS = Path(os.environ.get("CRM_SWEEP_FINDINGS", "/tmp/sweep_findings.md"))  # noqa: S108

ROLES = ("anonymous", "rep", "agent", "manager", "admin")
IMPORTERS = ("rep", "manager")
# Swept too where a view reads the whole query (``request.GET.dict()``, ``.copy()``, ``.urlencode()``).
COMMON_PARAMS = {"period", "granularity", "since", "from", "to", "scope", "id", "page", "sort", "q", "next"}
# What the Django admin reads besides its forms and the filters in its links: on a change list, everywhere.
ADMIN_LIST_PARAMS = {ALL_VAR, ERROR_FLAG, IS_FACETS_VAR, ORDER_VAR, PAGE_VAR, SEARCH_VAR}
ADMIN_LIST_PARAMS |= {"action", "index", "select_across", "_selected_action"}
ADMIN_PARAMS = {IS_POPUP_VAR, TO_FIELD_VAR, "_changelist_filters", "post"}
NEVER_SWEPT = {"csrfmiddlewaretoken"}  # the test client does not enforce CSRF
LOGIN_PATHS = ("/accounts/login/", "/admin/login/")

# (namespace, first segment of the route inside it) of a ``<int:pk>`` route -> the world's record.
PK_RECORDS = {
    ("crm", "customers"): "customer",
    ("crm", "deals"): "deal",
    ("crm", "tickets"): "ticket",
    ("crm", "tasks"): "task",
    ("crm", "imports"): "import_job",
    ("crm", "duplicates"): "duplicate",
    ("surveys", "<int:pk>"): "survey",
    ("surveys", "invitations"): "invitation",
    ("accounts", "api-tokens"): "api_token",
    ("crm", "webhooks"): "webhook",
    ("crm", "fields"): "custom_field",
    ("crm", "automation"): "automation_rule",
    ("metrics", "customers"): "customer",
    ("crm", "campaigns"): "campaign",
    ("metrics", "alerts"): "alert",
}
TOKENS = {"surveys_public:answer": "token", "surveys_public:unsubscribe": "unsubscribe_token"}
PK_VARIANTS = {"pk-zero": "0", "pk-beyond-bigint": "9" * 25}

# The CI sample: about a minute on two cores.
CI_COMBOS = 700  # (URL, role, method, htmx) combinations, beyond the crawl of every page as every role
CI_CASES_PER_COMBO = 8
CI_PATH_CASES = 400
CI_CELL_FILES = 12
CI_FORM_CASES = 6  # hostile mapping and start values per import step


@dataclass(frozen=True)
class Case:
    """One hostile payload: which parameter got which value (for the report), the pairs or a JSON body."""

    param: str
    value: str
    pairs: tuple[tuple[str, str | list[str]], ...] = ()
    json: bytes = b""


def shown(label: str, value: str | list[str]) -> str:
    return f"{label} {sweep_kit.describe(value)}"


# The world: one record of every kind, every role signed in, Celery on our own Redis
# ---------------------------------------------------------------------------------------------------------


class World:
    """Every role, and one record of every kind a URL names: the rep's customer with a deal, a ticket
    assigned to the agent, a task, an import, a duplicate pair, a merge, a survey link and its answer."""

    def __init__(self) -> None:
        team = make_team()
        self.users = {
            "rep": make_user(username="sweep_rep", team=team),
            "agent": make_agent(username="sweep_agent"),
            "manager": make_manager(username="sweep_manager"),
            "admin": make_admin(username="sweep_admin"),
        }
        rep, manager = self.users["rep"], self.users["manager"]
        customer = make_customer(rep, name="Sweep Customer GmbH", phone="+49 30 1234567", city="Berlin")
        survey = make_survey("nps")
        invitation = make_invitation(survey, customer)
        make_answer(survey, customer, 3, timezone.now() - timedelta(days=2), comment="Slow replies")
        make_deal(make_customer(make_user(username="sweep_other_rep")), title="Foreign deal")
        merge.customer_merge(survivor=customer, merged=make_customer(rep, name="Sweep Old"), actor=manager)
        import_text = "name,email\nSweep Import Row,row@example.com\n"
        self.records: dict[str, Any] = {
            "customer": customer,
            "deal": make_deal(customer, title="Sweep deal"),
            "ticket": make_ticket(customer, assignee=self.users["agent"], subject="Sweep ticket"),
            "task": make_task(customer, subject="Sweep task"),
            "import_job": make_import_job(rep, import_text),
            "duplicate": make_duplicate_pair(customer, make_customer(rep, name="Sweep Customer")),
            "survey": survey,
            "invitation": invitation,
        }
        # Imports are their creator's only: each importer's <pk> is its own job.
        self.own = {
            role: {"import_job": make_import_job(self.users[role], import_text)}
            for role in ("manager", "admin")
        }
        # API tokens are their owner's only: each role revokes its own.
        for role, user in self.users.items():
            token = api_token_create(actor=user, user=user, name="Sweep", scope=ApiToken.Scope.READ).token
            self.own.setdefault(role, {})["api_token"] = token
        self.records["api_token"] = self.own["rep"]["api_token"]
        self.records["webhook"], self.records["webhook_delivery"] = make_webhook(
            self.users["manager"], name="Sweep hook"
        )
        self.records["custom_field"] = _custom_fields(manager)
        self.records["automation_rule"] = _automation_rule(manager, self.records["deal"])
        # Scored as of tomorrow's start, so today's customers are scored: the health pages list them with
        # their components (and, first, so the KPI snapshots read the scores).
        health_refresh(now=timezone.now() + timedelta(days=1))
        self.records["campaign"] = make_campaign(name="Sweep campaign", cost=1200, actor=manager)
        self.records["alert"] = make_alert(rep)  # the rep's numbers: theirs and the managers' to dismiss
        self.token = invitation.token
        self.unsubscribe_token = unsubscribe_token(invitation)
        self.kpi = next(iter(registry()))
        self.victim = make_user(username="sweep_victim")  # the admin's change and delete pages name this user
        self.clients = {role: Client(raise_request_exception=False) for role in ROLES}
        for role in self.users:
            self.login(role)

    def login(self, role: str) -> None:
        self.clients[role].force_login(self.users[role])

    def record(self, role: str, key: str) -> Any:
        return self.own.get(role, {}).get(key) or self.records[key]


def _custom_fields(manager: Any) -> Any:
    """A custom field of every type on customers (their forms take hostile values too), one on deals,
    tickets and activities; the first is the one a ``fields/<pk>/`` URL names."""
    options = [{"key": "a", "en": "A", "zh": "甲"}, {"key": "b", "en": "B", "zh": "乙"}]
    fields = [
        field_create(actor=manager, entity=entity, key=f"sweep_{kind}", label_en=kind, kind=kind,
                     choices=options if kind.endswith("choice") else [])
        for entity, kind in [*(("customer", kind) for kind in CustomField.Kind.values),
                             ("deal", "date"), ("ticket", "integer"), ("activity", "yes_no")]
    ]  # fmt: skip
    return fields[0]


def _automation_rule(manager: Any, deal: Any) -> Any:
    """A rule with settings, conditions (one on a custom field) and actions, and a run in its log."""
    rule = rule_create(
        actor=manager,
        name="Sweep rule",
        trigger="deal.idle",
        params={"days": 14, "stage": deal.stage_id},
        conditions=[
            {"field": "amount", "op": "gte", "value": 1000},
            {"field": "custom.sweep_date", "op": "set"},
        ],
        actions=[
            {"type": "create_task", "assignee": "owner", "days": 2, "subject_en": "Call", "subject_zh": ""},
            {"type": "send_email", "to": "customer", "subject_en": "Hello", "body_en": "Hi {{ customer }}"},
        ],
    )
    AutomationRun.objects.create(
        rule=rule, object_type="deal", object_id=deal.pk, event_key="idle:sweep", status="done",
        outcome=[note("Note added.")], created_at=timezone.now(),
    )  # fmt: skip
    return rule


@pytest.fixture(scope="module")
def ledger(pytestconfig) -> Iterator[Ledger]:
    """One ledger for the module: the findings file and the summary line cover every test that ran; the
    full sweep also reports its progress."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def show(line: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n{line}", flush=True)

    ledger = Ledger(progress=show if FULL else None)
    yield ledger
    ledger.write(FINDINGS, MODE, SEED)
    show(f"{ledger.summary(MODE, SEED)} — findings in {FINDINGS}")


@pytest.fixture
def sweep(settings, ledger) -> Iterator["Sweep"]:
    """The world, its signed-in clients and a harness; Celery's broker is our own throwaway Redis."""
    settings.SURVEYS_RATE_LIMIT = ""
    with _quiet_logs(), redis_server() as (redis_url, _process), celery_broker(redis_url):
        world = World()
        yield Sweep(world, Harness(world.clients, world.login, ledger), random.Random(SEED))
    ledger.write(FINDINGS, MODE, SEED)


@contextmanager
def _quiet_logs() -> Iterator[None]:
    """The sweep records every server error itself; Django's log would repeat each traceback per request."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


# Filling in URLs
# ---------------------------------------------------------------------------------------------------------


def path_values(world: World, endpoint: Endpoint, role: str) -> dict[str, str]:
    """A value for every converter of ``endpoint``'s route: the world's records, tokens and KPI."""
    values = {}
    for name, converter in endpoint.kwargs:
        values[name] = _path_value(world, endpoint, role, name, converter)
    return values


def _path_value(world: World, endpoint: Endpoint, role: str, name: str, converter: str) -> str:
    first_segment = endpoint.local_route.split("/", 1)[0]
    if (name, converter) == ("pk", "int") and (endpoint.namespace, first_segment) in PK_RECORDS:
        return str(world.record(role, PK_RECORDS[(endpoint.namespace, first_segment)]).pk)
    if (name, converter) == ("delivery_pk", "int"):
        return str(world.records["webhook_delivery"].pk)
    if (name, converter) == ("code", "slug"):
        return world.kpi
    if (name, converter) == ("kind", "slug"):  # a people picker: the owners' (managers only)
        return "owner"
    if (name, converter) == ("token", "str") and endpoint.label in TOKENS:
        return getattr(world, TOKENS[endpoint.label])
    if endpoint.namespace == "admin" and (value := _admin_value(world, endpoint, name)) is not None:
        return value
    raise AssertionError(
        f"teach the sweep the converter <{converter}:{name}> of {endpoint.label} ({endpoint.route}): "
        "PK_RECORDS, TOKENS or _path_value in tests/test_sweep.py"
    )


def _admin_value(world: World, endpoint: Endpoint, name: str) -> str | None:
    """Admin routes: the last row of the model the route is about (the victim user for users)."""
    if name == "app_label":
        return "crm"
    if name == "url":
        return "no-such-page/"
    if name == "content_type_id":
        return str(ContentType.objects.get_for_model(Customer).pk)
    if name == "object_id" and endpoint.local_route.startswith("r/"):  # view on site: the customer
        return str(world.records["customer"].pk)
    if name == "id":  # a user's password page
        return str(world.victim.pk)
    model = apps.get_model(*endpoint.local_route.split("/")[:2])
    last = model._default_manager.order_by("pk").last()
    if name in ("object_id", "group1", "pk"):  # pk: django-otp's device config and QR code pages
        return str(last.pk if last is not None else 1)
    if name == "group2" and hasattr(last, "history"):  # django-simple-history: one version of the row
        return str(last.history.order_by("history_id").last().history_id)
    return None


def reached(response: Any) -> bool:
    """Whether the request got to the view's work (not refused, not sent to a sign-in page)."""
    if response.status_code >= 400:
        return False
    location = response.get("Location") or response.get("HX-Redirect") or ""
    return not location.startswith(LOGIN_PATHS)


# The URL map
# ---------------------------------------------------------------------------------------------------------


class Sweep:
    def __init__(self, world: World, harness: Harness, rng: random.Random) -> None:
        self.world = world
        self.harness = harness
        self.rng = rng
        self.endpoints = sweep_kit.endpoints()
        self.reads = {e.label: sweep_kit.view_reads(e.callback) for e in self.endpoints}
        self.crawled: dict[tuple[str, str], tuple[int, bool]] = {}  # (label, role) -> status, reached
        self.forms: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (role, path) -> filled POST form
        # (method, path) -> the names that the pages' links (GET) and forms send to it
        self.names: dict[tuple[str, str], set[str]] = defaultdict(set)

    def path(self, endpoint: Endpoint, role: str, **override: str) -> str:
        return sweep_kit.build_path(endpoint, {**path_values(self.world, endpoint, role), **override})

    def send(self, **kwargs: Any) -> Any:
        return self.harness.send(**kwargs)

    def check_routes(self) -> None:
        """Every pattern can be filled in and resolves back to its own view (or the sweep must learn it)."""
        for endpoint in self.endpoints:
            path = self.path(endpoint, "manager")
            assert resolve(path).func == endpoint.callback, f"{endpoint.label}: {path} resolves elsewhere"

    def crawl(self) -> None:
        """GET every page as every role: who reaches what, and the forms and links each page offers."""
        for endpoint, role in itertools.product(self.endpoints, ROLES):
            path = self.path(endpoint, role)
            response = self.send(role=role, method="GET", path=path, endpoint=endpoint.label)
            self.crawled[(endpoint.label, role)] = (response.status_code, reached(response))
            content_type = response.get("Content-Type", "")
            if response.status_code != 200 or response.streaming or not content_type.startswith("text/html"):
                continue
            page = PageScan(path, response.content.decode("utf-8", "replace"))
            for link_path, keys in page.link_params.items():
                self.names[("GET", link_path)].update(keys)
            for form in page.forms:
                self.names[(form.method.upper(), form.action)].update(form.names)
                if form.method == "post":
                    self.forms.setdefault((role, form.action), form.filled)

    def params(self, endpoint: Endpoint, path: str, method: str) -> list[str]:
        reads = self.reads[endpoint.label]
        names = reads.names | self.names.get((method, path), set())
        if endpoint.label.endswith("_add"):  # the admin's add form takes initial values from the query
            names |= self.names.get(("POST", path), set())
        if reads.whole:
            names |= COMMON_PARAMS
        if endpoint.namespace == "admin":
            names |= ADMIN_PARAMS | (ADMIN_LIST_PARAMS if endpoint.label.endswith("_changelist") else set())
        return sorted(names - NEVER_SWEPT)

    def combos(self) -> list[tuple[Endpoint, str, str, bool]]:
        """Every (URL, role, method, htmx); the CI sample only those whose plain GET was not refused."""
        found = []
        for endpoint, role in itertools.product(self.endpoints, ROLES):
            status, got_there = self.crawled[(endpoint.label, role)]
            if not FULL and not got_there and status != 405:
                continue
            for method, htmx in itertools.product(("GET", "POST"), (False, True)):
                found.append((endpoint, role, method, htmx))
        return found

    def cases(self, params: list[str], base: list[tuple[str, str]], method: str) -> list[Case]:
        """One parameter at a time, all at once, reversed ranges and (POST) a JSON body, into ``base``."""
        found = []
        for param, (label, value) in itertools.product(params, HOSTILE.items()):
            pairs = [(k, v) for k, v in base if k != param] + [(param, value)]
            found.append(Case(param, shown(label, value), tuple(pairs)))
        for label, value in HOSTILE.items():
            pairs = [(k, v) for k, v in base if k not in params] + [(p, value) for p in params]
            found.append(Case("(every parameter)", shown(label, value), tuple(pairs)))
        for payload in sweep_kit.reversed_ranges(params):
            pairs = [(k, v) for k, v in base if k not in payload] + list(payload.items())
            found.append(Case("(reversed range)", str(payload), tuple(pairs)))
        if method == "POST":
            for label, value in HOSTILE.items():
                body = sweep_kit.json_body({**dict(base), **dict.fromkeys(params, value)})
                found.append(Case("(JSON body, every parameter)", shown(label, value), json=body))
        return found

    def sweep_combo(self, endpoint: Endpoint, role: str, method: str, htmx: bool, sample: int | None) -> None:
        path = self.path(endpoint, role)
        base = self.forms.get((role, path), []) if method == "POST" else []
        body = sweep_kit.encode_pairs(base).encode("ascii")
        common = {"role": role, "method": method, "path": path, "htmx": htmx, "endpoint": endpoint.label}
        if method == "GET" and not htmx:
            got_there = self.crawled[(endpoint.label, role)][1]
        else:
            got_there = reached(self.send(**common, body=body))
        if not got_there or (htmx and endpoint.namespace == "admin"):
            return  # the admin never reads HX-Request: its htmx requests are the baselines only
        cases = self.cases(self.params(endpoint, path, method), base, method)
        if sample is not None:
            cases = self.rng.sample(cases, min(sample, len(cases)))
        for case in cases:
            what = {**common, "param": case.param, "value": case.value}
            if case.json:
                self.send(**what, body=case.json, content_type=sweep_kit.JSON_CONTENT_TYPE)
            elif method == "GET":
                self.send(**what, query=sweep_kit.encode_pairs(case.pairs))
            else:
                self.send(**what, body=sweep_kit.encode_pairs(case.pairs).encode("ascii"))

    def path_cases(self) -> list[dict[str, Any]]:
        """Hostile path segments: in each ``str``/``path`` converter, as record ids, and after each prefix
        (with the same value in ``next`` and ``q``); the admin's as the admin only."""
        strings = {label: value for label, value in HOSTILE.items() if isinstance(value, str)}
        found = []
        for endpoint in self.endpoints:
            roles = ("admin",) if endpoint.namespace == "admin" else ROLES
            for (name, converter), role, method in itertools.product(endpoint.kwargs, roles, ("GET", "POST")):
                variants = {"int": PK_VARIANTS, "slug": {}}.get(converter, strings)
                for label, value in variants.items():
                    path = self.path(endpoint, role, **{name: value})
                    what = {"param": f"<{name}>", "value": shown(label, value), "endpoint": endpoint.label}
                    found.append({"role": role, "method": method, "path": path, **what})
        prefixes = sorted({"/" + e.route.split("/", 1)[0] + "/" for e in self.endpoints if "/" in e.route})
        for prefix, role, method, (label, value) in itertools.product(
            prefixes, ROLES, ("GET", "POST"), strings.items()
        ):
            what = {"role": role, "method": method, "value": shown(label, value), "endpoint": f"{prefix}…"}
            junk = f"{prefix}{sweep_kit.quote_path(value)}/"
            found.append({**what, "path": junk, "param": "(path segment)"})
            query = sweep_kit.encode_pairs([("next", value), ("q", value)])
            found.append({**what, "path": prefix, "query": query, "param": "(next and q)"})
        return found


def test_every_url_as_every_role_survives_hostile_input(sweep, ledger):
    ledger.section = "url map"
    sweep.check_routes()
    sweep.crawl()
    combos = sweep.combos()
    if not FULL:
        combos = sweep.rng.sample(combos, min(CI_COMBOS, len(combos)))
    for endpoint, role, method, htmx in combos:
        sweep.sweep_combo(endpoint, role, method, htmx, None if FULL else CI_CASES_PER_COMBO)
    paths = sweep.path_cases()
    if not FULL:
        paths = sweep.rng.sample(paths, min(CI_PATH_CASES, len(paths)))
    for request in paths:
        sweep.send(**request)
    found = ledger.in_section("url map")
    assert not found, _report(found)


def test_an_import_run_that_crashed_is_a_finding_although_its_task_succeeded(monkeypatch):
    """``import_job_run`` keeps a crash from failing the task (the job says "unexpected error"): the sweep
    reads the job's outcome, so a crash inside a run is a finding with its exception and frame."""
    manager = make_manager()
    ledger = Ledger()
    harness = Harness({}, lambda role: None, ledger)

    def run(job: ImportJob) -> None:
        imports.import_job_start(job=job, actor=manager, mode="both", all_or_nothing=True)
        sent = Sent("TASK", f"run_import({job.pk})", "manager", False)
        harness.run_task(
            run_import,
            job.pk,
            sent=sent,
            crashed=lambda: import_crash(job.pk),
            logger=import_services.__name__,
        )

    run(make_import_job(manager, "name,email\nGood GmbH,good@example.com\n"))
    assert ledger.server_errors == 0 and not ledger.findings
    assert Customer.objects.filter(name="Good GmbH").exists()

    def explode(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug inside the run")

    monkeypatch.setattr(import_writing, "_write_customers", explode)
    job = make_import_job(manager, "name,email\nBad GmbH,bad@example.com\n")
    with _quiet_logs():  # as in the sweep, which silences logging
        run(job)
    assert ledger.requests == 2 and ledger.server_errors == 1
    [finding] = ledger.findings.values()
    assert finding.kind == "ZeroDivisionError" and finding.where.startswith("crm/data/imports/writing.py")
    [(message, _sent)] = finding.examples.values()
    assert message == "a bug inside the run"
    job.refresh_from_db()
    assert job.status == ImportJob.Status.QUEUED  # the harness rolled the crashed run back
    # The catch-all stays for production: the job says what happened, in the language of the run, and
    # the sweep reads it in either language.
    with translation.override("zh-hans"), _quiet_logs():
        import_job_run(job_id=job.pk)
    job.refresh_from_db()
    assert job.status == ImportJob.Status.FAILED
    assert "意外错误" in job.error and "ZeroDivisionError" in job.error
    assert import_crash(job.pk) == job.error


def _report(found: list[sweep_kit.Finding]) -> str:
    lines = [f"{len(found)} distinct server errors or slow requests (details in {FINDINGS}):"]
    for finding in found:
        message, sent = next(iter(finding.examples.values()))
        lines.append(f"- {finding.kind} at {finding.where} ({finding.count}×): {message[:200]}\n  {sent}")
    return "\n".join(lines)


# Imports
# ---------------------------------------------------------------------------------------------------------


def _csv(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8", "surrogatepass")


def _xlsx(rows: list[list[Any]]) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _big_dimension_xlsx(rows: list[list[Any]]) -> bytes:
    """A small workbook whose sheet declares A1:GR1048576, with one cell in the very last row."""
    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    sheet.cell(row=1_048_576, column=1, value="last row")
    buffer = io.BytesIO()
    workbook.save(buffer)
    source = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(rb'<dimension ref="[^"]*"\s*/>', b'<dimension ref="A1:GR1048576"/>', data)
                assert b'ref="A1:GR1048576"' in data
            target.writestr(item, data)
    return out.getvalue()


def valid_rows(world: World, kind: str) -> list[list[str]]:
    """The header (every field's label) and one valid row of ``kind``, about the world's customer."""
    fields = imports.import_fields(kind)
    example = dict(zip(imports.template_rows(kind)[0], imports.template_rows(kind)[-1], strict=True))
    row = [example.get(str(f.label), "") for f in fields]
    names = [f.name for f in fields]
    if "customer" in names:
        row[names.index("customer")] = world.records["customer"].email
    return [[str(f.label) for f in fields], row]


def broken_files(world: World, kind: str, rng: random.Random) -> dict[str, tuple[str, bytes]]:
    """label -> (file name, bytes): the broken and hostile files of the issue, for ``kind``."""
    header, row = valid_rows(world, kind)
    text = _csv([header, row]).decode("utf-8")
    wide = [f"column {i}" for i in range(250)]
    widest = header + [f"extra {i}" for i in range(imports.MAX_COLUMNS - len(header))]
    big_cell = [*row[:-1], "x" * 200_000]
    return {
        "empty": ("empty.csv", b""),
        "whitespace": ("blank.csv", b" \r\n\t\n"),
        "binary": ("random.csv", rng.randbytes(4096)),
        "binary-xlsx": ("random.xlsx", b"PK\x03\x04" + rng.randbytes(4096)),
        "utf-16": ("utf16.csv", text.encode("utf-16")),
        "utf-16-lone-surrogate": ("utf16s.csv", (text + "\ud800,x\n").encode("utf-16", "surrogatepass")),
        "utf-8-lone-surrogate": ("surrogate.csv", _csv([header, ["\udfff", *row[1:]]])),
        "250-columns": ("wide.csv", _csv([wide, ["x"] * 250])),
        "200-columns": ("widest.csv", _csv([widest, row + ["x"] * (len(widest) - len(row))])),
        "200kB-cell": ("bigcell.csv", _csv([header, big_cell])),
        "broken-quotes": (
            "quotes.csv",
            f'{",".join(header)}\n"{row[0]},{",".join(row[1:])}\nx,"y\n'.encode(),
        ),
        "only-header": ("header.csv", _csv([header])),
        "damaged-xlsx": ("damaged.xlsx", _xlsx([header, row])[:1500]),
        "big-dimension-xlsx": ("dimension.xlsx", _big_dimension_xlsx([header, row])),
        "typed-xlsx": ("typed.xlsx", _xlsx([header, *_typed_rows(len(header))])),
    }


def _typed_rows(width: int) -> list[list[Any]]:
    """Spreadsheet cells that are no text: NaN, infinities, huge and tiny numbers, far dates, formulas."""
    values: list[Any] = [
        float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 10**30, -(10**30), 5e-324, True,
        datetime(1900, 1, 1), datetime(9999, 12, 31, 23, 59, 59), time(23, 59, 59), "=1/0",
        '=HYPERLINK("https://evil.example/","x")', "=A1&A1",
    ]  # fmt: skip
    return [[value] * width for value in values]


def cell_files(world: World, kind: str) -> dict[str, tuple[str, bytes]]:
    """label -> file: one CSV per (column, hostile value), the rest of the row valid."""
    header, row = valid_rows(world, kind)
    found = {}
    for (index, column), (label, value) in itertools.product(enumerate(header), HOSTILE.items()):
        if isinstance(value, list):
            continue
        cells = list(row)
        cells[index] = value
        found[f"{column} = {label}"] = (f"cell-{index}.csv", _csv([header, cells]))
    return found


class ImportWalk:
    """Upload one file as one importer and walk every later step, with hostile values in its forms.

    ``hostile_forms`` sends that many hostile mapping and start values per step (None: all of them). In the
    CI sample a step slower than ``SLOW_SECONDS`` ends the walk: the finding is in, the full sweep walks on.
    """

    def __init__(self, sweep: Sweep, role: str, kind: str, label: str, hostile_forms: int | None) -> None:
        self.sweep, self.role, self.kind, self.label = sweep, role, kind, label
        self.hostile_forms = hostile_forms
        self.slow_before = sweep.harness.ledger.slow

    def send(self, name: str, method: str, *args: Any, **kwargs: Any) -> Any:
        path = reverse(f"crm:{name}", args=args)
        kwargs.setdefault("param", f"file {self.label}")
        return self.sweep.send(role=self.role, method=method, path=path, endpoint=f"crm:{name}", **kwargs)

    @property
    def stopped(self) -> bool:
        return not FULL and self.sweep.harness.ledger.slow > self.slow_before

    def post_hostile(self, name: str, job: ImportJob, fields: list[str], base: dict[str, str]) -> None:
        cases = list(itertools.product(fields, HOSTILE.items()))
        if self.hostile_forms is not None:
            cases = self.sweep.rng.sample(cases, min(self.hostile_forms, len(cases)))
        for field_name, (label, value) in cases:
            pairs = [*((k, v) for k, v in base.items() if k != field_name), (field_name, value)]
            body = sweep_kit.encode_pairs(pairs).encode("ascii")
            what = {"param": f"{field_name} (file {self.label})", "value": shown(label, value)}
            self.send(name, "POST", job.pk, body=body, **what)

    def walk(self, name: str, data: bytes) -> None:
        upload = SimpleUploadedFile(name, data, content_type="application/octet-stream")
        response = self.send(
            "import_upload", "POST", multipart={"kind": self.kind, "file": upload}, keep=True
        )
        if response.status_code != 302 or self.stopped:
            return  # refused with a message on the form (or a server error or a slow step, recorded)
        job = ImportJob.objects.get(pk=int(re.search(r"/imports/(\d+)/", response["Location"])[1]))
        self.map(job)
        if not self.stopped:
            self.start(job)
        if not self.stopped:
            for htmx in (False, True):
                self.send("import_detail", "GET", job.pk, htmx=htmx)
            self.send("import_report", "GET", job.pk)

    def map(self, job: ImportJob) -> None:
        for htmx in (False, True):
            self.send("import_map", "GET", job.pk, htmx=htmx)
        base = {**{f"col_{i}": field for i, field in job.mapping.items()}, "date_order": job.date_order}
        columns = [f"col_{i}" for i in range(min(3, len(job.headers)))]
        self.post_hostile("import_map", job, ["date_order", *columns], base)
        self.send("import_map", "POST", job.pk, body=sweep_kit.encode_pairs(base.items()).encode(), keep=True)
        job.refresh_from_db()
        if job.preview.get("checking") and not self.stopped:
            self.run_task(check_import, job)

    def start(self, job: ImportJob) -> None:
        for htmx in (False, True):
            self.send("import_preview", "GET", job.pk, htmx=htmx)
        self.send("import_preview", "GET", job.pk, htmx=True, headers={"HX-Target": "check-progress"})
        start = {"mode": imports.modes_for(self.kind)[-1], "scope": "valid"}
        self.post_hostile("import_preview", job, ["mode", "scope"], start)
        body = sweep_kit.encode_pairs(start.items()).encode()
        self.send("import_preview", "POST", job.pk, body=body, keep=True)
        job.refresh_from_db()
        if job.status == ImportJob.Status.QUEUED and not self.stopped:
            self.run_task(run_import, job)

    def run_task(self, task: Any, job: ImportJob) -> None:
        """Run the check or the import; an import that crashed fails the sweep although its task does not
        (the run's catch-all marks the job failed "because of an unexpected error" and logs the crash)."""
        sent = Sent("TASK", f"{task.name}({job.pk})", self.role, False, param=f"file {self.label}")
        crashed = (lambda: import_crash(job.pk)) if task is run_import else None
        self.sweep.harness.run_task(task, job.pk, sent=sent, crashed=crashed, logger=import_services.__name__)


class Upload(NamedTuple):
    role: str
    kind: str
    label: str
    name: str
    data: bytes
    hostile_forms: int | None  # hostile mapping and start values per step; None: all


def test_every_import_step_survives_broken_and_hostile_files(sweep, ledger):
    ledger.section = "imports"
    broken = [
        Upload(role, kind, label, name, data, None if FULL else CI_FORM_CASES)
        for role, kind in itertools.product(IMPORTERS, ImportJob.Kind.values)
        for label, (name, data) in broken_files(sweep.world, kind, sweep.rng).items()
    ]
    cells = [
        Upload("manager", kind, label, name, data, 0)
        for kind in ImportJob.Kind.values
        for label, (name, data) in cell_files(sweep.world, kind).items()
    ]
    if FULL:
        uploads = broken + cells
    else:  # every broken file once, by a random importer as a random kind; a few hostile cells
        labels = sorted({upload.label for upload in broken})
        uploads = [sweep.rng.choice([u for u in broken if u.label == label]) for label in labels]
        uploads += sweep.rng.sample(cells, CI_CELL_FILES)
    for upload in uploads:
        label = f"{upload.kind}/{upload.label}"
        ImportWalk(sweep, upload.role, upload.kind, label, upload.hostile_forms).walk(
            upload.name, upload.data
        )
    found = ledger.in_section("imports")
    assert not found, _report(found)
