"""Normalised match keys for duplicate detection: e-mail, phone (E.164) and company name."""

import re
import unicodedata

import phonenumbers
from django.conf import settings

# Legal-form suffixes dropped from company names before comparing them.
LEGAL_SUFFIXES = frozenset(
    {
        "ag",
        "gmbh",
        "mbh",
        "kg",
        "ohg",
        "ug",
        "se",
        "ltd",
        "limited",
        "llc",
        "llp",
        "inc",
        "incorporated",
        "corp",
        "corporation",
        "co",
        "company",
        "plc",
        "sa",
        "sas",
        "sarl",
        "srl",
        "spa",
        "bv",
        "nv",
        "oy",
        "ab",
        "as",
        "aps",
        "pty",
        "kk",
        "有限公司",
        "股份有限公司",
        "集团",
    }
)
_PUNCTUATION = re.compile(r"[^\w\s]", re.UNICODE)
_SPACES = re.compile(r"\s+")


def email_key(email: str) -> str:
    return email.strip().lower()


def phone_key(phone: str, region: str | None = None) -> str:
    """The phone number in E.164 form, or "" when it cannot be parsed as a possible number."""
    if not phone or not phone.strip():
        return ""
    try:
        parsed = phonenumbers.parse(phone, region or settings.CRM_PHONE_REGION)
    except phonenumbers.NumberParseException:
        return ""
    if not phonenumbers.is_possible_number(parsed):
        return ""
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def phone_display(phone: str, region: str | None = None) -> str:
    """The number in one consistent, international form ("+49 351 4695316"), whichever way it was typed
    ("0351/4695316", "0049 351…"); as typed when it cannot be read as a possible number."""
    if not phone or not phone.strip():
        return ""
    try:
        parsed = phonenumbers.parse(phone, region or settings.CRM_PHONE_REGION)
    except phonenumbers.NumberParseException:
        return phone
    if not phonenumbers.is_possible_number(parsed):
        return phone
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def phone_is_valid(phone: str, region: str | None = None) -> bool:
    """True when the number is a real, assigned-range number (stricter than a match key)."""
    try:
        parsed = phonenumbers.parse(phone, region or settings.CRM_PHONE_REGION)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(parsed)


def name_key(name: str) -> str:
    text = unicodedata.normalize("NFKC", name).casefold()
    for suffix in ("股份有限公司", "有限公司", "集团"):
        text = text.replace(suffix, " ")
    words = _SPACES.split(_PUNCTUATION.sub(" ", text).strip())
    while len(words) > 1 and words[-1] in LEGAL_SUFFIXES:
        words.pop()
    return " ".join(w for w in words if w)
