"""Custom fields on the customer, deal and ticket lists: a filter per field, their part of the text search,
and the columns each user picks (kept in their session, per list).

Filters are named after the field's form name: ``cf_<key>`` for a choice or yes/no (a select, "any" by
default) or a user (a type-ahead people picker), ``cf_<key>_from`` and ``cf_<key>_to`` for a date or number
range. A value is read by ``kinds.clean``, so a filter accepts what a record's form accepts and says the same
when it does not.
"""

from typing import Any

from django import forms
from django.contrib.sessions.backends.base import SessionBase
from django.core.paginator import Page
from django.http import HttpRequest, QueryDict
from django.utils.translation import gettext

from accounts.dates import EARLIEST, LATEST
from accounts.models import User
from accounts.pickers import StaffChoiceField
from crm.custom_fields import kinds, query
from crm.custom_fields.models import CustomField
from crm.custom_fields.services import fields_of

Kind = CustomField.Kind
SELECTED = (Kind.CHOICE, Kind.MULTI_CHOICE, Kind.YES_NO, Kind.USER)
RANGED = (Kind.DATE, *query.NUMERIC)
# The column chooser's parameters (the chosen keys, and "the form was sent", so that none is a choice
# too); they are saved in the session and left out of the list's links.
COLUMN, COLUMNS_SENT = "col", "columns"
NOT_CARRIED = ("page", COLUMN, COLUMNS_SENT)
MAX_INPUT = 100

# (field, op, stored value): one condition of ``query.condition``.
Condition = tuple[CustomField, str, Any]


# Filters
# ---------------------------------------------------------------------------------------------------------


class RangeEndField(forms.CharField):
    """One end of a date or number range, read by ``kinds.clean`` into the stored form (None: open)."""

    def __init__(self, definition: CustomField, **kwargs: Any) -> None:
        self.definition = definition
        super().__init__(required=False, max_length=MAX_INPUT, **kwargs)

    def clean(self, value: Any) -> Any:
        text = super().clean(value)
        return kinds.clean(self.definition, text) if text else None


class UserFilterField(StaffChoiceField):
    """A user field's filter, picked by typing (``StaffPicker``): anyone on the staff (people who left too:
    their old records are found); nobody picked means any."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("custom-user-filter", required=False, **kwargs)


def _range_widget(definition: CustomField) -> forms.Widget:
    if definition.kind == Kind.DATE:
        attrs = {"type": "date", "min": EARLIEST.isoformat(), "max": LATEST.isoformat()}
        return forms.DateInput(attrs=attrs, format="%Y-%m-%d")
    mode = "numeric" if definition.kind == Kind.INTEGER else "decimal"
    return forms.TextInput(attrs={"inputmode": mode, "autocomplete": "off", "maxlength": MAX_INPUT})


def _range_labels(definition: CustomField) -> tuple[str, str]:
    names = {"field": definition.label}
    if definition.kind == Kind.DATE:
        return gettext("%(field)s from") % names, gettext("%(field)s until") % names
    return gettext("%(field)s at least") % names, gettext("%(field)s at most") % names


def _select(definition: CustomField) -> forms.Field:
    label = definition.label
    if definition.kind == Kind.USER:
        return UserFilterField(label=label)
    if definition.kind == Kind.YES_NO:
        options = [("yes", gettext("yes")), ("no", gettext("no"))]
    else:
        options = list(definition.choice_labels().items())
    return forms.ChoiceField(label=label, required=False, choices=[("", gettext("Any")), *options])


# A filter: its form field, and the custom field and comparison its value stands for.
Filter = tuple[forms.Field, CustomField, str]


def filters_of(definitions: list[CustomField]) -> dict[str, Filter]:
    """The lists' filters by name, in the fields' order (text fields have none: the search covers them).
    A name already taken (a key ``a_from`` beside the range of a field ``a``) is left to the first."""
    found: dict[str, Filter] = {}
    for definition in definitions:
        name = definition.form_name
        if definition.kind in SELECTED:
            found.setdefault(name, (_select(definition), definition, "eq"))
        elif definition.kind in RANGED:
            low, high = _range_labels(definition)
            for suffix, label, op in (("_from", low, "gte"), ("_to", high, "lte")):
                field = RangeEndField(definition, label=label, widget=_range_widget(definition))
                found.setdefault(f"{name}{suffix}", (field, definition, op))
    return found


def conditions(filters: dict[str, Filter], data: dict[str, Any]) -> list[Condition]:
    """The conditions a valid filter form's ``data`` asks for (an empty filter asks for nothing)."""
    found: list[Condition] = []
    for name, (_field, definition, op) in filters.items():
        value = data.get(name)
        if value in (None, ""):
            continue
        if definition.kind == Kind.USER:
            value = value.pk
        elif definition.kind == Kind.YES_NO:
            value = value == "yes"
        found.append((definition, op, value))
    return found


