"""The catalogue of what a rule may say, and the check of a rule's definition.

A definition is plain JSON (``AutomationRule.params``, ``conditions``, ``actions``); ``problem``
says, in a sentence for the rules page, what is wrong with one (a removed field, a stage that is
gone, a user who left), or None. A rule with a problem is refused when saved and switched off when run.
"""

from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy, gettext_noop

from accounts.models import User
from crm.automation.events import ENTITY_OF
from crm.automation.models import AutomationRule, note
from crm.custom_fields import kinds
from crm.custom_fields.models import CustomField

Trigger = AutomationRule.Trigger
OWNER_PATH = {"deal": "owner", "customer": "owner", "ticket": "assignee", "activity": "user"}
# Built-in fields a condition may test, per record type: name → (ORM path, how its value reads).
CONDITION_FIELDS: dict[str, dict[str, tuple[str, str]]] = {
    "deal": {
        "amount": ("amount", "number"),
        "stage": ("stage", "stage"),
        "status": ("status", "text"),
        "kind": ("kind", "text"),
        "source": ("source", "text"),
        "probability": ("probability", "number"),
    },
    "customer": {
        "status": ("status", "text"),
        "segment": ("segment", "text"),
        "source": ("source", "text"),
        "industry": ("industry", "text"),
        "city": ("city", "text"),
        "kind": ("kind", "text"),
    },
    "ticket": {
        "priority": ("priority", "text"),
        "category": ("category", "text"),
        "channel": ("channel", "text"),
        "status": ("status", "text"),
    },
    "activity": {"kind": ("kind", "text")},
}
for _entity, _path in OWNER_PATH.items():
    CONDITION_FIELDS[_entity] |= {"owner": (_path, "user"), "team": (f"{_path}__team", "team")}
OPS = {
    "eq": gettext_lazy("is"),
    "ne": gettext_lazy("is not"),
    "gt": gettext_lazy("is more than"),
    "gte": gettext_lazy("is at least"),
    "lt": gettext_lazy("is less than"),
    "lte": gettext_lazy("is at most"),
    "contains": gettext_lazy("contains"),
    "empty": gettext_lazy("is empty"),
    "set": gettext_lazy("is filled in"),
}
ACTIONS = {
    "create_task": gettext_lazy("create a task"),
    "send_email": gettext_lazy("send an e-mail"),
    "set_field": gettext_lazy("set a field"),
    "set_stage": gettext_lazy("move the deal to a stage"),
    "set_owner": gettext_lazy("change the owner"),
    "assign_ticket": gettext_lazy("assign the ticket"),
    "add_note": gettext_lazy("add a note"),
    "fire_webhook": gettext_lazy("send a webhook"),
}
# Built-in fields a "set a field" action may write (through the record's update service).
SETTABLE = {
    "deal": {"amount", "probability", "kind", "source", "expected_close_date", "title"},
    "customer": {"segment", "industry", "city", "source"},
    "ticket": set(),
    "activity": set(),
}
TASK_ROLES = (User.Role.MANAGER, User.Role.REP, User.Role.AGENT)
MAX_CONDITIONS, MAX_ACTIONS = 10, 10


def entity_of(rule: AutomationRule) -> str:
    return ENTITY_OF[rule.trigger]


def custom_fields_used(rule: AutomationRule) -> set[str]:
    """The custom-field keys the rule reads or writes."""
    keys = {
        str(c.get("field", ""))[7:]
        for c in rule.conditions or []
        if str(c.get("field", "")).startswith("custom.")
    }
    keys |= {
        str(a.get("field", ""))[7:]
        for a in rule.actions or []
        if a.get("type") == "set_field" and str(a.get("field", "")).startswith("custom.")
    }
    return keys


def problem(rule: AutomationRule) -> dict | None:
    """What is wrong with the rule's definition (a run-log note, translated when shown), or None."""
    if rule.trigger not in Trigger.values:
        return note(gettext_noop("The trigger is not one this CRM knows."))
    entity = entity_of(rule)
    fields = {f.key: f for f in CustomField.objects.filter(entity=entity)}
    for check in (_params_problem, _conditions_problem, _actions_problem):
        found = check(rule, entity, fields)
        if found:
            return found
    return None


def _params_problem(rule: AutomationRule, entity: str, fields: dict[str, CustomField]) -> dict | None:
    from crm.models import PipelineStage

    params = rule.params or {}
    if rule.trigger == Trigger.DEAL_IDLE and not _int_between(params.get("days"), 1, 365):
        return note(gettext_noop("Say after how many days (1 to 365) without activity the rule fires."))
    if rule.trigger == Trigger.TICKET_SLA_NEAR and not _int_between(params.get("hours"), 1, 168):
        return note(gettext_noop("Say how many hours (1 to 168) before the SLA the rule fires."))
    if rule.trigger == Trigger.SURVEY_ANSWERED and not _int_between(params.get("score_max"), 0, 10):
        return note(gettext_noop("Say the highest score (0 to 10) that triggers the rule."))
    stage = params.get("stage")
    if stage and not PipelineStage.objects.filter(pk=stage).exists():
        return note(gettext_noop("The trigger's stage no longer exists."))
    return None


