"""Translated text with values in it, put together in the language of the request that shows it.

``_("… %(n)s …") % {"n": n}`` at import time (a form's choices or help text) is translated once, in
the server's language: ``interpolate_lazy(gettext_noop("… %(n)s …"), {"n": n})`` waits until shown.
"""

from typing import Any

from django.utils.functional import lazy
from django.utils.translation import gettext, gettext_noop


def _interpolate(message: str, values: dict[str, Any]) -> str:
    return gettext(message) % values


interpolate_lazy = lazy(_interpolate, str)


# Django's own texts that its Simplified Chinese catalogue does not translate yet: ours carries them
# (the project's catalogue comes first).
DJANGO_TEXTS = (gettext_noop("- Select an option -"),)
