"""What a rule does: each action goes through the CRM's own services (validation, history, webhooks),
as the rule's author, marked ``via=system`` so that automation never counts as staff adoption.

``perform`` returns a run-log note; a refusal (a ValidationError from a service, a customer without an
e-mail address) fails the run, and the run's transaction rolls every action of it back.
"""

import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from accounts.models import UsageEvent, User
from crm.automation.models import AutomationRule, note
from crm.custom_fields import kinds
from crm.custom_fields.models import CustomField

SYSTEM = UsageEvent.Via.SYSTEM
VARIABLE = re.compile(r"\{\{\s*([a-z_]+(?:\.[a-z0-9_]+)?)\s*\}\}")


def perform(action: dict[str, Any], *, record: Any, rule: AutomationRule) -> dict:
    handler = HANDLERS[action["type"]]
    return handler(action, record, rule)


def _author(rule: AutomationRule) -> User:
    author = rule.created_by
    if author is None or not author.is_active:
        raise ValidationError(_("The manager who made this rule is no longer active; save the rule again."))
    return author


def _customer(record: Any) -> Any:
    from crm.models import Customer

    return record if isinstance(record, Customer) else record.customer


def _owner(record: Any) -> User | None:
    from crm.models import Activity, Ticket

    if isinstance(record, Ticket):
        return record.assignee or record.customer.owner
    if isinstance(record, Activity):
        return record.user
    return record.owner


def _links(record: Any) -> dict[str, Any]:
    """The customer, deal and ticket an activity made for ``record`` belongs to."""
    from crm.models import Activity, Deal, Ticket

    if isinstance(record, Activity):
        return {"customer": record.customer, "deal": record.deal, "ticket": record.ticket}
    return {
        "customer": _customer(record),
        "deal": record if isinstance(record, Deal) else None,
        "ticket": record if isinstance(record, Ticket) else None,
    }


def _pick(action: dict[str, Any], name: str, language: str) -> str:
    """An action's text in ``language`` (the Chinese one for Chinese readers, when there is one)."""
    chinese = str(action.get(f"{name}_zh") or "")
    return chinese if chinese and language.startswith("zh") else str(action.get(f"{name}_en") or chinese)


def render(template: str, record: Any) -> str:
    """Fill ``{{ customer }}``, ``{{ deal }}``, ``{{ amount }}``, ``{{ stage }}``, ``{{ owner }}``,
    ``{{ ticket }}`` and ``{{ custom.<key> }}`` in a rule's text; unknown names are left empty."""
    links = _links(record)
    owner = _owner(record)
    deal, ticket = links["deal"], links["ticket"]
    values = {
        "customer": links["customer"].name,
        "deal": deal.title if deal else "",
        "amount": str(deal.amount) if deal and deal.amount is not None else "",
        "stage": deal.stage.name if deal else "",
        "owner": (owner.get_full_name() or owner.username) if owner else "",
        "ticket": ticket.subject if ticket else "",
    }
    fields = {f.key: f for f in CustomField.objects.filter(entity=record._meta.model_name)}

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("custom."):
            field = fields.get(name[7:])
            return kinds.display(field, record.custom.get(field.key)) if field else ""
        return values.get(name, "")

    return VARIABLE.sub(value, template)


def _least_busy(role: str, near: User | None) -> User | None:
    """The active user with ``role`` who has the fewest open tasks, in ``near``'s team when it has one."""
    users = User.objects.filter(role=role, is_active=True, is_service_account=False)
    if near is not None and near.team_id and users.filter(team_id=near.team_id).exists():
        users = users.filter(team_id=near.team_id)
    open_tasks = Count("activities", filter=Q(activities__kind="task", activities__done_at__isnull=True))
    return users.annotate(load=open_tasks).order_by("load", "id").first()


def create_task(action: dict[str, Any], record: Any, rule: AutomationRule) -> dict:
    from crm import services

    target = action.get("assignee", "owner")
    assignee = _owner(record) if target == "owner" else _least_busy(target, _owner(record))
    if assignee is None:
        raise ValidationError(_("There is nobody to give the task to."))
    days = int(action.get("days") or 0)
    with translation.override(assignee.language):
        subject = render(_pick(action, "subject", assignee.language), record).strip() or rule.name
    due = timezone.now() + timedelta(days=max(0, min(days, 365)))
    task = services.activity_log(
        actor=assignee,
        kind="task",
        subject=subject[:200],
        due_at=due,
        via=SYSTEM,
        **_links(record),
    )
    return note(gettext_noop("Task “%(task)s” for %(user)s."), task=task.subject, user=assignee)