def _int_between(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _conditions_problem(rule: AutomationRule, entity: str, fields: dict[str, CustomField]) -> dict | None:
    conditions = rule.conditions or []
    if not isinstance(conditions, list) or len(conditions) > MAX_CONDITIONS:
        return note(gettext_noop("A rule has at most %(count)s conditions."), count=MAX_CONDITIONS)
    for condition in conditions:
        name, op = str(condition.get("field", "")), condition.get("op")
        if op not in OPS:
            return note(gettext_noop("A condition has no valid comparison."))
        if name.startswith("custom."):
            field = fields.get(name[7:])
            if field is None or not field.is_active:
                return note(
                    gettext_noop("A condition uses the field “%(field)s”, which was removed."), field=name[7:]
                )
            if op not in ("empty", "set") and not _fits(field, condition.get("value")):
                return _misfit(field, condition.get("value"))
        elif name not in CONDITION_FIELDS[entity]:
            return note(
                gettext_noop("A condition uses “%(field)s”, which these records do not have."),
                field=name[:40],
            )
    return None


def _actions_problem(rule: AutomationRule, entity: str, fields: dict[str, CustomField]) -> dict | None:
    actions = rule.actions or []
    if not isinstance(actions, list) or not actions or len(actions) > MAX_ACTIONS:
        return note(gettext_noop("A rule needs one to %(count)s actions."), count=MAX_ACTIONS)
    for action in actions:
        if action.get("type") not in ACTIONS:
            return note(gettext_noop("An action is not one this CRM knows."))
        found = (
            _target_problem(action, entity) or _field_problem(action, entity, fields) or _who_problem(action)
        )
        if found:
            return found
    return None


def _target_problem(action: dict[str, Any], entity: str) -> dict | None:
    """A stage move or an assignment on a record that has no stage or assignee."""
    from crm.models import PipelineStage

    kind = action["type"]
    if kind == "set_stage":
        if entity not in ("deal", "activity"):
            return note(gettext_noop("Only a deal (or an activity's deal) can be moved to a stage."))
        if not PipelineStage.objects.filter(pk=action.get("stage") or 0).exists():
            return note(gettext_noop("The action's stage no longer exists."))
    if kind == "assign_ticket" and entity != "ticket":
        return note(gettext_noop("Only a ticket can be assigned."))
    return None


def _field_problem(action: dict[str, Any], entity: str, fields: dict[str, CustomField]) -> dict | None:
    if action["type"] != "set_field":
        return None
    name = str(action.get("field", ""))
    if name.startswith("custom."):
        field = fields.get(name[7:])
        if field is None or not field.is_active:
            return note(
                gettext_noop("An action sets the field “%(field)s”, which was removed."), field=name[7:]
            )
        if not _fits(field, action.get("value")):
            return _misfit(field, action.get("value"))
    elif name not in SETTABLE[entity]:
        return note(gettext_noop("An action sets “%(field)s”, which a rule cannot change."), field=name[:40])
    return None


def _who_problem(action: dict[str, Any]) -> dict | None:
    """The person an action names: an active user, a role, the owner or the customer."""
    kind, user = action["type"], action.get("user")
    if kind in ("set_owner", "assign_ticket") and user and not _active_user(user):
        return note(gettext_noop("The action's user is no longer active."))
    if kind == "set_owner" and not user:
        return note(gettext_noop("Choose the new owner."))
    if kind == "create_task" and action.get("assignee", "owner") not in ("owner", *TASK_ROLES):
        return note(gettext_noop("Choose who gets the task."))
    if kind == "send_email" and action.get("to") not in ("customer", "owner"):
        return note(gettext_noop("Choose who gets the e-mail."))
    return None


def _fits(field: CustomField, value: Any) -> bool:
    """Whether a rule's value still reads as a value of ``field`` (its type or options may have changed)."""
    try:
        kinds.clean(field, value)
    except ValidationError:
        return False
    return True


def _misfit(field: CustomField, value: Any) -> dict:
    return note(
        gettext_noop(
            "The value “%(value)s” no longer fits the field “%(field)s” (its type or options changed)."
        ),
        value=str(value)[:50],
        field=field.key,
    )


def _active_user(pk: Any) -> bool:
    return isinstance(pk, int) and User.objects.filter(pk=pk, is_active=True).exists()
