"""The public survey pages' rate limit per client, on django-ratelimit and the shared cache (Redis).

It fails open: when the cache is unreachable every request is allowed (a survey must not go down with
Redis), and it never raises. A malformed ``SURVEYS_RATE_LIMIT`` limits nothing and says so in the log.
"""

import hashlib
import logging

from django.conf import settings
from django.http import HttpRequest
from django_ratelimit.core import is_ratelimited
from redis.exceptions import RedisError

from accounts.security import client_address

logger = logging.getLogger(__name__)


def parse_rate(rate: str) -> tuple[int, int] | None:
    """``"60/m"`` → (60, 60): requests per window and the window in seconds (s, m, h); None if malformed."""
    count, _slash, unit = rate.strip().partition("/")
    window = {"s": 1, "m": 60, "h": 3600}.get(unit)
    if not count.isdigit() or window is None:
        return None
    return int(count), window


def client_key(request: HttpRequest) -> str:
    """The client's address, hashed (no raw IP addresses in cache keys)."""
    return hashlib.sha256(client_address(request).encode()).hexdigest()[:32]


def allow(request: HttpRequest, scope: str = "public") -> bool:
    """Count this request against the client's window; False once the window's limit is exceeded."""
    rate = settings.SURVEYS_RATE_LIMIT or ""
    if parse_rate(rate) is None:
        if rate:
            logger.warning("SURVEYS_RATE_LIMIT %r is not like '60/m': not limiting", rate)
        return True
    try:
        limited = is_ratelimited(
            request,
            group=f"surveys:{scope}",
            key=lambda _group, req: client_key(req),
            rate=rate,
            increment=True,
        )
    except (RedisError, OSError, ValueError):
        logger.warning("survey rate limiter: cache unavailable, allowing the request")
        return True
    return not limited
