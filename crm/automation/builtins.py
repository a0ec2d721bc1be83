"""The built-in rules: the survey follow-up task and the ticket auto-assignment.

They are rules users see on the rules page and can switch off, with runs in the log like any other.
Unlike the company's own rules they run inside the write that triggers them, not in Celery: a new
ticket is never seen unassigned, and a low score and its follow-up task are stored together.
"""

from django.db import models
from django.utils import timezone

from crm.automation.models import AutomationRule, AutomationRun

Builtin = AutomationRule.Builtin
Trigger = AutomationRule.Trigger
DEFINITIONS = {
    Builtin.SURVEY_FOLLOW_UP: {
        "trigger": Trigger.SURVEY_ANSWERED,
        "params": {},  # a negative answer for the survey's kind (surveys.models.Survey.bucket)
        "actions": [{"type": "create_task", "assignee": "owner", "days": 2}],
    },
    Builtin.TICKET_AUTO_ASSIGN: {
        "trigger": Trigger.TICKET_CREATED,
        "params": {},
        "actions": [{"type": "assign_ticket", "user": None}],
    },
}


def active(builtin: str) -> AutomationRule | None:
    """The built-in rule when it is switched on. Built-in rules are on unless switched off: a database
    without them (emptied, or restored from before they existed) gets them back here."""
    rule = AutomationRule.objects.filter(builtin=builtin).first()
    if rule is None:
        seed()
        rule = AutomationRule.objects.get(builtin=builtin)
    return rule if rule.is_active else None


def ran(
    rule: AutomationRule,
    *,
    obj: models.Model,
    key: str,
    outcome: list[dict],
    status: str = AutomationRun.Status.DONE,
) -> None:
    """Log a built-in rule's run (done in the same transaction as the write)."""
    now = timezone.now()
    AutomationRun.objects.bulk_create(
        [
            AutomationRun(
                rule=rule,
                object_type=obj._meta.model_name,
                object_id=obj.pk,
                event_key=key,
                status=status,
                outcome=outcome,
                created_at=now,
                finished_at=now,
            )
        ],
        ignore_conflicts=True,
    )


def seed(rule_model: type[models.Model] = AutomationRule, *, auto_assign: bool = True) -> None:
    """Create the built-in rules that are missing (the survey follow-up on, the auto-assignment as the
    company had it); a data migration and ``defaults_seed`` call this."""
    now = timezone.now()
    names = {
        Builtin.SURVEY_FOLLOW_UP: "Follow up a low survey score",
        Builtin.TICKET_AUTO_ASSIGN: "Assign new tickets to the least busy agent",
    }
    for builtin, definition in DEFINITIONS.items():
        rule_model.objects.get_or_create(
            builtin=builtin,
            defaults={
                **definition,
                "name": names[builtin],
                "is_active": auto_assign if builtin == Builtin.TICKET_AUTO_ASSIGN else True,
                "created_at": now,
                "updated_at": now,
            },
        )
