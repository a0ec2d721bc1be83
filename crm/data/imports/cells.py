"""Cell parsers: one function per kind of value (text, choice, e-mail, amount, percent, date, user,
stage), each turning a cell into a clean value or raising ``RowError`` with the reason.
"""

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone, translation
from django.utils.functional import Promise
from django.utils.translation import gettext as _

from accounts import dates
from accounts.models import User
from accounts.text import is_record_id
from crm import selectors
from crm.custom_fields import kinds
from crm.custom_fields.models import CustomField
from crm.models import Campaign, ImportJob, PipelineStage

MAX_AMOUNT = Decimal("999999999999.99")


class RowError(Exception):
    """One cell's value cannot be used; the message says why."""


# ---------------------------------------------------------------------------------------------------------


def normalize_header(text: str) -> str:
    """ "E-Mail Address " → "emailaddress"; Chinese headers keep their characters."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"[\W_]+", "", text)


@dataclass(frozen=True)
class ImportField:
    name: str
    label: Promise
    convert: Callable[[str, "Context"], Any]
    required: bool = False
    synonyms: tuple[str, ...] = ()
    example: str = ""
    help: Promise | str = ""
    # The custom field this column fills (its name is ``custom.<key>``); None for the built-in fields.
    custom: CustomField | None = None


@dataclass
class Context:
    """What cleaning a row needs to know: who imports, the date order, and lookups built once."""

    actor: User
    kind: str
    date_order: str
    now: datetime = field(default_factory=timezone.now)
    _users: dict[str, User] | None = None
    _stages: dict[str, PipelineStage] | None = None
    _campaigns: dict[str, Campaign] | None = None

    @property
    def users(self) -> dict[str, User]:
        if self._users is None:
            self._users = {}
            for user in User.objects.filter(is_active=True, is_service_account=False).order_by("-id"):
                for key in (user.username, user.email, user.get_full_name()):
                    if key:
                        self._users[key.strip().casefold()] = user
        return self._users

    @property
    def campaigns(self) -> dict[str, Campaign]:
        """Every campaign by its name, case-folded (the campaign column, ``imports.campaigns``)."""
        if self._campaigns is None:
            self._campaigns = {c.name.strip().casefold(): c for c in Campaign.objects.all()}
        return self._campaigns

    @property
    def stages(self) -> dict[str, PipelineStage]:
        if self._stages is None:
            self._stages = {}
            for stage in selectors.stage_list():
                for language in _languages():
                    with translation.override(language):
                        self._stages[normalize_header(str(stage))] = stage
                self._stages[normalize_header(stage.name)] = stage
        return self._stages


def _languages() -> list[str]:
    return [code for code, _name in settings.LANGUAGES]


def _text(max_length: int) -> Callable[[str, Context], str]:
    def convert(value: str, ctx: Context) -> str:
        if len(value) > max_length:
            raise RowError(_("is longer than %(n)s characters") % {"n": max_length})
        return value

    return convert


# Words people write for choice values, besides the values and their labels in every language.
CHOICE_SYNONYMS = {
    "company": ("business", "organisation", "organization", "firma", "公司", "企业", "单位"),
    "person": ("individual", "private", "privat", "个人"),
    "lead": ("prospect", "线索", "潜在"),
    "active": ("customer", "client", "客户", "活跃", "正式客户"),
    "churned": ("lost", "former", "inactive", "流失", "已流失"),
    "en": ("english", "英文", "英语"),
    "zh-hans": ("zh", "cn", "chinese", "中文", "简体中文", "汉语"),
}


def _choice(
    choices: Sequence[tuple[str, Any]], *, extra: dict[str, tuple[str, ...]] | None = None
) -> Callable:

    lookup: dict[str, str] = {}
    built = False

    def convert(value: str, ctx: Context) -> str:
        nonlocal built
        if not built:
            for key, label in choices:
                lookup[normalize_header(key)] = key
                for language in _languages():
                    with translation.override(language):
                        lookup.setdefault(normalize_header(str(label)), key)
                for word in (extra or CHOICE_SYNONYMS).get(key, ()):
                    lookup.setdefault(normalize_header(word), key)
            built = True
        try:
            return lookup[normalize_header(value)]
        except KeyError:
            allowed = ", ".join(str(label) for _key, label in choices)
            raise RowError(
                _("“%(value)s” is not one of: %(allowed)s") % {"value": value, "allowed": allowed}
            ) from None

    return convert


def _email(value: str, ctx: Context) -> str:
    if len(value) > 254:
        raise RowError(_("is longer than %(n)s characters") % {"n": 254})
    return value


def _amount(value: str, ctx: Context) -> Decimal:
    """1250 · 1,250.50 · 1.250,50 · € 1 250 · 1250 EUR."""
    text = re.sub(r"[^\d,.\-]", "", value)
    if "," in text and "." in text:
        decimal_mark = "," if text.rfind(",") > text.rfind(".") else "."
        text = text.replace("." if decimal_mark == "," else ",", "").replace(",", ".")
    elif "," in text:
        head, _sep, tail = text.rpartition(",")
        text = f"{head.replace(',', '')}.{tail}" if len(tail) in (1, 2) else text.replace(",", "")
    try:
        amount = Decimal(text).quantize(Decimal("0.01"))
    except InvalidOperation:
        raise RowError(_("“%(value)s” is not an amount (e.g. 1250 or 1250.50)") % {"value": value}) from None
    if amount < 0:
        raise RowError(_("must not be negative"))
    if amount > MAX_AMOUNT:
        raise RowError(_("is too large"))
    return amount


def _percent(value: str, ctx: Context) -> int:
    try:
        number = Decimal(value.replace("%", "").replace(",", ".").strip())
    except InvalidOperation:
        raise RowError(_("“%(value)s” is not a percentage from 0 to 100") % {"value": value}) from None
    # NaN and infinities parse as Decimals; comparing a NaN raises, so they are refused first.
    if not number.is_finite() or not (0 <= number <= 100) or number != number.to_integral_value():
        raise RowError(_("“%(value)s” is not a percentage from 0 to 100") % {"value": value})
    return int(number)


_ISO_DATE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[ T][\d:.]+)?$")
_CJK_DATE = re.compile(r"^(\d{4})年(\d{1,2})月(\d{1,2})日?$")
_DOTTED_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{2}|\d{4})$")
_SLASHED_DATE = re.compile(r"^(\d{1,2})[/-](\d{1,2})[/-](\d{2}|\d{4})$")


def parse_date(value: str, date_order: str) -> date:
    """2026-03-01 and 2026年3月1日 (year first), 01.03.2026 (always day first), 1/3/2026 and 1-3-26 in the
    job's date order (day or month first); a two-digit year is 20xx."""
    text = value.strip()
    if match := _ISO_DATE.match(text) or _CJK_DATE.match(text):
        year, month, day = (int(g) for g in match.groups())
        order = _("year-month-day")
    elif match := _DOTTED_DATE.match(text):
        day, month, year = (int(g) for g in match.groups())
        order = _("day.month.year")
    elif match := _SLASHED_DATE.match(text):
        first, second, year = (int(g) for g in match.groups())
        if date_order == ImportJob.DateOrder.MDY:
            month, day, order = first, second, _("month/day/year")
        else:
            day, month, order = first, second, _("day/month/year")
    else:
        raise RowError(
            _("“%(value)s” is not a date; write it like 2026-03-01, 01.03.2026 or 1/3/2026")
            % {"value": value}
        )
    if year < 100:
        year += 2000
    try:
        result = date(year, month, day)
    except ValueError:
        raise RowError(
            _("“%(value)s” is not a valid date (read as %(order)s)") % {"value": value, "order": order}
        ) from None
    if not dates.in_range(result):
        raise RowError(
            _("“%(value)s” is outside %(earliest)s–%(latest)s")
            % {"value": value, "earliest": dates.EARLIEST.year, "latest": dates.LATEST.year}
        )
    return result