def send_email(action: dict[str, Any], record: Any, rule: AutomationRule) -> dict:
    customer = _customer(record)
    if action.get("to") == "customer":
        address, language = customer.email, customer.language
        if not address:
            raise ValidationError(_("The customer has no e-mail address."))
    else:
        owner = _owner(record)
        if owner is None or not owner.email:
            raise ValidationError(_("The owner has no e-mail address."))
        address, language = owner.email, owner.language
    subject = render(_pick(action, "subject", language), record).replace("\n", " ")[:200] or rule.name
    body = render(_pick(action, "body", language), record)[:20000]
    # Sent once the run is stored (never for a run that rolls back).
    transaction.on_commit(
        lambda: send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [address]),
        robust=True,
    )
    return note(gettext_noop("E-mail “%(subject)s” to %(address)s."), subject=subject, address=address)


def set_field(action: dict[str, Any], record: Any, rule: AutomationRule) -> dict:
    from crm import services
    from crm.models import Customer, Deal

    name, value = str(action["field"]), action.get("value")
    actor = _author(rule)
    if name.startswith("custom."):
        services.custom_values_set(obj=record, actor=actor, changes={name[7:]: value}, via=SYSTEM)
    else:
        field = type(record)._meta.get_field(name)
        typed = None if value in (None, "") else field.to_python(value)
        if isinstance(record, Deal):
            services.deal_update(deal=record, actor=actor, data={name: typed}, version=None, via=SYSTEM)
        elif isinstance(record, Customer):
            services.customer_update(customer=record, actor=actor, data={name: typed}, via=SYSTEM)
    return note(
        gettext_noop("%(field)s set to “%(value)s”."), field=name.removeprefix("custom."), value=value
    )


def set_stage(action: dict[str, Any], record: Any, rule: AutomationRule) -> dict:
    from crm import services
    from crm.models import PipelineStage

    stage = PipelineStage.objects.get(pk=action["stage"])
    deal = getattr(record, "deal", None) if record._meta.model_name == "activity" else record
    if deal is None:
        raise ValidationError(_("The activity is not on a deal, so there is no deal to move."))
    services.deal_move_stage(
        deal=deal,
        stage=stage,
        actor=_author(rule),
        lost_reason=_("Closed by the rule “%(rule)s”.") % {"rule": rule.name},
        via=SYSTEM,
    )
    return note(gettext_noop("Moved to %(stage)s."), stage=stage.name)


def set_owner(action: dict[str, Any], record: Any, rule: AutomationRule) -> dict:
    from crm import services
    from crm.models import Customer, Deal, Ticket

    user = User.objects.get(pk=action["user"], is_active=True)
    actor = _author(rule)
    if isinstance(record, Deal):
        services.deal_update(deal=record, actor=actor, data={"owner": user}, version=None, via=SYSTEM)
    elif isinstance(record, Customer):
        services.customer_update(customer=record, actor=actor, data={"owner": user}, via=SYSTEM)
    elif isinstance(record, Ticket):
        services.ticket_assign(ticket=record, assignee=user, actor=actor, via=SYSTEM)
    else:
        raise ValidationError(_("An activity's owner cannot be changed."))
    return note(gettext_noop("Owner set to %(user)s."), user=user)


def assign_ticket(action: dict[str, Any], record: Any, rule: AutomationRule) -> dict:
    from crm import services

    user = User.objects.filter(pk=action.get("user") or 0, is_active=True).first()
    user = user or services.least_loaded_agent()
    if user is None:
        raise ValidationError(_("There is no active support agent to assign the ticket to."))
    services.ticket_assign(ticket=record, assignee=user, actor=_author(rule), via=SYSTEM)
    return note(gettext_noop("Assigned to %(user)s."), user=user)


def add_note(action: dict[str, Any], record: Any, rule: AutomationRule) -> dict:
    from crm import services

    actor = _author(rule)
    text = render(_pick(action, "text", actor.language), record).strip() or rule.name
    services.activity_log(
        actor=actor, kind="note", subject=text.splitlines()[0][:200], notes=text, via=SYSTEM, **_links(record)
    )
    return note(gettext_noop("Note added."))


def fire_webhook(action: dict[str, Any], record: Any, rule: AutomationRule) -> dict:
    from crm.models import WebhookSubscription
    from crm.webhooks.services import webhook_emit

    def data() -> dict[str, Any]:
        return {
            "rule": {"id": rule.pk, "name": rule.name},
            "record": {"type": record._meta.model_name, "id": record.pk},
        }

    webhook_emit(event=WebhookSubscription.Event.AUTOMATION_RULE_FIRED, data=data)
    return note(gettext_noop("Webhook event sent."))


HANDLERS = {
    "create_task": create_task,
    "send_email": send_email,
    "set_field": set_field,
    "set_stage": set_stage,
    "set_owner": set_owner,
    "assign_ticket": assign_ticket,
    "add_note": add_note,
    "fire_webhook": fire_webhook,
}
