"""Small formatting filters the templates share: how long ago, a share of a whole, a phone number."""

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import formats, timezone
from django.utils.translation import gettext as _

from crm import normalize

register = template.Library()

JUST_NOW = timedelta(minutes=1)


@register.filter
def ago(value: datetime | None) -> str:
    """ "just now" for the last minute (not "0 minutes ago"), otherwise "3 hours ago"; "" for no time."""
    if value is None:
        return ""
    if timedelta(0) <= timezone.now() - value < JUST_NOW:
        return _("just now")
    return naturaltime(value)


@register.filter
def share(part: object, whole: object) -> str:
    """``part`` as a percentage of ``whole`` with one decimal, in the locale's format: "< 0.1 %" for a
    share too small to show (1 in 500 is not "0 %"), "—" for an empty whole."""
    try:
        part_, whole_ = Decimal(str(part)), Decimal(str(whole))
    except (InvalidOperation, ValueError):
        return "—"
    if not whole_:
        return "—"
    percent = part_ * 100 / whole_
    if 0 < percent < Decimal("0.1"):
        return _("< %(smallest)s %%") % {"smallest": formats.number_format(Decimal("0.1"), 1)}
    return f"{formats.number_format(percent, 1)} %"


@register.filter
def phone(value: str | None) -> str:
    """A phone number in one international format, whichever way it was typed (``normalize``)."""
    return normalize.phone_display(value or "")


@register.filter
def phone_uri(value: str | None) -> str:
    """A ``tel:`` link target (E.164), or "" when the number cannot be read."""
    key = normalize.phone_key(value or "")
    return f"tel:{key}" if key else ""
