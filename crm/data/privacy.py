"""Personal data of one customer: everything held about them as JSON, and erasure on request.

Erasure anonymises in place: ids, amounts, dates and statuses stay, so every count, sum and KPI stays the
same; the name, contact details and free text about the person go, in the audit history too.
"""

from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import F, Q, QuerySet, Value
from django.db.models.functions import Replace
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import UsageEvent, User
from accounts.services import usage_record
from crm import customer_data
from crm.custom_fields.query import TEXTUAL
from crm.models import (
    Activity,
    AutomationRun,
    Customer,
    CustomerMerge,
    CustomField,
    Deal,
    Ticket,
    TicketMessage,
)
from crm.transactions import atomic_retrying

# Customer fields that identify the person; erased (blanked, or the name replaced).
PERSONAL_FIELDS = ("name", "email", "phone", "city", "industry")
MATCH_KEYS = ("email_key", "phone_key", "name_key")
# Never part of an export: secrets and internal match keys.
_NEVER_EXPORTED = {"token_hash", "reminder_token_hash", *MATCH_KEYS}


def erased_name(customer: Customer) -> str:
    """The name an erased customer is shown under."""
    return f"Erased customer #{customer.pk}"


def _row(obj: models.Model) -> dict[str, Any]:
    """One row's stored values (foreign keys as ids), without secrets."""
    return {
        field.attname: getattr(obj, field.attname)
        for field in obj._meta.concrete_fields
        if field.attname not in _NEVER_EXPORTED
    }


def _rows(queryset: QuerySet) -> list[dict[str, Any]]:
    return [_row(obj) for obj in queryset]


def _history(queryset: QuerySet) -> list[dict[str, Any]]:
    """Audit-history rows (django-simple-history) in the order they were written."""
    return [_row(record) for record in queryset.order_by("history_date", "history_id")]


def customer_personal_data(*, customer: Customer) -> dict[str, Any]:
    """Everything held about one customer, as JSON-ready data (dates as datetimes, amounts as Decimals)."""
    deals = Deal.objects.filter(customer=customer).order_by("created_at", "id")
    tickets = Ticket.objects.filter(customer=customer).order_by("created_at", "id")
    return {
        "exported_at": timezone.now(),
        "customer": _row(customer),
        "status_history": _rows(customer.status_changes.order_by("at", "id")),
        "deals": [
            {**_row(deal), "stage_changes": _rows(deal.stage_changes.order_by("at", "id"))} for deal in deals
        ],
        "tickets": [
            {
                **_row(ticket),
                "messages": _rows(ticket.messages.order_by("created_at", "id")),
                "status_history": _rows(ticket.status_changes.order_by("at", "id")),
            }
            for ticket in tickets
        ],
        "activities": _rows(Activity.objects.filter(customer=customer).order_by("created_at", "id")),
        **{
            section: _rows(rows)
            for source in customer_data.registered()
            for section, rows in source.export(customer).items()
        },
        "merges": _rows(
            CustomerMerge.objects.filter(Q(survivor=customer) | Q(merged=customer)).order_by("at")
        ),
        "audit_history": {
            "customer": _history(customer.history.all()),
            "deals": _history(Deal.history.filter(customer_id=customer.pk)),
            "tickets": _history(Ticket.history.filter(customer_id=customer.pk)),
        },
    }


def _replace_name(field: str, old: str, new: str) -> Replace:
    return Replace(F(field), Value(old), Value(new))


