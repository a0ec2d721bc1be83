"""Where a webhook may go, and the POST itself: public http(s) addresses only (no private, loopback,
link-local or reserved ones, unless ``CRM_WEBHOOKS_ALLOW_PRIVATE`` is set for development), no redirects
followed, a short timeout."""

import http.client
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class Answer:
    status: int | None
    error: str
    duration_ms: int


def _addresses(host: str, port: int) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)})
    except (OSError, UnicodeError, ValueError):  # unknown, unencodable, or a NUL in the name
        return []


def check_url(url: str) -> tuple[str, int, str]:
    """(scheme, port, address to connect to) of an allowed target; ValidationError saying why not."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError({"url": _("Use an http or https URL.")})
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = _addresses(parts.hostname, port)
    if not addresses:
        raise ValidationError({"url": _("This host name cannot be resolved.")})
    if not settings.CRM_WEBHOOKS_ALLOW_PRIVATE:
        for address in addresses:
            if not ipaddress.ip_address(address.split("%")[0]).is_global:
                raise ValidationError(
                    {
                        "url": _("Webhooks go to public addresses only, not to %(address)s.")
                        % {"address": address}
                    }
                )
    return parts.scheme, port, addresses[0]


def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
    """POST ``body`` to ``url``; plain http connects to the address checked just now (a DNS answer that
    changes in between cannot point it elsewhere). Any answer other than 2xx is a failure."""
    started = time.monotonic()
    try:
        scheme, port, address = check_url(url)
    except ValidationError as exc:
        return Answer(None, " ".join(exc.messages)[:300], 0)
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if scheme == "https":
        # TLS checks the certificate against the host name, so the name is resolved again here.
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname or "", port, timeout=TIMEOUT_SECONDS
        )
    else:
        connection = http.client.HTTPConnection(address, port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("POST", path, body=body, headers={**headers, "host": parts.netloc})
        response = connection.getresponse()
        response.read(65536)
        status = response.status
        error = "" if 200 <= status < 300 else f"HTTP {status}"
    except (OSError, http.client.HTTPException) as exc:
        status, error = None, f"{type(exc).__name__}: {exc}"[:300]
    finally:
        connection.close()
    return Answer(status, error, int((time.monotonic() - started) * 1000))
