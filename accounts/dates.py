"""The one range of dates the CRM accepts, whatever the way in: forms, imports, the admin and services.

A date outside it is a typing mistake (0001-01-01, 0202-03-01, 9999-12-31). Worse than wrong, such a
value breaks every page that shows it: ``0001-01-01T00:30`` in a zone ahead of UTC is stored before year 1,
which Python cannot represent. It lives here, in the app every other app builds on, so that each app's
models, forms and the import can share it.
"""

from datetime import date, datetime

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

EARLIEST = date(1990, 1, 1)
LATEST = date(2100, 12, 31)


def in_range(value: date | datetime | None) -> bool:
    """Whether ``value`` lies in [EARLIEST, LATEST]; a datetime by the calendar day of its own zone (no
    conversion, which would overflow for year 1)."""
    if value is None:
        return True
    day = value.date() if isinstance(value, datetime) else value
    return EARLIEST <= day <= LATEST


def validate_date_in_range(value: date | datetime | None) -> None:
    """Model and form field validator: refuse a date outside [EARLIEST, LATEST]."""
    if not in_range(value):
        raise ValidationError(
            _("Enter a date between %(earliest)s and %(latest)s."),
            code="date_out_of_range",
            params={"earliest": EARLIEST.year, "latest": LATEST.year},
        )


class DateField(forms.DateField):
    """A form date field limited to the CRM's range (the browser's date picker is limited too)."""

    default_validators = [validate_date_in_range]

    def widget_attrs(self, widget: forms.Widget) -> dict:
        return {**super().widget_attrs(widget), "min": EARLIEST.isoformat(), "max": LATEST.isoformat()}


class DateTimeField(forms.DateTimeField):
    """A form date-and-time field limited to the CRM's range."""

    default_validators = [validate_date_in_range]

    def widget_attrs(self, widget: forms.Widget) -> dict:
        return {**super().widget_attrs(widget), "min": f"{EARLIEST}T00:00", "max": f"{LATEST}T23:59"}