class CustomFilterForm(forms.Form):
    """A list's filter form that gains a filter per active custom field of ``custom_entity`` (or of the
    ``custom_fields`` given). Its ``cleaned_data`` carries ``custom``, the conditions for
    ``query.filtered``, and ``custom_search``, the text-like fields the search also looks in."""

    custom_entity = ""

    def __init__(self, *args: Any, custom_fields: list[CustomField] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if custom_fields is None:
            custom_fields = fields_of(self.custom_entity) if self.custom_entity else []
        self.custom_fields = custom_fields
        self.custom_filter_specs = {
            name: spec for name, spec in filters_of(custom_fields).items() if name not in self.fields
        }
        self.fields.update({name: field for name, (field, _d, _op) in self.custom_filter_specs.items()})

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        starts = {
            d.pk: data.get(name) for name, (_f, d, op) in self.custom_filter_specs.items() if op == "gte"
        }
        for name, (_field, definition, op) in self.custom_filter_specs.items():
            low, high = starts.get(definition.pk), data.get(name)
            if op == "lte" and _reversed(definition, low, high):
                self.add_error(name, gettext("This is before the start of the range."))
        data["custom"] = conditions(self.custom_filter_specs, data)
        data["custom_search"] = [f for f in self.custom_fields if f.kind in query.TEXTUAL]
        return data

    @property
    def custom_filters(self) -> list[forms.BoundField]:
        return [self[name] for name in self.custom_filter_specs]

    @property
    def custom_filters_open(self) -> bool:
        """Whether "More filters" starts open: one of them is set, or wrong."""
        return any(self.data.get(name) or self.errors.get(name) for name in self.custom_filter_specs)


def _reversed(definition: CustomField, low: Any, high: Any) -> bool:
    """Whether a range ends before it starts (an open end never does)."""
    if low is None or high is None:
        return False
    return kinds.typed(definition, low) > kinds.typed(definition, high)


# Columns
# ---------------------------------------------------------------------------------------------------------


def chosen_columns(
    *, session: SessionBase, params: QueryDict, entity: str, fields: list[CustomField]
) -> list[CustomField]:
    """The fields the user shows as columns of ``entity``'s list, in the fields' order: those ticked when
    the column chooser is sent (then remembered in the session), else those remembered."""
    key = f"list_columns:{entity}"
    if COLUMNS_SENT in params:
        known = {f.key for f in fields}
        wanted = [k for k in params.getlist(COLUMN) if k in known]
        if session.get(key) != wanted:
            session[key] = wanted
    else:
        wanted = session.get(key) or []
    return [f for f in fields if f.key in wanted]


def column_cells(*, records: list[Any], columns: list[CustomField]) -> None:
    """Give each record ``custom_cells``: (label, value as read, is a number) per column; the people a
    user field names are read in one query."""
    user_ids = {
        value
        for record in records
        for field in columns
        if field.kind == Kind.USER and isinstance(value := (record.custom or {}).get(field.key), int)
    }
    names = {u.pk: str(u) for u in User.objects.filter(pk__in=user_ids)} if user_ids else {}
    for record in records:
        custom = record.custom or {}
        record.custom_cells = [
            (
                field.label,
                kinds.display(field, custom.get(field.key), user_names=names),
                field.kind in query.NUMERIC,
            )
            for field in columns
        ]


def list_context(
    request: HttpRequest, *, entity: str, fields: list[CustomField], page: Page, tabs: tuple[str, ...] = ()
) -> dict[str, Any]:
    """What a list page adds for its custom fields: the columns shown (each with whether it is a number;
    their cells go on the page's records), the chooser's choices, and the query strings its links carry
    (``query`` without the page, ``unsorted_query`` without the sort either, ``tab_query`` without the
    ``tabs`` parameters, and ``query_items`` for the chooser's hidden inputs)."""
    columns = chosen_columns(session=request.session, params=request.GET, entity=entity, fields=fields)
    if columns:
        page.object_list = list(page.object_list)
        column_cells(records=page.object_list, columns=columns)
    carried = request.GET.copy()
    for name in NOT_CARRIED:
        carried.pop(name, None)
    return {
        "columns": [(field, field.kind in query.NUMERIC) for field in columns],
        "column_choices": [(field, field in columns) for field in fields],
        "query": carried.urlencode(),
        "unsorted_query": _without(carried, ("sort",)),
        "tab_query": _without(carried, tabs),
        "query_items": [(name, value) for name, values in carried.lists() for value in values],
    }


def _without(params: QueryDict, names: tuple[str, ...]) -> str:
    kept = params.copy()
    for name in names:
        kept.pop(name, None)
    return kept.urlencode()
