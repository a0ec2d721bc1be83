"""Every page, as every role, in Simplified Chinese: no English words outside a short allow-list.

The catalogue can be "100 % translated" and pages still show English: strings never marked for
translation, strings translated once at import time (in the server's language), Django's own texts our
catalogue does not carry. This renders every URL pattern of the apps (GET; the Django admin is left to
Django's own catalogue) as the anonymous visitor, a rep, an agent, a manager and an admin whose language
is zh-Hans, in a world whose records carry Chinese names, and fails on any Latin-letter word in the
visible text (text nodes, and the title, placeholder, aria-label and alt attributes) that is not a name,
code or unit on the allow-list below.
"""

import itertools
import re
from collections import defaultdict
from datetime import timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken, User
from accounts.services.api_tokens import api_token_create
from crm import services
from crm.automation.models import AutomationRun, note
from crm.automation.services import rule_create
from crm.custom_fields.services import field_create
from crm.data import merge
from metrics.cohorts.services import cohort_snapshots_recompute
from metrics.forecasts.services import forecast_calibration_compute, forecasts_freeze
from metrics.health.services import health_refresh
from metrics.kpis import registry
from metrics.kpis.velocity import TIME_IN_STAGE, VELOCITY, open_stages
from metrics.services import snapshots_rebuild_all
from metrics.services.velocity import time_in_stage_recompute
from surveys.emails import unsubscribe_token
from surveys.models import TEXT_FIELDS, TEXT_SUFFIX, Survey
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

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

ROLES = ("anonymous", "rep", "agent", "manager", "admin")
APP_NAMESPACES = ("", "crm", "accounts", "metrics", "surveys", "surveys_public")
ZH = "zh-hans"

