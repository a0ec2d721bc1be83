"""Streamed CSV and XLSX exports of customers, deals, tickets and activities.

The querysets come from the access-scoped selectors with the list pages' own filters, and are read with
``iterator(chunk_size=2000)``: 100 000 rows never sit in memory at once. CSV is streamed row by row
(UTF-8 with BOM, so Excel shows Chinese text correctly). XLSX is written by openpyxl's write-only
workbook, which keeps rows in a temporary file, and that file is streamed out.

Each active custom field of the record type adds a column (headed with its label in the user's language):
numbers, amounts and dates as values (native cells in XLSX), the other types as a person reads them
(choices by their labels, yes/no, users by user name), so that the file imports back.

Text that a spreadsheet would run as a formula (starting with ``=``, ``+``, ``-``, ``@``, tab or carriage
return) gets a leading apostrophe in both formats (OWASP "CSV injection").
"""

import csv
import functools
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse, StreamingHttpResponse
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from crm.custom_fields import kinds
from crm.custom_fields import services as custom_fields
from crm.custom_fields.models import CustomField
from crm.models import Activity, Customer, Deal, Ticket

CHUNK_SIZE = 2000
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CSV_CONTENT_TYPE = "text/csv; charset=utf-8"
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def escape(value: str) -> str:
    """Text a spreadsheet would treat as a formula becomes plain text: "'=HYPERLINK(…)"."""
    return f"'{value}" if value.startswith(FORMULA_PREFIXES) else value


@dataclass(frozen=True)
class Column:
    """One exported column: its header, the value path read with ``values_list`` and how to show it
    (``text``; ``choice``: the choice's label; ``label``: a translated name such as a stage; ``time``:
    local time; or ``raw`` for numbers and dates)."""

    header: Promise
    path: str
    show: str = "text"


COLUMNS: dict[str, tuple[Column, ...]] = {
    "customers": (
        Column(_("ID"), "pk", "raw"),
        Column(_("Name"), "name"),
        Column(_("Kind"), "kind", "choice"),
        Column(_("E-mail"), "email"),
        Column(_("Phone"), "phone"),
        Column(_("Industry"), "industry"),
        Column(_("City"), "city"),
        Column(_("Segment"), "segment", "choice"),
        Column(_("Language"), "language", "choice"),
        Column(_("Source"), "source", "choice"),
        Column(_("Owner"), "owner__username"),
        Column(_("Status"), "status", "choice"),
        Column(_("Created"), "created_at", "time"),
        Column(_("Customer since"), "became_customer_at", "time"),
        Column(_("Churned"), "churned_at", "time"),
        Column(_("Churn reason"), "churn_reason"),
        Column(_("Campaign"), "campaign__name"),
    ),
    "deals": (
        Column(_("ID"), "pk", "raw"),
        Column(_("Title"), "title"),
        Column(_("Customer"), "customer__name"),
        Column(_("Customer e-mail"), "customer__email"),
        Column(_("Amount"), "amount", "raw"),
        Column(_("Kind"), "kind", "choice"),
        Column(_("Stage"), "stage__name", "label"),
        Column(_("Status"), "status", "choice"),
        Column(_("Probability %"), "probability", "raw"),
        Column(_("Source"), "source", "choice"),
        Column(_("Expected close date"), "expected_close_date", "raw"),
        Column(_("Owner"), "owner__username"),
        Column(_("Created"), "created_at", "time"),
        Column(_("Closed"), "closed_at", "time"),
        Column(_("Lost reason"), "lost_reason"),
        # The deal's own category; empty: its stage's (imports back the same way).
        Column(_("Forecast category"), "forecast_category", "choice"),
        Column(_("Campaign"), "campaign__name"),
    ),
    "tickets": (
        Column(_("ID"), "pk", "raw"),
        Column(_("Subject"), "subject"),
        Column(_("Customer"), "customer__name"),
        Column(_("Status"), "status", "choice"),
        Column(_("Priority"), "priority", "choice"),
        Column(_("Category"), "category", "choice"),
        Column(_("Channel"), "channel", "choice"),
        Column(_("Assignee"), "assignee__username"),
        Column(_("Created"), "created_at", "time"),
        Column(_("First response"), "first_response_at", "time"),
        Column(_("Solved"), "solved_at", "time"),
        Column(_("Closed"), "closed_at", "time"),
        Column(_("Reopened"), "reopen_count", "raw"),
    ),
    "activities": (
        Column(_("ID"), "pk", "raw"),
        Column(_("Kind"), "kind", "choice"),
        Column(_("Subject"), "subject"),
        Column(_("Customer"), "customer__name"),
        Column(_("Deal"), "deal__title"),
        Column(_("Ticket"), "ticket__subject"),
        Column(_("User"), "user__username"),
        Column(_("Created"), "created_at", "time"),
        Column(_("Due"), "due_at", "time"),
        Column(_("Done"), "done_at", "time"),
        Column(_("Notes"), "notes"),
    ),
}
MODELS = {"customers": Customer, "deals": Deal, "tickets": Ticket, "activities": Activity}
ENTITIES = {
    "customers": CustomField.Entity.CUSTOMER,
    "deals": CustomField.Entity.DEAL,
    "tickets": CustomField.Entity.TICKET,
    "activities": CustomField.Entity.ACTIVITY,
}
# Custom-field types exported as values (numbers and dates stay numbers and dates in XLSX).
RAW_KINDS = (
    CustomField.Kind.INTEGER,
    CustomField.Kind.DECIMAL,
    CustomField.Kind.MONEY,
    CustomField.Kind.DATE,
)


