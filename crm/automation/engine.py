"""Run a rule's run once: check the rule, match its conditions against the record as it is now, do its
actions, and log the outcome, all in one transaction that holds the run's row lock.

A second worker given the same run (a redelivered task, the sweep) finds it locked or no longer
waiting and does nothing. An action that fails rolls back every action of the run, and the run is
logged as failed with the reason; a rule whose definition went bad (a removed field) is switched off
with the reason shown. Nothing here raises out of the task: no run is left stuck.
"""

import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, OperationalError, models, transaction
from django.db.models import Exists, F, OuterRef, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from crm.automation import actions, rules
from crm.automation.events import ENTITY_OF, automation_emit, chain_of
from crm.automation.models import AutomationRule, AutomationRun, note
from crm.custom_fields import kinds, query
from crm.custom_fields.models import CustomField
from crm.custom_fields.services import entity_model

logger = logging.getLogger(__name__)
Status = AutomationRun.Status
Trigger = AutomationRule.Trigger
STALE_AFTER = timedelta(minutes=5)
SWEEP_WINDOW = timedelta(days=2)
SWEEP_BATCH = 2000


def run_one(run_id: int) -> str | None:
    """Do run ``run_id`` if it is still waiting; returns its new status (None: someone else has it)."""
    with transaction.atomic():
        run = (
            AutomationRun.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("rule", "rule__created_by")
            .filter(pk=run_id, status=Status.PENDING)
            .first()
        )
        if run is None:
            return None
        status, outcome = _execute(run)
        run.status, run.outcome, run.finished_at = status, outcome, timezone.now()
        run.save(update_fields=["status", "outcome", "finished_at"])
        return status


def _execute(run: AutomationRun) -> tuple[str, list[dict]]:
    rule = run.rule
    if not rule.is_active:
        return Status.SKIPPED, [note(gettext_noop("The rule was switched off before it ran."))]
    reason = rules.problem(rule)
    if reason:
        switch_off(rule, reason)
        return Status.FAILED, [note(gettext_noop("The rule was switched off:")), reason]
    records = entity_model(run.object_type)._default_manager.filter(pk=run.object_id)
    record = records.first()
    if record is None:
        return Status.SKIPPED, [note(gettext_noop("The record no longer exists."))]
    try:
        # One savepoint around the conditions and the actions: whatever fails in them, the run's own row
        # can still be written (never left waiting).
        with transaction.atomic(), chain_of(run):
            if not matches(rule, records).exists():
                return Status.SKIPPED, [note(gettext_noop("The conditions did not hold."))]
            return Status.DONE, [actions.perform(action, record=record, rule=rule) for action in rule.actions]
    except OperationalError:
        raise  # a deadlock or a lost connection: the task is retried, the run still waits
    except (ValidationError, PermissionDenied) as exc:
        messages = getattr(exc, "messages", None) or [str(exc)]
        text = " ".join(str(m) for m in messages)
        return Status.FAILED, [note(gettext_noop("The actions were not done: %(reason)s"), reason=text)]
    except DatabaseError:
        logger.exception("automation run %s: database error", run.pk)
        return Status.FAILED, [note(gettext_noop("The database refused a change; see the server log."))]
    except Exception:
        logger.exception("automation run %s failed", run.pk)
        return Status.FAILED, [
            note(gettext_noop("An unexpected error stopped the rule; see the server log."))
        ]


def switch_off(rule: AutomationRule, reason: dict) -> None:
    """The CRM switches ``rule`` off, saying why (a run-log note shown on the rules page)."""
    AutomationRule.objects.filter(pk=rule.pk).update(
        is_active=False, disabled_reason=reason, updated_at=timezone.now()
    )


def matches(rule: AutomationRule, qs: QuerySet) -> QuerySet:
    """``qs`` narrowed to the records for which every condition of ``rule`` holds."""
    entity = ENTITY_OF[rule.trigger]
    fields = {f.key: f for f in CustomField.objects.filter(entity=entity, is_active=True)}
    for condition in rule.conditions or []:
        name, op, value = str(condition.get("field", "")), condition.get("op"), condition.get("value")
        if name.startswith("custom."):
            field = fields[name[7:]]
            stored = None if op in ("empty", "set") else kinds.clean(field, value)
            qs = query.condition(qs, field, op, stored)
        else:
            qs = _builtin_condition(qs, *rules.CONDITION_FIELDS[entity][name], op, value)
    return qs


def _builtin_condition(qs: QuerySet, path: str, how: str, op: str, value: Any) -> QuerySet:
    relation = how in ("stage", "user", "team")
    if op in ("empty", "set"):
        blank = Q(**{f"{path}__isnull": True})
        if not relation:
            blank |= Q(**{path: ""})
        return qs.filter(blank) if op == "empty" else qs.exclude(blank)
    value = _typed(how, value)
    if op == "ne":
        return qs.exclude(**{path: value})
    lookup = {"eq": "exact", "contains": "icontains"}.get(op, op)
    if relation and lookup not in ("exact",):
        lookup = "exact"
    return qs.filter(**{f"{path}__{lookup}": value})