def _date(value: str, ctx: Context) -> date:
    return parse_date(value, ctx.date_order)


def _past_day(value: str, ctx: Context) -> datetime:
    """A date that has happened, as the start of that day in the reporting time zone."""
    day = parse_date(value, ctx.date_order)
    if day > timezone.localdate(ctx.now):
        raise RowError(_("“%(value)s” lies in the future") % {"value": value})
    return timezone.make_aware(datetime.combine(day, time()))


def _user(*roles: str) -> Callable[[str, Context], User]:
    def convert(value: str, ctx: Context) -> User:
        user = ctx.users.get(value.strip().casefold())
        if user is None or user.role not in roles:
            raise RowError(
                _("no active colleague with the user name or e-mail “%(value)s”") % {"value": value}
            )
        return user

    return convert


def _id(value: str, ctx: Context) -> int:
    if not is_record_id(value):
        raise RowError(_("“%(value)s” is not a record number") % {"value": value})
    return int(value)


def _customer_ref(value: str, ctx: Context) -> str:
    if len(value) > 254:
        raise RowError(_("is longer than %(n)s characters") % {"n": 254})
    return value


def _stage(value: str, ctx: Context) -> PipelineStage:
    stage = ctx.stages.get(normalize_header(value))
    if stage is None:
        names = ", ".join(str(s) for s in dict.fromkeys(ctx.stages.values()))
        raise RowError(
            _("“%(value)s” is not a stage of the pipeline: %(names)s") % {"value": value, "names": names}
        )
    return stage


def _custom(field: CustomField) -> Callable[[str, Context], Any]:
    """A custom field's cell as ``kinds.clean`` stores it; dates in the job's date order, amounts as
    people write them (1.250,50 · € 1 250), a user by user name, e-mail or full name, as the built-in
    fields read them."""
    kind = CustomField.Kind(field.kind)

    def convert(value: str, ctx: Context) -> Any:
        typed: Any = value
        if kind == CustomField.Kind.DATE:
            typed = parse_date(value, ctx.date_order)
        elif kind == CustomField.Kind.MONEY:
            typed = _amount(value, ctx)
        elif kind == CustomField.Kind.USER:
            user = ctx.users.get(value.strip().casefold())
            if user is None:
                raise RowError(
                    _("no active colleague with the user name or e-mail “%(value)s”") % {"value": value}
                )
            typed = user.pk
        try:
            return kinds.clean(field, typed)
        except ValidationError as exc:
            raise RowError(" ".join(exc.messages)) from None

    return convert
