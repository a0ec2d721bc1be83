"""Create, change, switch and dry-run automation rules (managers and admins)."""

from datetime import timedelta
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.models import User
from crm.automation import engine, rules
from crm.automation.events import ENTITY_OF
from crm.automation.models import AutomationRule, AutomationRun, note, note_text
from crm.custom_fields.models import CustomField

Trigger = AutomationRule.Trigger
DRY_RUN_DAYS = 7
COUNTED_DAYS = 30
DRY_RUN_SAMPLE = 10


def _ensure_manager(actor: User) -> None:
    if not actor.is_manager:
        raise PermissionDenied(_("Only managers and admins change automation rules."))


def _checked(rule: AutomationRule) -> None:
    found = rules.problem(rule)
    if found:
        raise ValidationError(note_text(found))


@transaction.atomic
def rule_create(
    *,
    actor: User,
    name: str,
    trigger: str,
    params: dict[str, Any],
    conditions: list[dict[str, Any]],
    actions: list[dict[str, Any]],
    is_active: bool = False,
) -> AutomationRule:
    """A new rule, checked; off unless ``is_active`` (the page suggests a dry run first)."""
    _ensure_manager(actor)
    now = timezone.now()
    rule = AutomationRule(
        name=name.strip()[:120],
        trigger=trigger,
        params=params,
        conditions=conditions,
        actions=actions,
        is_active=is_active,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    _checked(rule)
    rule.save()
    return rule


@transaction.atomic
def rule_update(*, actor: User, rule: AutomationRule, **changes: Any) -> AutomationRule:
    """Change a rule; its author becomes ``actor`` (the actions run as the last manager who saved it).
    Built-in rules can only be switched on and off."""
    _ensure_manager(actor)
    rule = AutomationRule.objects.select_for_update().get(pk=rule.pk)
    allowed = (
        {"is_active"} if rule.builtin else {"name", "trigger", "params", "conditions", "actions", "is_active"}
    )
    unknown = set(changes) - allowed
    if unknown:
        raise ValidationError(_("A built-in rule can only be switched on or off."))
    for name, value in changes.items():
        setattr(rule, name, value)
    if not rule.builtin:
        rule.created_by = actor
        _checked(rule)
    if rule.is_active:
        rule.disabled_reason = {}
    rule.updated_at = timezone.now()
    rule.save()
    return rule


def rule_set_active(*, actor: User, rule: AutomationRule, is_active: bool) -> AutomationRule:
    return rule_update(actor=actor, rule=rule, is_active=is_active)


def _rules_using(field: CustomField) -> list[AutomationRule]:
    """The switched-on rules of the field's record type that read or write it."""
    triggers = [t for t, e in ENTITY_OF.items() if e == field.entity]
    found = AutomationRule.objects.filter(is_active=True, builtin="", trigger__in=triggers)
    return [rule for rule in found if field.key in rules.custom_fields_used(rule)]


def rules_disable_for_field(*, field: CustomField) -> int:
    """Switch off the rules that read or write ``field`` (archived), saying why; returns how many."""
    reason = note(
        gettext_noop("It uses the field “%(field)s”, which was archived or removed."), field=field.key
    )
    using = _rules_using(field)
    for rule in using:
        engine.switch_off(rule, reason)
    return len(using)


def rules_recheck_for_field(*, field: CustomField) -> int:
    """After a change of a field's type or options: switch off the rules whose values for it no longer
    fit, saying why; returns how many."""
    count = 0
    for rule in _rules_using(field):
        if reason := rules.problem(rule):
            engine.switch_off(rule, reason)
            count += 1
    return count


def rule_counts(*, days: int = COUNTED_DAYS) -> dict[int, dict[str, int]]:
    """Each rule's runs of the last ``days`` days by status (the rules page), in one query (the run log
    grows for ever; a BRIN index on its time keeps this a scan of the recent runs only)."""
    since = timezone.now() - timedelta(days=days)
    counts: dict[int, dict[str, int]] = {}
    runs = AutomationRun.objects.filter(created_at__gte=since)
    for row in runs.values("rule", "status").annotate(n=Count("id")).order_by():
        counts.setdefault(row["rule"], {})[row["status"]] = row["n"]
    return counts


def dry_run(rule: AutomationRule, *, now: Any = None) -> dict[str, Any]:
    """What ``rule`` would have matched in the last seven days: the number of events, of records, and a
    few of the records (nothing is written)."""
    found = rules.problem(rule)
    if found:
        raise ValidationError(note_text(found))
    now = now or timezone.now()
    since = now - timedelta(days=DRY_RUN_DAYS)
    events, records = _events_since(rule, since, now)
    matching = engine.matches(rule, records)
    ids = list(matching.values_list("pk", flat=True)[:100_000])
    sample = list(matching.order_by("-pk")[:DRY_RUN_SAMPLE])
    matched_events = events.filter(record__in=ids).count() if events is not None else len(ids)
    return {"events": matched_events, "records": len(ids), "sample": sample, "days": DRY_RUN_DAYS}


def _events_since(rule: AutomationRule, since: Any, now: Any) -> tuple[QuerySet | None, QuerySet]:
    """The trigger's events in [since, now] (``record`` names each one's record; None when one record
    is one event) and the records they happened to."""
    from django.apps import apps
    from django.db.models import F

    from crm.models import (
        Activity,
        Customer,
        CustomerStatusChange,
        Deal,
        DealStageChange,
        Ticket,
        TicketStatusChange,
    )

    params, trigger = rule.params or {}, rule.trigger
    if trigger == Trigger.DEAL_CREATED:
        return None, Deal.objects.filter(created_at__gte=since)
    if trigger in (Trigger.DEAL_WON, Trigger.DEAL_LOST):
        status = Deal.Status.WON if trigger == Trigger.DEAL_WON else Deal.Status.LOST
        return None, Deal.objects.filter(status=status, closed_at__gte=since)
    if trigger == Trigger.DEAL_STAGE_CHANGED:
        moves = DealStageChange.objects.filter(at__gte=since, from_stage__isnull=False)
        if params.get("stage"):
            moves = moves.filter(to_stage_id=params["stage"])
        return moves.annotate(record=F("deal_id")), Deal.objects.filter(pk__in=moves.values("deal_id"))
    if trigger == Trigger.DEAL_IDLE:
        return None, engine.idle_deals(rule, since=since, now=now)
    if trigger == Trigger.CUSTOMER_CREATED:
        return None, Customer.objects.filter(created_at__gte=since)
    if trigger == Trigger.CUSTOMER_STATUS_CHANGED:
        changes = CustomerStatusChange.objects.filter(at__gte=since).exclude(from_status="")
        if params.get("status"):
            changes = changes.filter(to_status=params["status"])
        customers = Customer.objects.filter(pk__in=changes.values("customer_id"))
        return changes.annotate(record=F("customer_id")), customers
    if trigger == Trigger.TICKET_CREATED:
        return None, Ticket.objects.filter(created_at__gte=since)
    if trigger == Trigger.TICKET_SLA_NEAR:
        # Tickets whose "N hours before the SLA" moment fell in the window while they were unsolved.
        hours = timedelta(hours=params["hours"])
        tickets = Ticket.objects.filter(
            resolution_due_at__gte=since + hours, resolution_due_at__lte=now + hours
        )
        near = Q(solved_at__isnull=True) | Q(solved_at__gte=F("resolution_due_at") - hours)
        return None, tickets.filter(near)
    if trigger == Trigger.TICKET_SOLVED:
        solved = TicketStatusChange.objects.filter(at__gte=since, to_status=Ticket.Status.SOLVED)
        return solved.annotate(record=F("ticket_id")), Ticket.objects.filter(
            pk__in=solved.values("ticket_id")
        )
    if trigger == Trigger.SURVEY_ANSWERED:
        responses = apps.get_model("surveys", "SurveyResponse").objects.filter(
            score_submitted_at__gte=since, score__lte=params["score_max"]
        )
        customers = Customer.objects.filter(pk__in=responses.values("customer_id"))
        return responses.annotate(record=F("customer_id")), customers
    activities = Activity.objects.filter(created_at__gte=since)
    if params.get("activity_kind"):
        activities = activities.filter(kind=params["activity_kind"])
    return None, activities
