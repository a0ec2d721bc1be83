"""What each custom-field type accepts, stores and shows.

Stored values are JSON: text types as strings, integers as numbers, decimals and money as strings of
the exact decimal ("1250.50", so that no float rounding creeps in), dates as "YYYY-MM-DD", yes/no as
booleans, a single choice as its option key, a multiple choice as a sorted list of keys and a user as
the user's id. An empty value is not stored at all (the key is absent), so "is it filled in?" is
``custom ? key``.

``clean`` takes what a form, the API or a spreadsheet cell gives (a typed value or its text) and
returns the stored value or raises ``ValidationError`` with a message for the user.
"""

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator, URLValidator
from django.utils.dateparse import parse_date
from django.utils.formats import number_format
from django.utils.translation import gettext as _

from accounts.dates import EARLIEST, LATEST
from accounts.text import storable_text
from crm.custom_fields.models import CustomField

Kind = CustomField.Kind
TEXT_LIMITS = {Kind.TEXT: 200, Kind.LONG_TEXT: 5000, Kind.URL: 500, Kind.EMAIL: 254}
INTEGER_LIMIT = 10**15
MONEY_LIMIT = Decimal("999999999999.99")
TRUE_WORDS = {"1", "true", "yes", "y", "on", "是", "真", "x"}
FALSE_WORDS = {"0", "false", "no", "n", "off", "否", "假"}


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or (isinstance(value, str) and not value.strip())


def clean(field: CustomField, value: Any, *, user_ids: set[int] | None = None) -> Any:
    """The stored form of ``value`` for ``field`` (None when empty); ``user_ids`` limits a user field to
    the users who may be chosen (None: any active staff user, checked by the caller)."""
    if is_empty(value):
        return None
    cleaner = _CLEANERS[Kind(field.kind)]
    return cleaner(field, value, user_ids)


def _text(field: CustomField, value: Any, _users: Any) -> str:
    if not isinstance(value, str | int | float | Decimal):
        raise ValidationError(_("Enter text."), code="invalid")
    text = storable_text(str(value)).strip()
    limit = TEXT_LIMITS[Kind(field.kind)]
    if len(text) > limit:
        raise ValidationError(
            _("Keep it to %(limit)d characters (it has %(count)d).") % {"limit": limit, "count": len(text)},
            code="max_length",
        )
    if field.kind == Kind.URL:
        if "://" not in text:
            text = f"https://{text}"
        try:
            URLValidator(schemes=["http", "https"])(text)
        except ValidationError:
            raise ValidationError(
                _("Enter a web address such as https://example.com."), code="invalid"
            ) from None
    if field.kind == Kind.EMAIL:
        try:
            EmailValidator()(text)
        except ValidationError:
            raise ValidationError(
                _("Enter an e-mail address such as name@example.com."), code="invalid"
            ) from None
    return text


def _integer(field: CustomField, value: Any, _users: Any) -> int:
    if isinstance(value, bool):
        raise ValidationError(_("Enter a whole number."), code="invalid")
    try:
        number = Decimal(str(value).strip().replace(",", "").replace("\u00a0", "").replace(" ", ""))
    except (InvalidOperation, ValueError):
        raise ValidationError(_("Enter a whole number."), code="invalid") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise ValidationError(_("Enter a whole number."), code="invalid")
    if abs(number) >= INTEGER_LIMIT:
        raise ValidationError(_("This number is too large."), code="max_value")
    return int(number)


def _decimal(field: CustomField, value: Any, _users: Any) -> str:
    if isinstance(value, bool):
        raise ValidationError(_("Enter a number such as 12.5."), code="invalid")
    text = str(value).strip().replace("\u00a0", "").replace(" ", "")
    if isinstance(value, str) and text.count(",") and "." in text:
        text = text.replace(",", "")
    try:
        number = Decimal(text)
    except (InvalidOperation, ValueError):
        raise ValidationError(_("Enter a number such as 12.5."), code="invalid") from None
    if not number.is_finite():
        raise ValidationError(_("Enter a number such as 12.5."), code="invalid")
    if field.kind == Kind.MONEY:
        if number < 0:
            raise ValidationError(_("An amount cannot be negative."), code="min_value")
        if number > MONEY_LIMIT or number.as_tuple().exponent < -2:  # type: ignore[operator]
            raise ValidationError(_("Enter an amount such as 1250 or 1250.50."), code="invalid")
        return str(number.quantize(Decimal("0.01")))
    if abs(number) >= INTEGER_LIMIT or number.as_tuple().exponent < -6:  # type: ignore[operator]
        raise ValidationError(_("Enter a number with at most 6 decimal places."), code="invalid")
    return format(number.normalize(), "f") if number == number.to_integral_value() else str(number)


