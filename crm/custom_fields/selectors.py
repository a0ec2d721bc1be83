"""Read custom fields: the definitions page's groups, and the values a record's page shows."""

from collections.abc import Iterable
from typing import Any

from django.db.models import Count, Q

from accounts.models import User
from crm.custom_fields import kinds
from crm.custom_fields.models import CustomField
from crm.custom_fields.services import entity_model, fields_of

Entity = CustomField.Entity


def field_groups() -> list[dict[str, Any]]:
    """Every field, archived ones too, grouped by record type (each type listed, empty or not); each
    field carries ``values_count``, how many records hold a value (one query per record type)."""
    fields = list(CustomField.objects.select_related("required_from_stage").order_by("entity", "order", "id"))
    groups = []
    for entity in Entity:
        group = [f for f in fields if f.entity == entity]
        counts = {}
        if group:
            counts = entity_model(entity)._default_manager.aggregate(
                **{f"f{f.pk}": Count("pk", filter=Q(custom__has_key=f.key)) for f in group}
            )
        for field in group:
            field.values_count = counts[f"f{field.pk}"]
        groups.append({"entity": entity, "label": entity.label, "fields": group})
    return groups


def custom_values_shown(*, entity: str, records: Iterable[Any]) -> None:
    """Give each record ``custom_shown``: the label, the value as read and a link (web addresses,
    e-mails) of each active field it holds a value for, in field order (one query for the fields, one
    for the names of the users chosen)."""
    records = list(records)
    for record in records:
        record.custom_shown = []
    if not any(record.custom for record in records):
        return
    fields = fields_of(entity)
    user_ids = {
        value
        for record in records
        for field in fields
        if field.kind == CustomField.Kind.USER
        and isinstance(value := (record.custom or {}).get(field.key), int)
    }
    names = (
        {u.pk: u.get_full_name() or u.username for u in User.objects.filter(pk__in=user_ids)}
        if user_ids
        else {}
    )
    for record in records:
        custom = record.custom or {}
        record.custom_shown = [
            {
                "label": field.label,
                "value": kinds.display(field, custom[field.key], user_names=names),
                "link": _link(field, custom[field.key]),
            }
            for field in fields
            if not kinds.is_empty(custom.get(field.key))
        ]


def _link(field: CustomField, value: Any) -> str:
    """Where a web address or e-mail value leads (only http(s) addresses, as ``kinds.clean`` stores)."""
    if field.kind == CustomField.Kind.URL and str(value).startswith(("https://", "http://")):
        return str(value)
    if field.kind == CustomField.Kind.EMAIL:
        return f"mailto:{value}"
    return ""
