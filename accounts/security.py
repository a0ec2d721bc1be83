"""The security log: ``security_log`` writes one ``SecurityEvent``; helpers keep secrets out of it."""

import ipaddress
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import SecurityEvent, User
from accounts.text import storable_text

# Keys of ``detail`` that are never stored, whatever a caller passes.
_SECRET_KEYS = {"password", "password1", "password2", "token", "csrfmiddlewaretoken", "secret"}


def client_address(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or the header the reverse proxy sets (SURVEYS_CLIENT_IP_HEADER).

    Behind a proxy REMOTE_ADDR is the proxy for everyone. Of an X-Forwarded-For list only the last
    entry, the one our own proxy appended, can be trusted; the others are whatever the client sent.
    """
    header = settings.SURVEYS_CLIENT_IP_HEADER
    value = request.META.get(header, "") if header else ""
    value = value.rsplit(",", 1)[-1].strip()
    return value or request.META.get("REMOTE_ADDR", "")


def client_ip(request: HttpRequest) -> str | None:
    """The client's address as a valid IP (behind a proxy, from SURVEYS_CLIENT_IP_HEADER), else None."""
    value = client_address(request)
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def safe_path(path: str) -> str:
    """The path without query string, storable and cut to the column's length; public survey paths carry
    tokens (``/s/<token>/``, ``/s/unsubscribe/<token>/``) and are all logged as ``/s/…/``."""
    path = storable_text(path.split("?", 1)[0])
    if path.startswith("/s/"):
        return "/s/…/"
    return path[:300]


def security_log(
    *,
    kind: str,
    request: HttpRequest | None = None,
    user: User | None = None,
    username: str = "",
    **detail: Any,
) -> SecurityEvent:
    """Record one security event; the user, address and path come from ``request`` unless given."""
    if user is None and request is not None:
        request_user = getattr(request, "user", None)
        user = request_user if request_user is not None and request_user.is_authenticated else None
    clean = {key: value for key, value in detail.items() if key.lower() not in _SECRET_KEYS}
    return SecurityEvent.objects.create(
        at=timezone.now(),
        kind=kind,
        user=user,
        username=storable_text(username)[:150],
        ip=client_ip(request) if request is not None else None,
        path=safe_path(request.path) if request is not None else "",
        detail=clean,
    )
