"""A small fixed-window rate limiter on the shared cache (Redis) for the public survey pages.

It fails open: when the cache is unreachable every request is allowed (a survey must not go down with
Redis), and it never raises.
"""

import hashlib
import logging
import time

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)


def parse_rate(rate: str) -> tuple[int, int] | None:
    """``"60/m"`` → (60, 60): requests per window and the window in seconds (s, m, h); None if malformed."""
    count, _slash, unit = rate.strip().partition("/")
    window = {"s": 1, "m": 60, "h": 3600}.get(unit)
    if not count.isdigit() or window is None:
        return None
    return int(count), window


def client_address(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or the header the reverse proxy sets (SURVEYS_CLIENT_IP_HEADER).

    Behind a proxy REMOTE_ADDR is the proxy for everyone. Of an X-Forwarded-For list only the last
    entry, the one our own proxy appended, can be trusted; the others are whatever the client sent.
    """
    header = settings.SURVEYS_CLIENT_IP_HEADER
    value = request.META.get(header, "") if header else ""
    value = value.rsplit(",", 1)[-1].strip()
    return value or request.META.get("REMOTE_ADDR", "")


def client_key(request: HttpRequest) -> str:
    """The client's address, hashed (no raw IP addresses in cache keys)."""
    return hashlib.sha256(client_address(request).encode()).hexdigest()[:32]


def allow(request: HttpRequest, scope: str = "public") -> bool:
    """Count this request against the client's window; False once the window's limit is exceeded."""
    parsed = parse_rate(settings.SURVEYS_RATE_LIMIT or "")
    if parsed is None:
        if settings.SURVEYS_RATE_LIMIT:
            logger.warning(
                "SURVEYS_RATE_LIMIT %r is not like '60/m': not limiting", settings.SURVEYS_RATE_LIMIT
            )
        return True
    limit, window = parsed
    key = f"surveys:rl:{scope}:{client_key(request)}:{int(time.time() // window)}"
    try:
        cache.add(key, 0, timeout=window + 1)
        count = cache.incr(key)
    except (RedisError, OSError, ValueError):
        logger.warning("survey rate limiter: cache unavailable, allowing the request")
        return True
    return count <= limit
