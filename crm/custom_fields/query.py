"""Filter, search and group records by their custom fields, in SQL.

Equality on a choice, a yes/no, a user or a multiple-choice option is jsonb containment (``custom @>
{"key": value}``), which the GIN index on ``custom`` answers; numbers and dates compare the key's text
cast to numeric or as ISO text.
"""

from collections.abc import Iterable
from typing import Any

from django.db.models import Case, DecimalField, Expression, Q, QuerySet, Value, When
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.db.models.lookups import IContains

from crm.custom_fields import kinds
from crm.custom_fields.models import CustomField

Kind = CustomField.Kind
NUMERIC = (Kind.INTEGER, Kind.DECIMAL, Kind.MONEY)
CONTAINED = (Kind.CHOICE, Kind.YES_NO, Kind.USER)
TEXTUAL = (Kind.TEXT, Kind.LONG_TEXT, Kind.URL, Kind.EMAIL)
NUMBER = r"^-?[0-9]{1,15}(\.[0-9]{1,8})?$"
OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "contains", "empty", "set")


def annotation_name(field: CustomField) -> str:
    return f"cf_{field.key}_value"


def text_of(field: CustomField) -> Expression:
    """``custom ->> key``: the field's value as text (NULL when the record has none). Built from the key
    itself, not a ``custom__<key>`` lookup path, which would split a key such as ``lot__no`` in two."""
    return KeyTextTransform(field.key, "custom")


def with_value(qs: QuerySet, field: CustomField) -> QuerySet:
    """``qs`` with the field's value as SQL can compare it (numeric for numbers, text else), as an alias
    (filtered on, not selected)."""
    expression = text_of(field)
    if field.kind in NUMERIC:
        # Only text that is a number is cast (a value stored before a type change, or written behind the
        # CRM's back, compares as empty rather than failing the whole query).
        number = DecimalField(max_digits=30, decimal_places=8)
        expression = Case(
            When(Q(**{f"{annotation_name(field)}_text__regex": NUMBER}), then=Cast(expression, number)),
            default=Value(None, output_field=number),
        )
        qs = qs.alias(**{f"{annotation_name(field)}_text": text_of(field)})
    return qs.alias(**{annotation_name(field): expression})


def condition(qs: QuerySet, field: CustomField, op: str, value: Any) -> QuerySet:
    """``qs`` narrowed to records whose ``field`` stands in ``op`` to ``value`` (a stored value, as
    ``kinds.clean`` makes it; ignored for "empty" and "set")."""
    has = Q(custom__has_key=field.key)
    if op == "empty":
        return qs.exclude(has)
    if op == "set":
        return qs.filter(has)
    if op in ("eq", "ne", "contains") and field.kind in (*CONTAINED, Kind.MULTI_CHOICE):
        wanted = [value] if field.kind == Kind.MULTI_CHOICE and not isinstance(value, list) else value
        contained = Q(custom__contains={field.key: wanted})
        return qs.exclude(contained) if op == "ne" else qs.filter(contained)
    qs = with_value(qs, field)
    name = annotation_name(field)
    typed = kinds.typed(field, value)
    if op == "contains":
        return qs.filter(**{f"{name}__icontains": str(value)})
    if op == "ne":
        return qs.exclude(**{name: typed if field.kind in NUMERIC else value})
    lookup = "exact" if op == "eq" else op
    comparable = typed if field.kind in NUMERIC else value
    return qs.filter(**{f"{name}__{lookup}": comparable})


def between(qs: QuerySet, field: CustomField, low: Any, high: Any) -> QuerySet:
    """A list filter's range on a number, money or date field (either end may be open)."""
    if low not in (None, ""):
        qs = condition(qs, field, "gte", low)
    if high not in (None, ""):
        qs = condition(qs, field, "lte", high)
    return qs


def filtered(qs: QuerySet, conditions: Iterable[tuple[CustomField, str, Any]]) -> QuerySet:
    """``qs`` narrowed by every (field, op, stored value) of a list's filters (``condition`` each)."""
    for field, op, value in conditions:
        qs = condition(qs, field, op, value)
    return qs


def search_q(fields: Iterable[CustomField], text: str) -> Q | None:
    """Records whose text-like custom fields contain ``text`` (case-insensitive); None when none of
    ``fields`` holds text, so that a search can leave the predicate out (and keep its indexes)."""
    q = None
    for field in fields:
        if field.kind in TEXTUAL:
            found = Q(IContains(text_of(field), text))
            q = found if q is None else q | found
    return q
