"""The automation rules pages: the rules list, the rule form (each trigger's settings, conditions on
built-in and custom fields, actions), switching on and off, the dry run, the run log; managers only."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from crm.automation import builtins
from crm.automation.models import note
from crm.automation.services import rule_create
from crm.automation_forms import TRIGGER_SETTINGS
from crm.custom_fields.services import field_create, field_update
from crm.models import AutomationRule, AutomationRun, PipelineStage
from tests import sweep_kit
from tests.factories import make_agent, make_customer, make_deal, make_manager, make_user, stage

pytestmark = pytest.mark.django_db

Trigger = AutomationRule.Trigger
Status = AutomationRun.Status
HTMX = {"HX-Request": "true"}
NOTE = {"type": "add_note", "text_en": "Look at it", "text_zh": "看看"}


def make_rule(manager=None, **overrides) -> AutomationRule:
    fields = {
        "name": "Big deals",
        "trigger": Trigger.DEAL_CREATED,
        "params": {},
        "conditions": [{"field": "amount", "op": "gt", "value": 500}],
        "actions": [NOTE],
        **overrides,
    }
    return rule_create(actor=manager or make_manager(), **fields)


def make_run(rule: AutomationRule, record, *, status=Status.DONE, at=None, outcome=None) -> AutomationRun:
    return AutomationRun.objects.create(
        rule=rule,
        object_type=record._meta.model_name,
        object_id=record.pk,
        event_key=f"created:{record.pk}:{AutomationRun.objects.count()}",
        status=status,
        outcome=outcome if outcome is not None else [note("Note added.")],
        created_at=at or timezone.now(),
    )


def note_form(**values) -> dict[str, str]:
    """A valid rule form: a new deal gets a note."""
    return {
        "name": "Note new deals",
        "trigger": Trigger.DEAL_CREATED,
        "actions-0-type": "add_note",
        "actions-0-text_en": "Check the deal",
        **values,
    }


@pytest.fixture
def manager_client(client):
    manager = make_manager()
    client.force_login(manager)
    client.user = manager
    return client


@pytest.fixture
def product_line():
    return field_create(
        actor=make_manager(),
        entity="deal",
        key="product_line",
        label_en="Product line",
        label_zh="产品线",
        kind="choice",
        choices=[
            {"key": "pumps", "en": "Pumps", "zh": "泵"},
            {"key": "valves", "en": "Valves", "zh": "阀门"},
        ],
    )


# The form
# ---------------------------------------------------------------------------------------------------------


def test_a_manager_creates_a_rule_with_a_custom_field_condition_a_task_and_an_email(
    manager_client, product_line
):
    data = note_form(
        name="Big pump deals",
        **{
            "conditions-0-field": "amount",
            "conditions-0-op": "gte",
            "conditions-0-value": "5,000",
            "conditions-1-field": "custom.product_line",
            "conditions-1-op": "eq",
            "conditions-1-value": "pumps",
            "conditions-2-field": "status",  # "is filled in" needs no value
            "conditions-2-op": "set",
            "actions-0-type": "create_task",
            "actions-0-assignee": "manager",
            "actions-0-days": "2",
            "actions-0-subject_en": "Call {{ customer }}",
            "actions-0-subject_zh": "致电 {{ customer }}",
            "actions-1-type": "send_email",
            "actions-1-to": "customer",
            "actions-1-subject_en": "Thank you",
            "actions-1-body_en": "Dear {{ customer }}, thank you for {{ deal }}.",
            "actions-1-body_zh": "感谢 {{ deal }}",
        },
    )
    response = manager_client.post(reverse("crm:automation_create"), data)
    rule = AutomationRule.objects.get(name="Big pump deals")
    assert response.status_code == 302
    assert response["Location"] == reverse("crm:automation_detail", args=[rule.pk])
    assert rule.trigger == Trigger.DEAL_CREATED and rule.params == {}
    assert rule.conditions == [
        {"field": "amount", "op": "gte", "value": 5000},
        {"field": "custom.product_line", "op": "eq", "value": "pumps"},
        {"field": "status", "op": "set"},
    ]
    assert rule.actions == [
        {
            "type": "create_task",
            "assignee": "manager",
            "days": 2,
            "subject_en": "Call {{ customer }}",
            "subject_zh": "致电 {{ customer }}",
        },
        {
            "type": "send_email",
            "to": "customer",
            "subject_en": "Thank you",
            "subject_zh": "",
            "body_en": "Dear {{ customer }}, thank you for {{ deal }}.",
            "body_zh": "感谢 {{ deal }}",
        },
    ]
    assert not rule.is_active and rule.created_by == manager_client.user  # saved off: dry run first


@pytest.mark.parametrize(
    ("trigger", "posted", "stored"),
    [
        (Trigger.DEAL_CREATED, {}, {}),
        (Trigger.DEAL_STAGE_CHANGED, {"stage": "STAGE"}, {"stage": "STAGE"}),
        (Trigger.DEAL_STAGE_CHANGED, {"stage": ""}, {}),  # any stage
        (Trigger.DEAL_IDLE, {"days": "14", "stage": "STAGE"}, {"days": 14, "stage": "STAGE"}),
        (Trigger.TICKET_SLA_NEAR, {"hours": "4"}, {"hours": 4}),
        (Trigger.SURVEY_ANSWERED, {"score_max": "0"}, {"score_max": 0}),
        (Trigger.ACTIVITY_LOGGED, {"activity_kind": "call"}, {"activity_kind": "call"}),
        (Trigger.CUSTOMER_STATUS_CHANGED, {"status": "churned"}, {"status": "churned"}),
        (Trigger.CUSTOMER_CREATED, {}, {}),
        (Trigger.TICKET_CREATED, {}, {}),
        (Trigger.TICKET_SOLVED, {}, {}),
        (Trigger.DEAL_WON, {}, {}),
    ],
)
def test_each_trigger_stores_its_own_settings_as_ints_and_ignores_the_others(
    manager_client, trigger, posted, stored
):
    proposal = stage().pk
    posted = {k: str(proposal) if v == "STAGE" else v for k, v in posted.items()}
    stored = {k: proposal if v == "STAGE" else v for k, v in stored.items()}
    # The settings of the other triggers are posted too (a browser without JavaScript shows them all).
    others = {
        "stage": "junk",
        "days": "0",
        "hours": "x",
        "score_max": "99",
        "activity_kind": "?",
        "status": "?",
    }
    unused = {name: value for name, value in others.items() if name not in TRIGGER_SETTINGS.get(trigger, ())}
    response = manager_client.post(
        reverse("crm:automation_create"), note_form(trigger=trigger, **unused, **posted)
    )
    assert response.status_code == 302, response.context["form"].errors
    assert AutomationRule.objects.get(name="Note new deals", builtin="").params == stored


def test_switch_on_now_saves_the_rule_switched_on(manager_client):
    manager_client.post(reverse("crm:automation_create"), note_form(is_active="on"))
    assert AutomationRule.objects.get(name="Note new deals").is_active


def test_every_action_type_is_stored_as_the_services_take_it(manager_client):
    proposal, agent = stage(), make_agent()
    deal_actions = {
        "actions-0-type": "set_field",
        "actions-0-field": "expected_close_date",
        "actions-0-value": "2030-06-30",
        "actions-1-type": "set_stage",
        "actions-1-stage": str(proposal.pk),
        "actions-2-type": "set_owner",
        "actions-2-user": str(manager_client.user.pk),
        "actions-3-type": "fire_webhook",
        "actions-4-type": "set_field",
        "actions-4-field": "amount",
        "actions-4-value": "1250.50",
    }
    manager_client.post(reverse("crm:automation_create"), note_form(name="Deal actions", **deal_actions))
    assert AutomationRule.objects.get(name="Deal actions").actions == [
        {"type": "set_field", "field": "expected_close_date", "value": "2030-06-30"},
        {"type": "set_stage", "stage": proposal.pk},
        {"type": "set_owner", "user": manager_client.user.pk},
        {"type": "fire_webhook"},
        {"type": "set_field", "field": "amount", "value": "1250.50"},
    ]
    ticket_actions = {
        "trigger": Trigger.TICKET_CREATED,
        "actions-0-type": "assign_ticket",
        "actions-0-user": "",  # the least busy agent
        "actions-1-type": "assign_ticket",
        "actions-1-user": str(agent.pk),
        "actions-2-type": "add_note",
        "actions-2-text_zh": "新工单",
    }
    manager_client.post(reverse("crm:automation_create"), note_form(name="Ticket actions", **ticket_actions))
    assert AutomationRule.objects.get(name="Ticket actions").actions == [
        {"type": "assign_ticket", "user": None},
        {"type": "assign_ticket", "user": agent.pk},
        {"type": "add_note", "text_en": "", "text_zh": "新工单"},
    ]


def test_bad_rows_get_messages_on_their_inputs_and_nothing_is_saved(manager_client):
    data = note_form(
        trigger=Trigger.DEAL_IDLE,  # needs its days
        **{
            "conditions-0-field": "amount",
            "conditions-0-op": "gte",
            "conditions-0-value": "lots",
            "conditions-1-value": "no field chosen",
            "conditions-2-field": "amount",
            "conditions-2-op": "contains",  # does not fit a number
            "conditions-2-value": "5",
            "conditions-3-field": "custom.gone",
            "conditions-3-value": "x",
            "actions-0-type": "create_task",
            "actions-0-days": "400",
            "actions-1-subject_en": "no action chosen",
            "actions-2-type": "send_email",  # without a text
            "actions-3-type": "assign_ticket",  # not for deals
        },
    )
    response = manager_client.post(reverse("crm:automation_create"), data, headers=HTMX)
    assert response.status_code == 200 and b"<html" not in response.content
    errors = response.context["form"].errors
    assert set(errors) == {
        "days",
        "conditions-0-value",
        "conditions-1-field",
        "conditions-2-op",
        "conditions-3-field",
        "actions-0-days",
        "actions-1-type",
        "actions-2-to",
        "actions-2-body_en",
        "actions-3-type",
    }
    assert b'id="rule-form"' in response.content and b"field-error" in response.content
    assert not AutomationRule.objects.filter(builtin="").exists()


def test_a_rule_needs_an_action(manager_client):
    data = {"name": "Nothing", "trigger": Trigger.DEAL_CREATED, "actions-0-type": ""}
    response = manager_client.post(reverse("crm:automation_create"), data)
    assert response.status_code == 200 and "actions-0-type" in response.context["form"].errors
    assert not AutomationRule.objects.filter(builtin="").exists()


HOSTILE = [
    "\x00",
    "a\x00b",
    "x" * 10_000,
    "9" * 25,
    "-1",
    "1e309",
    "NaN",
    "9999-12-31",
    "0000-00-00",
    "\ud800",
]
INPUTS = {
    "name": {},
    "days": {"trigger": Trigger.DEAL_IDLE},
    "stage": {"trigger": Trigger.DEAL_STAGE_CHANGED},
    "score_max": {"trigger": Trigger.SURVEY_ANSWERED},
    "conditions-0-value": {"conditions-0-field": "amount", "conditions-0-op": "gt"},
    "conditions-1-value": {"conditions-1-field": "owner", "conditions-1-op": "eq"},
    "conditions-2-value": {"conditions-2-field": "custom.product_line", "conditions-2-op": "eq"},
    "actions-0-days": {"actions-0-type": "create_task"},
    "actions-0-user": {"actions-0-type": "set_owner"},
    "actions-0-stage": {"actions-0-type": "set_stage"},
    "actions-0-value": {"actions-0-type": "set_field", "actions-0-field": "expected_close_date"},
    "actions-0-type": {},
    "trigger": {},
}


@pytest.mark.parametrize("name", INPUTS)
def test_hostile_input_gets_a_message_never_a_server_error(manager_client, product_line, name):
    url = reverse("crm:automation_create")
    for value in HOSTILE:
        body = sweep_kit.encode_pairs(note_form(**{**INPUTS[name], name: value}).items())  # byte-exact
        response = manager_client.post(
            url, body, content_type="application/x-www-form-urlencoded", headers=HTMX
        )
        assert response.status_code == 200, (name, value[:20])
        assert response.has_header("HX-Redirect") or response.context["form"].errors, (name, value[:20])
    if name not in ("name", "conditions-0-value"):  # a name, and an amount over -1, may be fine
        assert not AutomationRule.objects.filter(builtin="").exists()


def test_a_service_refusal_is_shown_on_the_form(manager_client, monkeypatch):
    from django.core.exceptions import ValidationError

    from crm import automation_views

    def refuse(**kwargs):
        raise ValidationError("The trigger's stage no longer exists.")

    monkeypatch.setattr(automation_views.services, "rule_create", refuse)
    response = manager_client.post(reverse("crm:automation_create"), note_form(), headers=HTMX)
    assert response.status_code == 200 and b"no longer exists" in response.content
    assert response.context["form"].non_field_errors()


def test_the_form_lays_itself_out_for_the_chosen_trigger_and_fields(manager_client, product_line):
    url = reverse("crm:automation_create")
    response = manager_client.get(url, {"trigger": Trigger.DEAL_IDLE, "name": "x"}, headers=HTMX)
    assert response.status_code == 200 and b"<html" not in response.content
    form = response.context["form"]
    assert [field.name for field in form.setting_groups()["used"]] == ["days", "stage"]
    assert response["Vary"] and "HX-Request" in response["Vary"]
    # A ticket rule tests ticket fields; a choice field's value is a select of its options.
    response = manager_client.get(url, {"trigger": Trigger.TICKET_CREATED, "conditions-0-field": "priority"})
    assert b'value="urgent"' in response.content and b'value="amount"' not in response.content
    response = manager_client.get(
        url, {"trigger": Trigger.DEAL_CREATED, "conditions-0-field": "custom.product_line"}
    )
    assert b'<option value="pumps"' in response.content and "产品线" not in response.content.decode()
    # An action's type shows its inputs; the "Update the form" button (no JavaScript) does the same.
    response = manager_client.post(
        url, {"refresh": "1", "actions-0-type": "create_task", "trigger": "deal.won"}
    )
    rows = response.context["form"].action_rows()
    assert [field.name for field in rows[0]["inputs"]] == [
        "actions-0-assignee", "actions-0-days", "actions-0-subject_en", "actions-0-subject_zh"
    ]  # fmt: skip
    assert not AutomationRule.objects.filter(builtin="").exists()
    # Without a re-render (a browser without JavaScript) every setting is there, with its hint.
    body = manager_client.get(url).content.decode()
    for name in ("days", "hours", "score_max", "activity_kind", "status", "stage"):
        assert f'name="{name}"' in body
    assert "<noscript>" in body and 'hx-get="/crm/automation/new/"' in body


def test_a_manager_edits_a_rule_on_its_form(manager_client):
    rule = make_rule(manager_client.user, params={}, trigger=Trigger.DEAL_CREATED)
    url = reverse("crm:automation_update", args=[rule.pk])
    form = manager_client.get(url).context["form"]
    assert form["name"].value() == "Big deals" and form["conditions-0-value"].value() == "500"
    assert form["actions-0-text_en"].value() == "Look at it"
    data = note_form(name="Bigger deals", **{"conditions-0-field": "amount", "conditions-0-op": "gt"})
    data["conditions-0-value"] = "10000"
    response = manager_client.post(url, data, headers=HTMX)
    assert response.status_code == 200  # htmx: sent on to the rule's page
    assert response["HX-Redirect"] == reverse("crm:automation_detail", args=[rule.pk])
    rule.refresh_from_db()
    assert rule.name == "Bigger deals"
    assert rule.conditions == [{"field": "amount", "op": "gt", "value": 10000}]
    assert not rule.is_active  # an edit does not switch the rule


# Who may
# ---------------------------------------------------------------------------------------------------------


def _automation_urls(rule: AutomationRule) -> list[str]:
    return [
        reverse("crm:automation_list"),
        reverse("crm:automation_create"),
        reverse("crm:automation_detail", args=[rule.pk]),
        reverse("crm:automation_update", args=[rule.pk]),
        reverse("crm:automation_switch", args=[rule.pk]),
        reverse("crm:automation_dry_run", args=[rule.pk]),
    ]


@pytest.mark.parametrize("make", [make_user, make_agent])
def test_reps_and_agents_are_refused_every_automation_url(client, make):
    rule = make_rule(is_active=True)
    client.force_login(make())
    refused = 0
    for url in _automation_urls(rule):
        for method in ("get", "post"):
            for headers in ({}, HTMX):
                response = getattr(client, method)(url, {"on": "0", **note_form()}, headers=headers)
                # require_staff_role: a page a role may not use does not exist for it (404, not 403);
                # 405 for a method the URL never takes
                assert response.status_code in (404, 405), f"{method} {url}: {response.status_code}"
                refused += response.status_code == 404
    assert refused == 16  # GET on 4 URLs, POST on 4, each plain and htmx
    rule.refresh_from_db()
    assert rule.is_active and AutomationRule.objects.filter(builtin="").count() == 1


def test_the_anonymous_visitor_is_sent_to_sign_in(client):
    for url in _automation_urls(make_rule()):
        assert client.get(url).status_code in (302, 405)


# The list, switching
# ---------------------------------------------------------------------------------------------------------


def test_the_list_shows_every_rule_with_its_trigger_counts_and_switch(manager_client):
    builtins.seed()
    idle = make_rule(name="Idle deals", trigger=Trigger.DEAL_IDLE, params={"days": 14, "stage": stage().pk})
    deal = make_deal()
    for status in (Status.DONE, Status.DONE, Status.FAILED, Status.SKIPPED, Status.PENDING, Status.STOPPED):
        make_run(idle, deal, status=status)
    response = manager_client.get(reverse("crm:automation_list"))
    body = response.content.decode()
    assert response.status_code == 200
    assert (
        "Idle deals" in body and "a deal sits in a stage without activity" in body and "for 14 days" in body
    )
    assert "Follow up a low survey score" in body and "Built-in" in body
    listed = {rule.pk: rule.counts for rule in response.context["rules"]}
    assert listed[idle.pk] == {"done": 2, "failed": 1, "skipped": 1, "pending": 1, "stopped": 1}
    assert body.count('action="/crm/automation/') >= 3  # a switch per rule
    assert 'href="/crm/automation/"' in body  # in the navigation


def test_the_list_page_costs_the_same_queries_for_3_or_30_rules_with_runs(manager_client):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert manager_client.get(reverse("crm:automation_list")).status_code == 200
        return len(captured)

    manager, deal = make_manager(), make_deal()
    for i in range(3):
        params = {"days": 3, "stage": stage().pk}
        make_run(make_rule(manager, name=f"Rule {i}", trigger=Trigger.DEAL_IDLE, params=params), deal)
    few = queries()
    for i in range(30):
        rule = make_rule(
            manager, name=f"More {i}", trigger=Trigger.DEAL_STAGE_CHANGED, params={"stage": stage().pk}
        )
        for status in (Status.DONE, Status.FAILED):
            make_run(rule, deal, status=status)
    assert queries() == few <= 12


def test_switching_a_rule_on_and_off(manager_client):
    rule = make_rule()
    url = reverse("crm:automation_switch", args=[rule.pk])
    response = manager_client.post(url, {"on": "1"}, headers=HTMX)
    assert response.status_code == 200 and b"<html" not in response.content
    assert f'id="rule-switch-{rule.pk}"'.encode() in response.content and b"Switch off" in response.content
    rule.refresh_from_db()
    assert rule.is_active
    response = manager_client.post(url, {"on": "0", "next": reverse("crm:automation_list")})
    assert response.status_code == 302 and response["Location"] == reverse("crm:automation_list")
    rule.refresh_from_db()
    assert not rule.is_active
    response = manager_client.post(url, {"on": "1", "next": "https://evil.example/"})
    assert response["Location"] == reverse("crm:automation_detail", args=[rule.pk])
    assert manager_client.get(url).status_code == 405


def test_a_rule_the_crm_switched_off_shows_why_and_cannot_go_on_until_fixed(manager_client):
    manager = manager_client.user
    lot = field_create(actor=manager, entity="deal", key="lot", label_en="Lot", kind="text")
    rule = make_rule(manager, conditions=[{"field": "custom.lot", "op": "set"}], is_active=True)
    field_update(actor=manager, field=lot, is_active=False)  # the CRM switches the rule off, saying why
    body = manager_client.get(reverse("crm:automation_list")).content.decode()
    assert "Switched off by the CRM" in body and "It uses the field “lot”, which was archived" in body
    body = manager_client.get(reverse("crm:automation_detail", args=[rule.pk])).content.decode()
    assert "Switched off by the CRM" in body and "which was removed" in body  # the problem to fix
    response = manager_client.post(
        reverse("crm:automation_switch", args=[rule.pk]), {"on": "1"}, headers=HTMX
    )
    assert response.status_code == 200 and "which was removed" in response.content.decode()
    rule.refresh_from_db()
    assert not rule.is_active and rule.disabled_reason


def test_a_builtin_rule_can_be_switched_off_but_not_edited(manager_client):
    builtins.seed()
    auto_assign = AutomationRule.objects.get(builtin=AutomationRule.Builtin.TICKET_AUTO_ASSIGN)
    before = (auto_assign.name, auto_assign.trigger, auto_assign.actions)
    manager_client.post(reverse("crm:automation_switch", args=[auto_assign.pk]), {"on": "0"})
    auto_assign.refresh_from_db()
    assert not auto_assign.is_active
    url = reverse("crm:automation_update", args=[auto_assign.pk])
    detail = reverse("crm:automation_detail", args=[auto_assign.pk])
    assert manager_client.get(url)["Location"] == detail
    response = manager_client.post(url, note_form(name="Hijacked", trigger=Trigger.DEAL_CREATED))
    assert response["Location"] == detail
    auto_assign.refresh_from_db()
    assert (auto_assign.name, auto_assign.trigger, auto_assign.actions) == before
    body = manager_client.get(detail).content.decode()
    assert "can only be switched on or off" in body and url not in body and "Built-in" in body
    manager_client.post(reverse("crm:automation_switch", args=[auto_assign.pk]), {"on": "1"})
    auto_assign.refresh_from_db()
    assert auto_assign.is_active


# The rule's page: definition, dry run, run log
# ---------------------------------------------------------------------------------------------------------


def test_the_rule_page_reads_the_definition_in_words(manager_client, product_line):
    proposal = stage()
    rule = make_rule(
        manager_client.user,
        trigger=Trigger.DEAL_STAGE_CHANGED,
        params={"stage": proposal.pk},
        conditions=[
            {"field": "amount", "op": "gte", "value": 5000},
            {"field": "custom.product_line", "op": "eq", "value": "pumps"},
        ],
        actions=[
            {
                "type": "create_task",
                "assignee": "owner",
                "days": 2,
                "subject_en": "Call back",
                "subject_zh": "",
            },
            {"type": "set_stage", "stage": proposal.pk},
        ],
    )
    body = manager_client.get(reverse("crm:automation_detail", args=[rule.pk])).content.decode()
    assert "a deal changes stage" in body and str(proposal) in body
    assert "Amount is at least “5000”" in body and "Product line is “Pumps”" in body
    assert "Create a task for the record&#x27;s owner, due in 2 days: “Call back”" in body
    assert f"Move the deal to {proposal}" in body


def test_the_dry_run_counts_what_the_rule_matched_in_the_last_seven_days(manager_client):
    rule = make_rule(manager_client.user)  # new deals over 500
    recent = [make_deal(at=timezone.now() - timedelta(days=2)) for _ in range(3)]
    make_deal(amount=Decimal("100"), at=timezone.now() - timedelta(days=1))
    make_deal(at=timezone.now() - timedelta(days=30))
    url = reverse("crm:automation_dry_run", args=[rule.pk])
    response = manager_client.get(url, headers=HTMX)
    body = response.content.decode()
    assert response.status_code == 200 and "<html" not in body and 'id="dry-run"' in body
    assert "3 deals" in body
    for deal in recent:
        assert f'href="{deal.get_absolute_url()}"' in body
    assert not AutomationRun.objects.exists()  # nothing was written
    page = manager_client.get(url).content.decode()  # without JavaScript: the rule's page with the result
    assert "<html" in page and "3 deals" in page and "Runs" in page
    only = make_rule(
        manager_client.user, name="Huge", conditions=[{"field": "amount", "op": "gt", "value": 999}]
    )
    newest = make_deal(amount=Decimal("5000"), at=timezone.now())
    body = manager_client.get(
        reverse("crm:automation_dry_run", args=[only.pk]), headers=HTMX
    ).content.decode()
    assert "4 deals" in body and newest.title in body
    detail = manager_client.get(reverse("crm:automation_detail", args=[rule.pk])).content.decode()
    assert "What would it have matched in the last 7 days?" in detail and f'hx-get="{url}"' in detail


def test_the_dry_run_says_one_deal_and_explains_a_rule_it_cannot_run(manager_client):
    rule = make_rule(manager_client.user, conditions=[{"field": "amount", "op": "gt", "value": 7000}])
    make_deal(amount=Decimal("8000"))
    body = manager_client.get(
        reverse("crm:automation_dry_run", args=[rule.pk]), headers=HTMX
    ).content.decode()
    assert "1 deal" in body and "1 deals" not in body
    builtins.seed()
    follow_up = AutomationRule.objects.get(builtin=AutomationRule.Builtin.SURVEY_FOLLOW_UP)
    response = manager_client.get(reverse("crm:automation_dry_run", args=[follow_up.pk]), headers=HTMX)
    assert response.status_code == 200 and "built-in rule has no dry run" in response.content.decode()


def test_the_run_log_lists_runs_newest_first_with_their_records_and_outcomes(manager_client):
    rule = make_rule(manager_client.user)
    kept, gone = make_deal(title="Kept deal"), make_deal(title="Gone deal")
    now = timezone.now()
    make_run(rule, kept, at=now - timedelta(hours=2))
    make_run(
        rule,
        gone,
        status=Status.FAILED,
        at=now - timedelta(hours=1),
        outcome=[note("The actions were not done: %(reason)s", reason="The customer has no e-mail address.")],
    )
    gone_pk = gone.pk
    AutomationRun.objects.filter(object_id=gone_pk).update(object_id=10**12)  # a record that was deleted
    response = manager_client.get(reverse("crm:automation_detail", args=[rule.pk]))
    body = response.content.decode()
    assert body.index("The customer has no e-mail address") < body.index("Note added.")  # newest first
    assert f'href="{kept.get_absolute_url()}">Kept deal</a>' in body
    assert "deal #1000000000000 · no longer exists" in body
    assert "failed" in body and "done" in body


def test_the_run_log_pages_with_htmx(manager_client):
    rule = make_rule(manager_client.user)
    deal = make_deal()
    start = timezone.now() - timedelta(days=1)
    for i in range(60):
        make_run(rule, deal, at=start + timedelta(minutes=i))
    url = reverse("crm:automation_detail", args=[rule.pk])
    first = manager_client.get(url)
    assert len(first.context["page"].object_list) == 50 and "Page 1 of 2" in first.content.decode()
    second = manager_client.get(url, {"page": "2"}, headers=HTMX)
    assert second.status_code == 200 and b"<html" not in second.content and b'id="run-log"' in second.content
    assert len(second.context["page"].object_list) == 10
    assert manager_client.get(url, {"page": "\x00"}).status_code == 200


# Chinese
# ---------------------------------------------------------------------------------------------------------


def test_the_pages_render_in_chinese(client, product_line):
    manager = make_manager(language="zh-hans")
    client.force_login(manager)
    client.cookies["django_language"] = "zh-hans"
    rule = make_rule(manager, conditions=[{"field": "custom.product_line", "op": "eq", "value": "pumps"}])
    make_run(rule, make_deal(customer=make_customer(name="星辰科技")))
    pages = [
        (reverse("crm:automation_list"), {}),
        (reverse("crm:automation_create"), {}),
        (reverse("crm:automation_create"), {"trigger": Trigger.DEAL_IDLE, "actions-0-type": "send_email"}),
        (reverse("crm:automation_detail", args=[rule.pk]), {}),
        (reverse("crm:automation_update", args=[rule.pk]), {}),
        (reverse("crm:automation_dry_run", args=[rule.pk]), {}),
    ]
    for url, query in pages:
        response = client.get(url, query)
        assert response.status_code == 200, url
        assert '<html lang="zh-hans"' in response.content.decode()
    response = client.post(
        reverse("crm:automation_create"), {"name": "", "trigger": "deal.idle"}, headers=HTMX
    )
    assert response.status_code == 200 and response.context["form"].errors
    assert "产品线" in client.get(reverse("crm:automation_detail", args=[rule.pk])).content.decode()


def test_stage_names_of_several_pipelines_name_their_pipeline(manager_client):
    from tests.factories import make_pipeline

    second = make_pipeline(name="Renewals")
    start = PipelineStage.objects.get(pipeline=second, name="Start")
    body = manager_client.get(
        reverse("crm:automation_create"), {"trigger": Trigger.DEAL_STAGE_CHANGED}
    ).content
    assert f'<option value="{start.pk}">Renewals · Start</option>'.encode() in body