def _converter(model: type, column: Column) -> Callable[[Any], Any]:
    """How to turn one fetched value into what the file shows; labels are looked up once per export."""
    if column.show == "choice":
        labels = {value: str(label) for value, label in model._meta.get_field(column.path).flatchoices}
        return lambda value: labels.get(value, value)
    if column.show == "label":
        return functools.lru_cache(maxsize=256)(lambda value: gettext(value) if value else "")
    if column.show == "time":
        zone = timezone.get_current_timezone()
        return lambda value: value.astimezone(zone).replace(tzinfo=None, microsecond=0) if value else None
    if column.show == "raw":
        return lambda value: value
    return lambda value: value or ""


def _custom_converter(field: CustomField, user_names: dict[int, str]) -> Callable[[Any], Any]:
    """How one custom field's stored value is exported (None when the record has none)."""

    def convert(value: Any) -> Any:
        if kinds.is_empty(value):
            return None
        if field.kind in RAW_KINDS:
            try:
                return kinds.typed(field, value)
            except (ArithmeticError, ValueError, TypeError):  # a value stored before a change of type
                return str(value)
        if field.kind in (CustomField.Kind.TEXT, CustomField.Kind.LONG_TEXT):
            return str(value)
        return kinds.display(field, value, user_names=user_names)

    return convert


def export_rows(kind: str, queryset: QuerySet) -> Iterator[list[Any]]:
    """The header, then one row per record: plain values read in chunks (never all rows at once); the
    record's custom fields come last, read with the row (``custom``) rather than per record."""
    columns = COLUMNS[kind]
    converters = [_converter(MODELS[kind], column) for column in columns]
    fields = custom_fields.fields_of(ENTITIES[kind])
    user_names: dict[int, str] = {}
    if any(f.kind == CustomField.Kind.USER for f in fields):
        user_names = dict(User.objects.values_list("pk", "username"))
    custom = [(f.key, _custom_converter(f, user_names)) for f in fields]
    yield [str(column.header) for column in columns] + [f.label for f in fields]
    paths = [column.path for column in columns] + (["custom"] if fields else [])
    rows = queryset.values_list(*paths).iterator(chunk_size=CHUNK_SIZE)
    for values in rows:
        row = [convert(value) for convert, value in zip(converters, values[: len(columns)], strict=True)]
        if custom:
            stored = values[-1] or {}
            row += [convert(stored.get(key)) for key, convert in custom]
        yield row


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return escape(value)
    return str(value)


class _Echo:
    """A file-like object whose ``write`` hands back what it was given (Django's streaming CSV recipe)."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[list[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield "\ufeff"  # BOM: Excel then reads the file as UTF-8
    for row in rows:
        yield writer.writerow([_csv_value(value) for value in row])


def filename(kind: str, extension: str) -> str:
    return f"{kind}-{timezone.localdate():%Y-%m-%d}.{extension}"


def csv_response(rows: Iterable[list[Any]], name: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(csv_lines(rows), content_type=CSV_CONTENT_TYPE)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _xlsx_value(value: Any) -> Any:
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if isinstance(value, str):
        return escape(ILLEGAL_CHARACTERS_RE.sub("", value))
    if isinstance(value, Decimal | int | float | date | datetime) or value is None:
        return value
    return str(value)


def xlsx_file(rows: Iterable[list[Any]], *, title: str) -> Any:
    """A temporary file holding the workbook; memory stays flat however many rows there are."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(title=title[:31])
    for row in rows:
        sheet.append([_xlsx_value(value) for value in row])
    handle = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the response when it is sent)
    workbook.save(handle)
    handle.seek(0)
    return handle


def xlsx_response(rows: Iterable[list[Any]], name: str, *, title: str) -> FileResponse:
    return FileResponse(
        xlsx_file(rows, title=title), as_attachment=True, filename=name, content_type=XLSX_CONTENT_TYPE
    )


def export_response(kind: str, queryset: QuerySet, file_format: str) -> StreamingHttpResponse | FileResponse:
    """The export of ``queryset`` (already scoped and filtered by the caller) as a CSV or XLSX download."""
    rows = export_rows(kind, queryset)
    if file_format == "xlsx":
        return xlsx_response(rows, filename(kind, "xlsx"), title=str(MODELS[kind]._meta.verbose_name_plural))
    return csv_response(rows, filename(kind, "csv"))
