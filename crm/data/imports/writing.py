"""Writing the planned rows: customers in bulk, deals and tickets one by one through the ordinary
services, each row completely or not at all.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from accounts.models import UsageEvent, User
from crm import services
from crm.data.imports import campaigns
from crm.data.imports.planning import CREATE, UPDATE, RowPlan
from crm.models import ImportJob, PipelineStage, Ticket


def _write_customers(plans: list[RowPlan], actor: User, at: datetime) -> None:
    creates = [p for p in plans if p.action == CREATE]
    updates = [p for p in plans if p.action == UPDATE]
    fields = set(services.CUSTOMER_FIELDS) | {"status"}
    _in_batch_or_alone(
        creates,
        lambda batch: services.customer_bulk_create(
            actor=actor,
            rows=[{k: v for k, v in p.values.items() if k in fields} for p in batch],
            via=UsageEvent.Via.IMPORT,
            at=at,
        ),
    )
    _in_batch_or_alone(
        updates,
        lambda batch: services.customer_bulk_update(
            actor=actor, changes=[(p.target, p.changes) for p in batch], via=UsageEvent.Via.IMPORT, at=at
        ),
    )


def _in_batch_or_alone(plans: list[RowPlan], write: Callable[[list[RowPlan]], Any]) -> None:
    """Write the batch at once; if the database refuses it, write row by row to find the bad rows."""
    if not plans:
        return
    try:
        with transaction.atomic():
            write(plans)
        return
    except (ValidationError, PermissionDenied):
        if len(plans) == 1:
            raise
    for plan in plans:
        try:
            with transaction.atomic():
                write([plan])
        except (ValidationError, PermissionDenied) as exc:
            plan.fail(" ".join(_messages(exc)))


def _messages(exc: Exception) -> list[str]:
    if isinstance(exc, ValidationError):
        return exc.messages
    return [str(exc) or _("You may not change this record.")]


def _write_deal(plan: RowPlan, actor: User, at: datetime) -> None:
    values = plan.values
    via = UsageEvent.Via.IMPORT
    stage = values.get("stage")
    passed_apart = ("customer", "owner", "title")
    fields = {k: v for k, v in values.items() if k in services.DEAL_FIELDS and k not in passed_apart}
    if plan.action == UPDATE:
        deal = plan.target
        data = {k: v for k, v in plan.changes.items() if k in services.DEAL_FIELDS}
        if data:
            deal = services.deal_update(deal=deal, actor=actor, data=data, version=None, via=via)
        if "stage" in plan.changes:
            services.deal_move_stage(
                deal=deal,
                stage=stage,
                actor=actor,
                lost_reason=values.get("lost_reason", ""),
                at=values.get("closed_at") or at,
                via=via,
            )
        return
    closed_at = values.get("closed_at")
    created = values.get("created_at") or closed_at or at
    first_stage = stage
    if stage is not None and stage.kind != PipelineStage.Kind.OPEN and closed_at and closed_at != created:
        first_stage = (
            None  # opened at ``created``, then closed at ``closed_at``: the stage history shows both
        )
    deal = services.deal_create(
        actor=actor,
        customer=values["customer"],
        title=values["title"],
        stage=first_stage,
        owner=values.get("owner"),
        at=created,
        lost_reason=values.get("lost_reason", "") if first_stage is not None else "",
        via=via,
        **fields,
    )
    if first_stage is None and stage is not None:
        services.deal_move_stage(
            deal=deal,
            stage=stage,
            actor=actor,
            lost_reason=values.get("lost_reason", ""),
            at=closed_at,
            via=via,
        )


def _write_ticket(plan: RowPlan, actor: User, at: datetime) -> None:
    values = plan.values
    via = UsageEvent.Via.IMPORT
    created = values.get("created_at") or at
    passed = ("description", "priority", "category", "channel", "custom")
    fields = {k: values[k] for k in passed if k in values}
    ticket = services.ticket_create(
        actor=actor,
        customer=values["customer"],
        subject=values["subject"],
        assignee=values.get("assignee"),
        at=created,
        via=via,
        **fields,
    )
    status = values.get("status", Ticket.Status.NEW)
    if status != Ticket.Status.NEW:
        done_at = values.get("solved_at") or created
        services.ticket_set_status(
            ticket=ticket,
            status=status,
            actor=actor,
            at=done_at if status in (Ticket.Status.SOLVED, Ticket.Status.CLOSED) else created,
            via=via,
        )


def _write_one_by_one(
    plans: list[RowPlan], write: Callable[[RowPlan, User, datetime], None], actor: User, at: datetime
) -> None:
    for plan in plans:
        if plan.action not in (CREATE, UPDATE):
            continue
        try:
            with transaction.atomic():
                write(plan, actor, at)
        except (ValidationError, PermissionDenied) as exc:
            plan.fail(" ".join(_messages(exc)))


def _write(kind: str, plans: list[RowPlan], actor: User, at: datetime) -> None:
    if kind == ImportJob.Kind.CUSTOMERS:
        _write_customers(plans, actor, at)
    elif kind == ImportJob.Kind.DEALS:
        _write_one_by_one(plans, _write_deal, actor, at)
    elif kind == ImportJob.Kind.CAMPAIGNS:
        _write_one_by_one(plans, campaigns.write_campaign, actor, at)
    else:
        _write_one_by_one(plans, _write_ticket, actor, at)


# Services