def _typed(how: str, value: Any) -> Any:
    from decimal import Decimal, InvalidOperation

    if how == "number":
        try:
            return Decimal(str(value))
        except InvalidOperation as exc:
            raise ValidationError(
                _("A condition compares with “%(value)s”, which is not a number.") % {"value": value}
            ) from exc
    if how in ("stage", "user", "team"):
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise ValidationError(_("A condition names a record that does not exist.")) from exc
    return "" if value is None else str(value)


# The sweep: time-based triggers, and runs whose hand-over to Celery was lost
# ---------------------------------------------------------------------------------------------------------


def sweep(now: Any = None) -> dict[str, int]:
    """Fire "sits in a stage for N days without activity" and "gets near its SLA" for the records that
    crossed the line since the last sweeps (within ``SWEEP_WINDOW``: a rule switched on does not fire at
    once for every deal idle for months), and hand waiting runs older than ``STALE_AFTER`` to Celery
    again. Returns counts."""
    now = now or timezone.now()
    counts = {"idle": 0, "sla": 0, "requeued": 0}
    for rule in AutomationRule.objects.filter(is_active=True, builtin="", trigger=Trigger.DEAL_IDLE):
        fired = _runs_of(rule, "deal").filter(created_at__gte=OuterRef("idle_since"))
        for deal in idle_deals(rule, since=now - SWEEP_WINDOW, now=now).exclude(Exists(fired))[:SWEEP_BATCH]:
            counts["idle"] += len(_emit_idle(rule, deal))
    for rule in AutomationRule.objects.filter(is_active=True, builtin="", trigger=Trigger.TICKET_SLA_NEAR):
        near_since = F("resolution_due_at") - timedelta(hours=rule.params["hours"])
        fired = _runs_of(rule, "ticket").filter(created_at__gte=OuterRef("near_since"))
        tickets = sla_near_tickets(rule, since=now - SWEEP_WINDOW, now=now).alias(near_since=near_since)
        for ticket in tickets.exclude(Exists(fired))[:SWEEP_BATCH]:
            counts["sla"] += len(_emit_sla(rule, ticket))
    stale = list(
        AutomationRun.objects.filter(status=Status.PENDING, created_at__lt=now - STALE_AFTER)
        .order_by("created_at")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    if stale:
        from crm.automation.events import enqueue

        enqueue(stale)
    counts["requeued"] = len(stale)
    return counts


def _runs_of(rule: AutomationRule, object_type: str) -> QuerySet:
    """The rule's runs on the outer query's record (the sweep leaves out what already fired)."""
    return AutomationRun.objects.filter(rule=rule, object_type=object_type, object_id=OuterRef("pk"))


def idle_deals(rule: AutomationRule, *, since: Any, now: Any) -> QuerySet:
    """Open deals whose last activity (or creation) is ``days`` old, the line crossed in [since, now]."""
    from crm.models import Deal

    days = timedelta(days=rule.params["days"])
    qs = Deal.objects.filter(status=Deal.Status.OPEN)
    if rule.params.get("stage"):
        qs = qs.filter(stage_id=rule.params["stage"])
    idle_since = models.functions.Coalesce("last_activity_at", "created_at")
    return (
        qs.alias(idle_since=idle_since)
        .filter(idle_since__gte=since - days, idle_since__lte=now - days)
        .order_by("idle_since", "pk")
    )


def _emit_idle(rule: AutomationRule, deal: Any) -> list[int]:
    with transaction.atomic():
        since = deal.last_activity_at or deal.created_at
        return automation_emit(
            trigger=Trigger.DEAL_IDLE,
            obj=deal,
            key=f"idle:{deal.stage_id}:{since.isoformat()}",
            event={"stage": deal.stage_id, "idle_since": since.isoformat()},
            rules=[rule],
        )


def sla_near_tickets(rule: AutomationRule, *, since: Any, now: Any) -> QuerySet:
    """Unsolved tickets whose resolution is due within ``hours``, the line crossed in [since, now]."""
    from crm.models import Ticket

    hours = timedelta(hours=rule.params["hours"])
    return Ticket.objects.filter(
        status__in=Ticket.UNSOLVED,
        resolution_due_at__gt=now,
        resolution_due_at__lte=now + hours,
        resolution_due_at__gte=since + hours,
    ).order_by("resolution_due_at", "pk")


def _emit_sla(rule: AutomationRule, ticket: Any) -> list[int]:
    with transaction.atomic():
        return automation_emit(
            trigger=Trigger.TICKET_SLA_NEAR,
            obj=ticket,
            key=f"sla:{ticket.resolution_due_at.isoformat()}",
            event={"due": ticket.resolution_due_at.isoformat()},
            rules=[rule],
        )