def _erase_one(customer: Customer) -> None:
    """Anonymise one customer row, its history and the free text about them (no new history rows)."""
    old_name, new_name = customer.name, erased_name(customer)
    blank = {field: "" for field in PERSONAL_FIELDS if field != "name"}
    custom = _custom_without_text(customer.custom)
    Customer.objects.filter(pk=customer.pk).update(
        name=new_name, **blank, **dict.fromkeys(MATCH_KEYS, ""), custom=custom, updated_at=timezone.now()
    )
    Customer.history.filter(id=customer.pk).update(name=new_name, **blank, custom=custom)
    _erase_from_run_log(customer, [old_name, customer.email], new_name)
    tickets = Ticket.objects.filter(customer=customer)
    TicketMessage.objects.filter(ticket__in=tickets).update(body="")
    Activity.objects.filter(customer=customer).update(notes="")
    for source in customer_data.registered():
        source.erase(customer)
    if old_name:
        # Merges write the other customer's name into the change reason, on either side.
        Customer.history.filter(history_change_reason__contains=old_name).update(
            history_change_reason=_replace_name("history_change_reason", old_name, new_name)
        )
        # Subjects and titles stay (they say what the record is about), without the person's name.
        tickets.update(subject=_replace_name("subject", old_name, new_name), description="")
        Ticket.history.filter(customer_id=customer.pk).update(
            subject=_replace_name("subject", old_name, new_name), description=""
        )
        Activity.objects.filter(customer=customer).update(
            subject=_replace_name("subject", old_name, new_name)
        )
        Deal.objects.filter(customer=customer).update(title=_replace_name("title", old_name, new_name))
        Deal.history.filter(customer_id=customer.pk).update(title=_replace_name("title", old_name, new_name))
    for record in CustomerMerge.objects.filter(Q(survivor=customer) | Q(merged=customer)):
        # The values kept or dropped in a merge may be this person's: keep which side won, not the values.
        record.chosen = {
            field: {"kept": choice.get("kept")} if field in PERSONAL_FIELDS else choice
            for field, choice in record.chosen.items()
        }
        if record.merged_id == customer.pk:
            record.merged_snapshot = {}
        record.save(update_fields=["chosen", "merged_snapshot"])


def _custom_without_text(values: dict[str, Any]) -> dict[str, Any]:
    """The customer's custom values without the free text (text, long text, e-mail, URL): they may name
    or reach the person. Choices, numbers, dates and yes/no stay, as the built-in ones do."""
    textual = set(
        CustomField.objects.filter(entity=CustomField.Entity.CUSTOMER, kind__in=TEXTUAL).values_list(
            "key", flat=True
        )
    )
    return {key: value for key, value in (values or {}).items() if key not in textual}


def _erase_from_run_log(customer: Customer, texts: list[str], replacement: str) -> None:
    """Automation runs on the customer and their records quote names and addresses in what they did
    ("Task “Call ACME” for …"): replace them in those runs' note parameters (never in the JSON's
    structure, and never in other customers' runs)."""
    texts = [text for text in texts if text]
    if not texts:
        return
    records = Q(object_type="customer", object_id=customer.pk)
    for object_type, model in (("deal", Deal), ("ticket", Ticket), ("activity", Activity)):
        records |= Q(
            object_type=object_type, object_id__in=model.objects.filter(customer=customer).values("pk")
        )
    for run in AutomationRun.objects.filter(records).only("pk", "outcome"):
        outcome = [
            {**entry, "params": {k: _scrubbed(v, texts, replacement) for k, v in entry["params"].items()}}
            if entry.get("params")
            else entry
            for entry in run.outcome or []
        ]
        if outcome != run.outcome:
            AutomationRun.objects.filter(pk=run.pk).update(outcome=outcome)


def _scrubbed(value: Any, texts: list[str], replacement: str) -> Any:
    if not isinstance(value, str):
        return value
    for text in sorted(texts, key=len, reverse=True):
        value = value.replace(text, replacement)
    return value


@atomic_retrying
def customer_erase_personal_data(*, customer: Customer, actor: User) -> Customer:
    """Erase one customer's personal data on request (managers only), with the duplicates merged into them.

    Ids, amounts, dates and statuses stay, so aggregates and KPIs do not change.
    """
    if not actor.is_manager:
        raise PermissionDenied(_("Only managers erase personal data."))
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    erased = [customer]
    pending = [customer.pk]
    while pending:  # the same person's duplicates, merged into this customer (at any depth)
        found = list(Customer.objects.filter(merged_into_id__in=pending))
        erased += found
        pending = [c.pk for c in found]
    for one in sorted(erased, key=lambda c: len(c.name), reverse=True):  # "ACME Ltd" before "ACME"
        _erase_one(one)
    usage_record(user=actor, verb=UsageEvent.Verb.UPDATE, obj=customer)
    customer.refresh_from_db()
    return customer