# Words that stay as they are in a Chinese page: the product and company name, codes and abbreviations
# of KPIs and formats, units and currencies, file types, and proper names of standards and products.
# ("english": the language switcher names each language in its own tongue.)
ALLOWED = {
    "mini", "crm", "nps", "csat", "ces", "kpi", "kpis", "sla", "roi", "clv", "cac", "nrr", "grr", "rfm",
    "arpa", "rr", "eur", "usd", "cny", "gbp", "chf", "csv", "xlsx", "xlsm", "tsv", "txt", "png", "json",
    "excel", "utf", "id", "url", "api", "totp", "html", "ip", "ms", "pp", "km", "mb", "gb", "bom", "gbk",
    "windows", "wilson", "english", "webhook", "webhooks", "ios", "android", "google", "authenticator",
    "microsoft", "plotly", "brier",
}  # fmt: skip
# Whatever is not prose: e-mail addresses, URLs and paths, identifiers with underscores, placeholders
# such as {company}, quoted literal values ('n/a'), ISO dates, hexadecimal tokens.
NOT_PROSE = re.compile(
    r"[\w.+-]+@[\w-]+(\.[\w-]+)+|https?://\S+|(?<!\w)/[\w/.?=&%-]*|\b\w*_\w*\b|\{\w+\}|'[^'\s]*'"
    r"|\b\d{4}-\d{2}-\d{2}\b|\b[0-9a-f]{16,}\b"
)
# A word of Latin letters; one with digits in it is a code (B2B, RR1, p90, UTF-8), one letter a variable
# or unit (E − N, 5 h).
WORD = re.compile(r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9'’]*")
SHOWN_ATTRIBUTES = ("title", "placeholder", "aria-label", "alt")


class VisibleText(HTMLParser):
    """The text a reader sees or hears: text nodes outside script, style and template, and the shown
    attributes."""

    HIDDEN = {"script", "style", "template", "code", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.HIDDEN:
            self._hidden += 1
        self.parts += [value for name, value in attrs if name in SHOWN_ATTRIBUTES and value]

    def handle_endtag(self, tag: str) -> None:
        if tag in self.HIDDEN and self._hidden:
            self._hidden -= 1

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def english_words(html: str) -> dict[str, str]:
    """Each English word of the page's visible text, with the text around its first use."""
    parser = VisibleText()
    parser.feed(html)
    text = NOT_PROSE.sub(" ", " ".join(" ".join(parser.parts).split()))
    found = {}
    for match in WORD.finditer(text):
        word = match.group().strip("'’")
        if len(word) > 1 and not any(c.isdigit() for c in word) and word.lower() not in ALLOWED:
            found.setdefault(word, text[max(0, match.start() - 40) : match.end() + 40])
    return found


class World:
    """Every role in Chinese, and one record of every kind a URL names, all with Chinese names; the KPI
    snapshots computed, so the dashboards show numbers."""

    def __init__(self) -> None:
        team = make_team(name="华东销售")
        self.users = {
            "rep": make_user(username="zhang", first_name="伟", last_name="张", team=team),
            "agent": make_agent(
                username="li", first_name="娜", last_name="李", team=make_team(name="客服一组")
            ),
            "manager": make_manager(username="wang", first_name="芳", last_name="王"),
            "admin": make_admin(username="liu", first_name="强", last_name="刘"),
        }
        User.objects.filter(pk__in=[u.pk for u in self.users.values()]).update(language=ZH)
        rep, manager = self.users["rep"], self.users["manager"]
        today = timezone.localdate()
        campaign = make_campaign(
            name="春季展会", channel="event", cost=3000, start=today - timedelta(days=30),
            end=today + timedelta(days=30), note="上海展馆", actor=manager,
        )  # fmt: skip
        customer = make_customer(
            rep, name="星辰科技", phone="+86 21 5555 0123", city="上海", language=ZH, campaign=campaign
        )
        question = "您向同事推荐{company}的可能性有多大？"
        texts = {f"{name}_{suffix}": question for name in TEXT_FIELDS for suffix in TEXT_SUFFIX.values()}
        # The default surveys the migrations create carry English names (data a company renames): this
        # company has its own survey only.
        Survey.objects.all().delete()
        survey = make_survey("nps", name="客户满意度", **texts)
        invitation = make_invitation(survey, customer)
        make_answer(survey, customer, 3, timezone.now() - timedelta(days=2), comment="回复太慢")
        other = make_user(username="zhao", first_name="敏", last_name="赵")
        make_deal(make_customer(other, name="远方贸易"), title="外部合同")
        merge.customer_merge(survivor=customer, merged=make_customer(rep, name="星辰旧"), actor=manager)
        import_text = "名称,邮箱\n导入客户,row@example.com\n"
        self.records = {
            "customer": customer,
            "deal": make_deal(customer, title="年度合同"),
            "ticket": make_ticket(customer, assignee=self.users["agent"], subject="无法登录"),
            "task": make_task(customer, subject="回电"),
            "import_job": make_import_job(rep, import_text, name="客户.csv"),
            "duplicate": make_duplicate_pair(customer, make_customer(rep, name="星辰科技有限公司")),
            "survey": survey,
            "invitation": invitation,
            "campaign": campaign,
            "alert": make_alert(rep),
        }
        self.own = {role: {"import_job": make_import_job(self.users[role], import_text, name="客户.csv")}
                    for role in ("manager", "admin")}  # fmt: skip
        # API tokens are their owner's only: each role revokes its own.
        for role, user in self.users.items():
            token = api_token_create(actor=user, user=user, name="网店同步", scope=ApiToken.Scope.READ).token
            self.own.setdefault(role, {})["api_token"] = token
        self.records["api_token"] = self.own["rep"]["api_token"]
        self.records["webhook"], self.records["webhook_delivery"] = make_webhook(
            self.users["manager"], name="网店同步"
        )
        self.records["custom_field"] = _custom_fields(manager, customer)
        self.records["automation_rule"] = _automation_rule(manager, self.records["deal"])
        self.tokens = {
            "surveys_public:answer": invitation.token,
            "surveys_public:unsubscribe": unsubscribe_token(invitation),
        }
        # Scored as of tomorrow's start, so today's customers are scored: the health pages list them with
        # their components (and, first, so the KPI snapshots read the scores).
        health_refresh(now=timezone.now() + timedelta(days=1))
        forecasts_freeze()  # the frozen forecast of the running periods and the stored calibration
        forecast_calibration_compute()
        snapshots_rebuild_all()
        cohort_snapshots_recompute()  # the cohorts and revenue retention KPIs: a task of their own
        time_in_stage_recompute(full=True)  # time in stage: a task of its own too
        self.clients = {role: Client() for role in ROLES}
        self.clients["anonymous"].cookies["django_language"] = ZH
        for role, user in self.users.items():
            self.clients[role].force_login(user)

    def path(self, endpoint: sweep_kit.Endpoint, role: str) -> str:
        values = {}
        for name, converter in endpoint.kwargs:
            first = endpoint.local_route.split("/", 1)[0]
            if (name, converter) == ("pk", "int"):
                key = PK_RECORDS[(endpoint.namespace, first)]
                values[name] = str((self.own.get(role, {}).get(key) or self.records[key]).pk)
            elif (name, converter) == ("delivery_pk", "int"):
                values[name] = str(self.records["webhook_delivery"].pk)
            elif (name, converter) == ("code", "slug"):
                values[name] = next(iter(registry()))
            elif (name, converter) == ("kind", "slug"):  # a people picker
                values[name] = "owner"
            else:
                values[name] = self.tokens[endpoint.label]
        return sweep_kit.build_path(endpoint, values)


def _custom_fields(manager: User, customer: Any) -> Any:
    """Fields with Chinese labels, help and options on each record type, the customer holding values; the
    first is the one a ``fields/<pk>/`` URL names."""
    # Keys and English labels as codes: the definition form shows them (company data, not our text).
    options = [{"key": "h1", "en": "H1", "zh": "住宅"}, {"key": "f2", "en": "F2", "zh": "公寓"}]
    fields = [
        field_create(actor=manager, entity=entity, key=key, label_en=key, label_zh=label, help_zh="请填写",
                     kind=kind, choices=options if kind == "choice" else [])
        for entity, key, label, kind in [
            ("customer", "housing", "住房", "choice"), ("customer", "vip", "贵宾", "yes_no"),
            ("deal", "po", "订单号", "text"), ("ticket", "serial", "序列号", "text"),
            ("activity", "minutes", "分钟", "integer"),
        ]
    ]  # fmt: skip
    services.custom_values_set(obj=customer, actor=manager, changes={"housing": "f2", "vip": True}, via="web")
    return fields[0]


def _automation_rule(manager: User, deal: Any) -> Any:
    """A rule with a Chinese name and texts, a condition on a custom field, and a run in its log."""
    rule = rule_create(
        actor=manager,
        name="大额合同跟进",
        trigger="deal.created",
        params={},
        conditions=[{"field": "amount", "op": "gte", "value": 5000}, {"field": "custom.po", "op": "set"}],
        actions=[
            {"type": "create_task", "assignee": "owner", "days": 2, "subject_en": "", "subject_zh": "回电"}
        ],
    )
    AutomationRun.objects.create(
        rule=rule, object_type="deal", object_id=deal.pk, event_key="created", status="done",
        outcome=[note("Note added.")], created_at=timezone.now(),
    )  # fmt: skip
    return rule


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


def test_every_page_as_every_role_reads_in_chinese(settings):
    settings.LANGUAGE_CODE = "en"  # the server's language is English; the users' is Chinese
    world = World()
    found: dict[str, set[str]] = defaultdict(set)
    pages = 0
    endpoints = [e for e in sweep_kit.endpoints() if e.namespace in APP_NAMESPACES]
    for endpoint, role in itertools.product(endpoints, ROLES):
        response = world.clients[role].get(world.path(endpoint, role))
        if response.status_code != 200 or response.streaming:
            continue
        if not response.get("Content-Type", "").startswith("text/html"):
            continue
        pages += 1
        for word, around in english_words(response.content.decode()).items():
            found[word].add(f"{endpoint.label} as {role}: …{around}…")
    assert pages > 100
    report = "\n".join(
        f"{word}: {sorted(where)[0]} (+{len(where) - 1} more)" for word, where in sorted(found.items())
    )
    assert not found, f"English words on Chinese pages:\n{report}"


def test_velocity_and_time_in_stage_pages_read_in_chinese(settings):
    """The KPI page of every KPI is one URL pattern (the sweep above opens the first KPI's): these two add
    their own panels and records, opened here with each drill-down part and stage."""
    settings.LANGUAGE_CODE = "en"
    world = World()
    found: dict[str, set[str]] = defaultdict(set)
    queries = [(VELOCITY, f"part={part}") for part in VELOCITY.drilldown.parts]
    queries += [(TIME_IN_STAGE, f"stage={stage.pk}") for stage in open_stages()]
    for (kpi, query), role in itertools.product(queries, ("rep", "manager")):
        url = f"{reverse('metrics:kpi_detail', args=[kpi.code])}?{query}"
        response = world.clients[role].get(url)
        assert response.status_code == 200, url
        for word, around in english_words(response.content.decode()).items():
            found[word].add(f"{url} as {role}: …{around}…")
    report = "\n".join(f"{word}: {sorted(where)[0]}" for word, where in sorted(found.items()))
    assert not found, f"English words on Chinese pages:\n{report}"


def test_the_checker_finds_english_and_lets_names_codes_and_units_pass():
    page = (
        '<p title="Export">导出 CSV · NPS 45 · 3 EUR</p><script>var x = "hidden";</script>'
        "<a href='/crm/'>rep@example.com</a> 2026-12-06 kpi_code <span>Last updated</span>"
    )
    assert set(english_words(page)) == {"Export", "Last", "updated"}
    assert english_words("<p>NPS 45 from B2B customers</p>")["customers"] == "NPS 45 from B2B customers"
