"""Read automation rules for the rules pages: the list with its run counts, a rule's definition in words,
its run log with the records the runs were about, and its dry run."""

from collections import defaultdict
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.db.models import Field, QuerySet
from django.urls import reverse
from django.utils.text import capfirst
from django.utils.translation import get_language, ngettext
from django.utils.translation import gettext as _

from accounts.models import Team, User
from crm.automation import rules, services
from crm.automation.events import ENTITY_OF
from crm.automation.models import AutomationRule, AutomationRun, note_text
from crm.custom_fields import kinds
from crm.custom_fields.models import CustomField
from crm.custom_fields.services import entity_model

Trigger = AutomationRule.Trigger
Entity = CustomField.Entity


class Lookups:
    """The names a rule's ids stand for (stages, users, teams) and the active custom fields, each read
    once per request, when first needed."""

    @cached_property
    def stages(self) -> dict[int, str]:
        from crm.models import PipelineStage

        stages = list(PipelineStage.objects.select_related("pipeline").order_by("pipeline__name", "order"))
        several = len({stage.pipeline_id for stage in stages}) > 1
        return {s.pk: f"{s.pipeline.name} · {s}" if several else str(s) for s in stages}

    @cached_property
    def users(self) -> dict[int, str]:
        """Active staff (who may own records, get tasks and tickets)."""
        users = User.objects.filter(is_active=True, is_service_account=False)
        return {u.pk: str(u) for u in users.order_by("first_name", "last_name", "username")}

    @cached_property
    def teams(self) -> dict[int, str]:
        return dict(Team.objects.order_by("name").values_list("pk", "name"))

    @cached_property
    def fields(self) -> dict[str, dict[str, CustomField]]:
        """Record type → key → its active custom field, in their order."""
        found: dict[str, dict[str, CustomField]] = defaultdict(dict)
        for field in CustomField.objects.filter(is_active=True).order_by("entity", "order", "id"):
            found[field.entity][field.key] = field
        return found

    def field(self, entity: str, name: str) -> CustomField | None:
        """The active custom field a ``custom.<key>`` name stands for."""
        return (
            self.fields.get(entity, {}).get(name.removeprefix("custom."))
            if name.startswith("custom.")
            else None
        )


def rule_list(*, lookups: Lookups) -> list[AutomationRule]:
    """Every rule, built-ins first, each with ``counts`` (its runs by status, one query for all rules)
    and ``when`` (its trigger and settings in words)."""
    counts = services.rule_counts()
    found = list(AutomationRule.objects.all())
    for rule in found:
        rule.counts = counts.get(rule.pk, {})
        rule.when = trigger_text(rule=rule, lookups=lookups)
    return found


def rule_runs(*, rule: AutomationRule) -> QuerySet[AutomationRun]:
    """A rule's run log, newest first."""
    return AutomationRun.objects.filter(rule=rule).order_by("-created_at", "-id")


# A rule in words
# ---------------------------------------------------------------------------------------------------------


def trigger_text(*, rule: AutomationRule, lookups: Lookups) -> str:
    """The trigger and its settings: "a deal sits in a stage without activity · for 14 days · Proposal"."""
    from crm.models import Activity, Customer

    params = rule.params or {}
    parts = [str(rule.get_trigger_display())]
    if params.get("stage"):
        parts.append(_("stage %(stage)s") % {"stage": _stage(params["stage"], lookups)})
    if rule.trigger == Trigger.DEAL_IDLE and params.get("days"):
        parts.append(
            ngettext("for %(count)s day", "for %(count)s days", _count(params["days"])) % _n(params["days"])
        )
    if rule.trigger == Trigger.TICKET_SLA_NEAR and params.get("hours"):
        text = ngettext(
            "%(count)s hour before it is due", "%(count)s hours before it is due", _count(params["hours"])
        )
        parts.append(text % _n(params["hours"]))
    if rule.trigger == Trigger.SURVEY_ANSWERED and params.get("score_max") is not None:
        parts.append(_("score %(score)s or lower") % {"score": params["score_max"]})
    if params.get("activity_kind"):
        parts.append(_label(Activity.Kind, params["activity_kind"]))
    if params.get("status"):
        parts.append(_("to %(status)s") % {"status": _label(Customer.Status, params["status"])})
    return " · ".join(str(part) for part in parts)


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _n(value: Any) -> dict[str, Any]:
    return {"count": value}


