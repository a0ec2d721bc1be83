"""Custom-field filters on the API's lists: the list pages' own filters (``crm.custom_fields.lists``), read
from query parameters of the same names, ``cf_<key>`` for a choice, multiple choice, yes/no or user field
and ``cf_<key>_from`` / ``cf_<key>_to`` for a date or number range. The OpenAPI document lists them per
field, as the fields are defined when it is read."""

from typing import Any

from django.http import HttpRequest
from django.utils.translation import gettext

from crm.api.common import ApiError, clean_payload
from crm.custom_fields.lists import Filter, filters_of
from crm.custom_fields.models import CustomField
from crm.custom_fields.services import fields_of

Kind = CustomField.Kind
PREFIX = "cf_"
# Marks a list operation (its ``openapi_extra``) with the record type whose filters it takes.
EXTENSION = "x-custom-filters"


def custom_filters(entity: str) -> dict[str, str]:
    """A list operation's ``openapi_extra``: the document lists ``entity``'s custom-field filters."""
    return {EXTENSION: entity}


def custom_filter_query(request: HttpRequest, entity: str) -> dict[str, Any]:
    """The ``cf_…`` parameters of the query string, for the list's filter form (which checks their values);
    a name that is no filter of ``entity``'s active fields is a 422 naming it."""
    names = [name for name in request.GET if name.startswith(PREFIX)]
    if not names:
        return {}
    known = filters_of(fields_of(entity))
    unknown = [name for name in names if name not in known]
    if unknown:
        fields = {name[:60]: [gettext("There is no such filter.")] for name in unknown}
        raise ApiError(422, "invalid", "Some fields are not valid.", fields)
    return clean_payload({name: request.GET[name] for name in names})


def document_custom_filters(schema: dict[str, Any]) -> None:
    """Give each list operation marked by ``custom_filters`` one query parameter per filter of its
    record type's active custom fields."""
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            entity = operation.pop(EXTENSION, None) if isinstance(operation, dict) else None
            if entity:
                specs = filters_of(fields_of(entity))
                operation.setdefault("parameters", []).extend(_parameter(n, s) for n, s in specs.items())


def _parameter(name: str, spec: Filter) -> dict[str, Any]:
    _field, definition, op = spec
    kind = Kind(definition.kind)
    label = definition.label_en
    if kind in (Kind.CHOICE, Kind.MULTI_CHOICE):
        keys = [choice["key"] for choice in definition.choices or []]
        schema: dict[str, Any] = {"type": "string", "enum": keys} if keys else {"type": "string"}
        what = "holding" if kind == Kind.MULTI_CHOICE else "with"
        description = f"{label}: the records {what} this option (its key)."
    elif kind == Kind.YES_NO:
        schema, description = {"type": "string", "enum": ["yes", "no"]}, f"{label}: yes or no."
    elif kind == Kind.USER:
        schema, description = {"type": "integer"}, f"{label}: the records naming this user (their id)."
    else:
        end = "from (inclusive)" if op == "gte" else "up to (inclusive)"
        if kind == Kind.DATE:
            schema = {"type": "string", "format": "date"}
        elif kind == Kind.INTEGER:
            schema = {"type": "integer"}
        else:
            schema = {"type": "number", "minimum": 0} if kind == Kind.MONEY else {"type": "number"}
        description = f"{label}: {end}; the other end may be left open."
    return {"in": "query", "name": name, "required": False, "schema": schema, "description": description}