def _date(field: CustomField, value: Any, _users: Any) -> str:
    if isinstance(value, datetime):
        value = value.date()
    if not isinstance(value, date):
        try:
            value = parse_date(str(value).strip()[:10]) if len(str(value).strip()) <= 10 else None
        except ValueError:
            value = None
        if value is None:
            raise ValidationError(_("Enter a date as YYYY-MM-DD."), code="invalid")
    if not EARLIEST <= value <= LATEST:
        raise ValidationError(
            _("Enter a date between %(first)s and %(last)s.") % {"first": EARLIEST, "last": LATEST},
            code="out_of_range",
        )
    return value.isoformat()


def _yes_no(field: CustomField, value: Any, _users: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValidationError(_("Answer yes or no."), code="invalid")


def _option_key(field: CustomField, value: Any) -> str:
    """An option's key, or the key of the option labelled ``value`` in English or Chinese (as a
    spreadsheet has it)."""
    text = storable_text(str(value)).strip()
    for option in field.choices or []:
        if text == option["key"] or text.casefold() in (
            option.get("en", "").casefold(),
            option.get("zh", "").casefold(),
        ):
            return option["key"]
    choices = ", ".join(field.choice_labels().values())
    raise ValidationError(
        _("“%(value)s” is not one of the choices: %(choices)s.") % {"value": text[:50], "choices": choices},
        code="invalid_choice",
    )


def _choice(field: CustomField, value: Any, _users: Any) -> str:
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise ValidationError(_("Choose one option."), code="invalid_choice")
        value = value[0]
    return _option_key(field, value)


def _multi_choice(field: CustomField, value: Any, _users: Any) -> list[str] | None:
    if isinstance(value, str):
        value = value.replace("；", ";").replace("，", ",").replace(";", ",").split(",")
    if not isinstance(value, list | tuple | set):
        raise ValidationError(_("Choose one or more options."), code="invalid_choice")
    keys = {_option_key(field, item) for item in value if not is_empty(item)}
    order = [option["key"] for option in field.choices or []]
    return sorted(keys, key=order.index) or None


def _user(field: CustomField, value: Any, user_ids: set[int] | None) -> int:
    pk = getattr(value, "pk", value)
    if isinstance(pk, bool):
        raise ValidationError(_("Choose a user."), code="invalid_choice")
    try:
        pk = int(str(pk).strip())
    except ValueError:
        pk = None
    if pk is None or (user_ids is not None and pk not in user_ids):
        raise ValidationError(_("Choose one of the CRM's users."), code="invalid_choice")
    return pk


_CLEANERS = {
    Kind.TEXT: _text,
    Kind.LONG_TEXT: _text,
    Kind.URL: _text,
    Kind.EMAIL: _text,
    Kind.INTEGER: _integer,
    Kind.DECIMAL: _decimal,
    Kind.MONEY: _decimal,
    Kind.DATE: _date,
    Kind.YES_NO: _yes_no,
    Kind.CHOICE: _choice,
    Kind.MULTI_CHOICE: _multi_choice,
    Kind.USER: _user,
}


def display(field: CustomField, value: Any, *, user_names: dict[int, str] | None = None) -> str:
    """``value`` as a person reads it, in the page's language."""
    if is_empty(value):
        return ""
    kind = Kind(field.kind)
    if kind in (Kind.CHOICE, Kind.MULTI_CHOICE):
        labels = field.choice_labels()
        keys = value if isinstance(value, list) else [value]
        return ", ".join(labels.get(str(k), str(k)) for k in keys)
    if kind == Kind.YES_NO:
        return _("yes") if value else _("no")
    if kind == Kind.USER:
        return (user_names or {}).get(value, f"#{value}")
    if kind in (Kind.DECIMAL, Kind.MONEY, Kind.INTEGER):
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return str(value)
        places = 2 if kind == Kind.MONEY else max(0, -number.as_tuple().exponent)  # type: ignore[operator]
        return number_format(number, places, use_l10n=True, force_grouping=True)
    return str(value)


def typed(field: CustomField, value: Any) -> Any:
    """A stored value as Python (Decimal, date): what a form's initial value or a comparison needs."""
    if is_empty(value):
        return None
    kind = Kind(field.kind)
    if kind in (Kind.DECIMAL, Kind.MONEY):
        return Decimal(str(value))
    if kind == Kind.DATE:
        return date.fromisoformat(str(value))
    return value