def _label(choices: Any, value: Any) -> str:
    return str(dict(choices.choices).get(value, value))


def _stage(value: Any, lookups: Lookups) -> str:
    return lookups.stages.get(value, _("a removed stage")) if isinstance(value, int) else str(value)


def _user(value: Any, lookups: Lookups) -> str:
    return lookups.users.get(value, _("a user who left")) if isinstance(value, int) else str(value)


def condition_field_label(*, entity: str, name: str, lookups: Lookups) -> str:
    """A condition's or a set-field action's field as the forms and pages name it."""
    if name.startswith("custom."):
        field = lookups.field(entity, name)
        return field.label if field else name.removeprefix("custom.")
    if name == "team":
        return str(capfirst(User._meta.get_field("team").verbose_name))
    path = rules.CONDITION_FIELDS.get(entity, {}).get(name, (name, ""))[0]
    try:
        model_field = entity_model(entity)._meta.get_field(path)
    except (FieldDoesNotExist, ValueError):  # a name a rule made elsewhere may carry
        return name
    return str(capfirst(model_field.verbose_name)) if isinstance(model_field, Field) else name


def value_text(*, entity: str, name: str, value: Any, lookups: Lookups) -> str:
    """A value a condition compares with or an action writes, as people read it."""
    if value is None or value == "":
        return _("empty")
    if name.startswith("custom."):
        field = lookups.field(entity, name)
        return kinds.display(field, value, user_names=lookups.users) if field else str(value)
    how = rules.CONDITION_FIELDS.get(entity, {}).get(name, ("", "text"))[1]
    if how == "stage":
        return _stage(value, lookups)
    if how == "user":
        return _user(value, lookups)
    if how == "team":
        return lookups.teams.get(value, str(value)) if isinstance(value, int) else str(value)
    try:
        model_field = entity_model(entity)._meta.get_field(name)
    except (FieldDoesNotExist, ValueError):
        return str(value)
    choices: dict[Any, Any] = dict(model_field.choices or ()) if isinstance(model_field, Field) else {}
    return str(choices.get(value, value))


def condition_texts(*, rule: AutomationRule, lookups: Lookups) -> list[str]:
    """Each condition in words: "Amount is at least 5000"."""
    entity = ENTITY_OF.get(rule.trigger, "deal")
    found = []
    for condition in rule.conditions or []:
        name, op = str(condition.get("field", "")), condition.get("op")
        text = f"{condition_field_label(entity=entity, name=name, lookups=lookups)} {rules.OPS.get(op, op)}"
        if op not in ("empty", "set"):
            text += (
                f" “{value_text(entity=entity, name=name, value=condition.get('value'), lookups=lookups)}”"
            )
        found.append(text)
    return found


def _pick(action: dict[str, Any], name: str) -> str:
    """An action's text in the page's language when it has one, else in the other."""
    english, chinese = str(action.get(f"{name}_en") or ""), str(action.get(f"{name}_zh") or "")
    return (chinese or english) if (get_language() or "").startswith("zh") else (english or chinese)


def action_text(*, action: dict[str, Any], entity: str, lookups: Lookups) -> str:
    """One action in words: "Create a task for the record's owner, due in 2 days: “Call back”"."""
    kind = str(action.get("type") or "")
    if kind == "create_task":
        who = action.get("assignee", "owner")
        whom = (
            _("the record's owner")
            if who == "owner"
            else _("the least busy %(role)s") % {"role": _label(User.Role, who).lower()}
        )
        days = _count(action.get("days"))
        text = ngettext(
            "Create a task for %(who)s, due in %(count)s day",
            "Create a task for %(who)s, due in %(count)s days",
            days,
        ) % {"who": whom, "count": days}
        return _quoted(text, _pick(action, "subject"))
    if kind == "send_email":
        whom = _("the customer") if action.get("to") == "customer" else _("the record's owner")
        return _quoted(_("Send an e-mail to %(who)s") % {"who": whom}, _pick(action, "subject"))
    if kind == "set_field":
        name = str(action.get("field", ""))
        return _("Set %(field)s to “%(value)s”") % {
            "field": condition_field_label(entity=entity, name=name, lookups=lookups),
            "value": value_text(entity=entity, name=name, value=action.get("value"), lookups=lookups),
        }
    if kind == "set_stage":
        return _("Move the deal to %(stage)s") % {"stage": _stage(action.get("stage"), lookups)}
    if kind == "set_owner":
        return _("Make %(user)s the owner") % {"user": _user(action.get("user"), lookups)}
    if kind == "assign_ticket":
        user = action.get("user")
        return _("Assign the ticket to %(user)s") % {
            "user": _user(user, lookups) if user else _("the least busy agent")
        }
    if kind == "add_note":
        return _quoted(_("Add a note"), _pick(action, "text"))
    return str(capfirst(rules.ACTIONS.get(kind, kind or "?")))


