"""Text that PostgreSQL can store: without NUL characters and without lone surrogates.

PostgreSQL refuses NUL in text columns ("A string literal cannot contain NUL") and in ``jsonb``
("unsupported Unicode escape sequence" for ``\\u0000``), and UTF-8 has no encoding for a lone surrogate
(``UnicodeEncodeError`` in the driver). Form fields refuse NUL with a field message; text that no person
typed into a form (paths and query strings in the security log, cells of an imported file, values kept as
JSON) goes through ``storable`` instead. It lives in accounts, the app every other app builds on.
"""

import re
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

_SURROGATE = re.compile("[\ud800-\udfff]")


def storable_text(value: str) -> str:
    """``value`` without NUL characters, with each lone surrogate replaced by U+FFFD."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if _SURROGATE.search(value):
        # Through UTF-16: a pair written as two code points becomes its character, a lone one U+FFFD.
        value = value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return value


def storable(value: Any) -> Any:
    """``value`` with every string in it (dict keys included) made storable; other values unchanged."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable(key): storable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [storable(item) for item in value]
    return value


class StorableJSONEncoder(DjangoJSONEncoder):
    """The encoder of our JSON fields: Django's, on values made storable first."""

    def encode(self, o: Any) -> str:
        if isinstance(o, str):  # JSONEncoder.encode does not go through iterencode for a bare string
            o = storable_text(o)
        return super().encode(o)

    def iterencode(self, o: Any, _one_shot: bool = False):
        return super().iterencode(storable(o), _one_shot)


def is_record_id(text: str) -> bool:
    """Whether ``text`` can be a record's primary key: ASCII digits that fit a bigint (at most 18), so
    "٣", "１２" or 25 nines never reach the database."""
    return text.isascii() and text.isdigit() and len(text) <= 18
