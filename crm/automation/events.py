"""Something happened to a record: write a run for each active rule it triggers, in the caller's
transaction, and hand the runs to Celery once that transaction commits (none for a change that rolls back).

A run's key is (rule, record, event): the same event reported twice (a retried write, two sweeps at
once) writes one run, and the worker's row lock does it once. The loop guard lives here too: while a
rule's actions run, ``chain`` holds the rules already fired in this chain of events; a rule is never
run again on a record it changed in the same chain, and a chain stops at ``MAX_DEPTH`` rules.
"""

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from crm.automation.models import AutomationRule, AutomationRun, note

Trigger = AutomationRule.Trigger
MAX_DEPTH = 3
ENTITY_OF: dict[str, str] = {
    Trigger.DEAL_CREATED: "deal",
    Trigger.DEAL_STAGE_CHANGED: "deal",
    Trigger.DEAL_WON: "deal",
    Trigger.DEAL_LOST: "deal",
    Trigger.DEAL_IDLE: "deal",
    Trigger.CUSTOMER_CREATED: "customer",
    Trigger.CUSTOMER_STATUS_CHANGED: "customer",
    Trigger.TICKET_CREATED: "ticket",
    Trigger.TICKET_SLA_NEAR: "ticket",
    Trigger.TICKET_SOLVED: "ticket",
    Trigger.SURVEY_ANSWERED: "customer",
    Trigger.ACTIVITY_LOGGED: "activity",
}
# Kept in English in the run log (gettext_noop) and translated when shown.
LOOP_STOP = gettext_noop("Not run: this rule already changed this record in the same chain of events.")
DEPTH_STOP = gettext_noop("Not run: the chain of rules reached its limit of three.")


@dataclass(frozen=True)
class Chain:
    depth: int
    links: tuple[tuple[int, str, int], ...]


_chain: ContextVar[Chain | None] = ContextVar("automation_chain", default=None)


@contextlib.contextmanager
def chain_of(run: AutomationRun) -> Iterator[None]:
    """While ``run``'s actions run: the events they cause belong to its chain, one link deeper."""
    links = (*(tuple(link) for link in run.chain), (run.rule_id, run.object_type, run.object_id))
    token = _chain.set(Chain(depth=run.depth, links=links))  # type: ignore[arg-type]
    try:
        yield
    finally:
        _chain.reset(token)


def params_match(rule: AutomationRule, event: dict[str, Any]) -> bool:
    """Whether the event is the one the rule's trigger settings narrow it to (a stage, a status, …)."""
    params = rule.params or {}
    if rule.trigger == Trigger.DEAL_STAGE_CHANGED and params.get("stage"):
        return event.get("to_stage") == params["stage"]
    if rule.trigger == Trigger.CUSTOMER_STATUS_CHANGED and params.get("status"):
        return event.get("to") == params["status"]
    if rule.trigger == Trigger.SURVEY_ANSWERED:
        return event.get("score") is not None and event["score"] <= params.get("score_max", -1)
    if rule.trigger == Trigger.ACTIVITY_LOGGED and params.get("activity_kind"):
        return event.get("kind") == params["activity_kind"]
    if rule.trigger == Trigger.DEAL_IDLE and params.get("stage"):
        return event.get("stage") == params["stage"]
    return True


def automation_emit(
    *,
    trigger: str,
    obj: models.Model,
    key: str,
    event: dict[str, Any] | None = None,
    rules: list[AutomationRule] | None = None,
) -> list[int]:
    """Record that ``trigger`` happened to ``obj`` (``key`` names this occurrence among the record's
    events); returns the ids of the runs it wrote (none for an event already recorded). One indexed
    query when no rule listens."""
    event = event or {}
    if rules is None:
        rules = list(AutomationRule.objects.filter(trigger=trigger, is_active=True, builtin=""))
    rules = [rule for rule in rules if params_match(rule, event)]
    if not rules:
        return []
    chain = _chain.get()
    depth = chain.depth + 1 if chain else 0
    entity, now = ENTITY_OF[trigger], timezone.now()
    runs = []
    for rule in rules:
        run = AutomationRun(
            rule=rule,
            object_type=entity,
            object_id=obj.pk,
            event_key=key[:120],
            event=event,
            depth=depth,
            chain=[list(link) for link in chain.links] if chain else [],
            created_at=now,
        )
        if chain and (rule.pk, entity, obj.pk) in chain.links:
            run.status, run.outcome, run.finished_at = AutomationRun.Status.STOPPED, [note(LOOP_STOP)], now
        elif depth >= MAX_DEPTH:
            run.status, run.outcome, run.finished_at = AutomationRun.Status.STOPPED, [note(DEPTH_STOP)], now
        runs.append(run)
    AutomationRun.objects.bulk_create(runs, ignore_conflicts=True)
    pending = list(
        AutomationRun.objects.filter(
            rule__in=[r.pk for r in rules],
            object_type=entity,
            object_id=obj.pk,
            event_key=key[:120],
            status=AutomationRun.Status.PENDING,
            created_at=now,  # written here, not by an earlier report of the same event
        ).values_list("pk", flat=True)
    )
    if pending:
        transaction.on_commit(lambda: enqueue(pending), robust=True)
    return pending


ENQUEUE_CHUNK = 20


def enqueue(run_ids: list[int]) -> None:
    """Hand runs to Celery: one message for a run, one per 20 runs for more (the runs of one event
    then cost the request one round trip to Redis, not one each; many events still spread over the
    workers)."""
    from crm.tasks import run_automation, run_automations

    if len(run_ids) == 1:
        run_automation.delay(run_ids[0])
        return
    for start in range(0, len(run_ids), ENQUEUE_CHUNK):
        run_automations.delay(run_ids[start : start + ENQUEUE_CHUNK])