def _quoted(text: str, quote: str) -> str:
    return f"{text}: “{quote[:120]}”" if quote else text


def rule_definition(*, rule: AutomationRule, lookups: Lookups) -> dict[str, Any]:
    """The rule's "when", "if" and "then" in words, and what is wrong with it (or "")."""
    entity = ENTITY_OF.get(rule.trigger, "deal")
    found = None if rule.builtin else rules.problem(rule)
    return {
        "when": trigger_text(rule=rule, lookups=lookups),
        "conditions": condition_texts(rule=rule, lookups=lookups),
        "actions": [
            action_text(action=action, entity=entity, lookups=lookups) for action in rule.actions or []
        ],
        "problem": note_text(found) if found else "",
    }


# Records the runs and the dry run name
# ---------------------------------------------------------------------------------------------------------


def record_link(*, record: Any) -> tuple[str, str]:
    """(label, URL) of a deal, customer, ticket or activity (an activity's page is its customer's)."""
    if record._meta.model_name == "activity":
        return str(record), reverse("crm:customer_detail", args=[record.customer_id])
    return str(record), record.get_absolute_url()


def runs_with_records(*, runs: Iterable[AutomationRun]) -> list[AutomationRun]:
    """Give each run ``record``: (label, URL) of its record while that still exists, else None, and
    ``record_type``; one query per record type on the page. Managers see every record, and only they
    see the run log."""
    runs = list(runs)
    wanted: dict[str, set[int]] = defaultdict(set)
    for run in runs:
        if run.object_type in Entity.values:
            wanted[run.object_type].add(run.object_id)
    found: dict[tuple[str, int], tuple[str, str]] = {}
    for entity, ids in wanted.items():
        for record in entity_model(entity)._default_manager.filter(pk__in=ids):
            found[(entity, record.pk)] = record_link(record=record)
    for run in runs:
        run.record = found.get((run.object_type, run.object_id))
        known = run.object_type in Entity.values
        run.record_type = str(entity_model(run.object_type)._meta.verbose_name) if known else run.object_type
    return runs


RECORD_COUNTS = {
    "deal": lambda n: ngettext("%(count)s deal", "%(count)s deals", n),
    "customer": lambda n: ngettext("%(count)s customer", "%(count)s customers", n),
    "ticket": lambda n: ngettext("%(count)s ticket", "%(count)s tickets", n),
    "activity": lambda n: ngettext("%(count)s activity", "%(count)s activities", n),
}


def rule_dry_run(*, rule: AutomationRule) -> dict[str, Any]:
    """What the rule would have matched lately, for the page: ``text`` ("37 deals"), ``events`` (when
    they are more than the records), ``sample`` [(label, URL)], ``days``; or ``error``."""
    if rule.builtin:
        return {"error": _("A built-in rule has no dry run: switch it on or off.")}
    try:
        result = services.dry_run(rule)
    except ValidationError as exc:
        return {"error": " ".join(exc.messages)}
    records, events = result["records"], result["events"]
    return {
        "text": RECORD_COUNTS[ENTITY_OF[rule.trigger]](records) % {"count": records},
        "events": ngettext("(%(count)s event)", "(%(count)s events)", events) % {"count": events}
        if events > records
        else "",
        "sample": [record_link(record=record) for record in result["sample"]],
        "days": result["days"],
    }
