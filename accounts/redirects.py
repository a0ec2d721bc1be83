"""Where a form may send the user back to: only a path on this site, never another host or a URL name."""

from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme


def safe_local_path(request: HttpRequest, target: str | None) -> str | None:
    """``target`` if it is a path on this site, else None.

    A bare word would reach ``redirect()`` as a URL name (NoReverseMatch, a 500), ``//host`` and
    ``https://host`` would leave the site, and control characters cannot go into a Location header.
    """
    if not target or not target.startswith("/") or any(ord(c) < 32 or ord(c) == 127 for c in target):
        return None
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return None
    return target
