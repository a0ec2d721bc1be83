"""Read-only traffic on a PostgreSQL streaming replica (``DATABASE_REPLICA_URL``).

What may read from the replica is decided per request, in one place:

- only GET and HEAD requests to the routes in ``settings.READ_REPLICA_ROUTES`` (the dashboard and KPI
  pages, their drill-downs and downloads, the list exports, the API's reads);
- never once the request has written nor for a few seconds after the user's last write
  (``READ_REPLICA_PIN_SECONDS``, at least the lag allowed plus how long a lag reading is trusted: kept in
  a cookie set with the write's answer, and per user in the cache for clients without cookies, such as
  API scripts), so a user always reads what they have just changed;
- never inside a transaction on the primary;
- never while the replica lags more than ``READ_REPLICA_MAX_LAG_SECONDS`` behind the primary, or cannot be
  reached: the lag is read with ``pg_last_xact_replay_timestamp()`` and kept for
  ``READ_REPLICA_LAG_CHECK_SECONDS`` per process.

Everything else (the session and the user, which are loaded before the view runs, Celery tasks, management
commands) reads from the primary. The request's own bookkeeping (sessions, API tokens, usage and security
events: ``READ_REPLICA_PRIMARY_MODELS``) is read from the primary too, and writing it does not pin the user:
nothing else the page reads depends on it.
"""

import logging
import re
import time
from collections.abc import Iterator
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache as memoize
from typing import Any, cast

from django.apps import apps
from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import Model
from django.http import FileResponse, HttpRequest, HttpResponse, StreamingHttpResponse
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

REPLICA = "replica"
PIN_COOKIE = "crm_primary"

# How far the replica's replay is behind, in seconds: 0 on a server that is not a replica (the tests' mirror)
# and on a replica that has replayed everything it received while its WAL receiver runs (its pid is visible to
# any role, its status only to pg_read_all_stats); otherwise the age of the
# last replayed transaction (which grows while the primary writes and replay falls behind).
LAG_SQL = """
    SELECT CASE
        WHEN NOT pg_is_in_recovery() THEN 0
        WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
             AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE pid IS NOT NULL) THEN 0
        ELSE coalesce(extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 'Infinity')
    END
"""


@dataclass
class Reads:
    """What this request may read from the replica: ``allowed`` by its route, unless ``pinned`` by a recent
    write of the user's or it ``wrote`` itself."""

    pinned: bool = False
    allowed: bool = False
    wrote: bool = False
    request: HttpRequest | None = None
    user_checked: Any = None

    @property
    def on_replica(self) -> bool:
        return self.allowed and not self.pinned and not self.wrote


# The table a data-changing statement writes to (what Django's compiler writes: INSERT INTO "t", UPDATE "t",
# DELETE FROM "t"; the bulk loads' COPY "t").
WRITTEN_TABLE = re.compile(
    r'^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY|MERGE\s+INTO)\s+"?(\w+)', re.IGNORECASE
)


@memoize
def _tables_of(labels: tuple[str, ...]) -> frozenset[str]:
    return frozenset(apps.get_model(label)._meta.db_table for label in labels)


def _bookkeeping_tables() -> frozenset[str]:
    return _tables_of(tuple(settings.READ_REPLICA_PRIMARY_MODELS))


# A statement that begins with a CTE writes where its data-changing clause says.
CTE_WRITE = re.compile(r'\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)', re.IGNORECASE)


def written_table(sql: Any, connection: Any) -> str | None:
    """The table ``sql`` changes, "" when it changes data somewhere unknown, None for a read."""
    if not isinstance(sql, str):
        try:
            sql = sql.as_string(connection)  # psycopg.sql.Composed
        except Exception:  # what cannot be read is taken for a write
            return ""
    found = WRITTEN_TABLE.match(sql)
    if found is None and sql.lstrip()[:4].upper() == "WITH":
        found = CTE_WRITE.search(sql)
    return found.group(1) if found else None


class WriteWatch:
    """Marks the request as having written when the primary runs a statement that changes data (not the
    request's bookkeeping). A locking read (SELECT … FOR UPDATE) or a get_or_create that finds its row is no
    write: only what reached the primary's tables counts. (A bulk load through ``cursor.copy()`` passes no
    execute wrapper; no GET does one, and any other method pins the user anyway.)"""

    def __init__(self, reads: "Reads") -> None:
        self.reads = reads
        self.bookkeeping = _bookkeeping_tables()

    def __call__(self, execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        if not self.reads.wrote:
            table = written_table(sql, getattr(context.get("connection"), "connection", None))
            if table is not None and table not in self.bookkeeping:
                self.reads.wrote = True
        return execute(sql, params, many, context)


UNREACHABLE_RETRY_SECONDS = 30


_reads: ContextVar[Reads | None] = ContextVar("crm_replica_reads", default=None)
# (checked at, fresh enough) per process.
_lag_checked: tuple[float, bool] | None = None


def _pin_key(user_id: Any) -> str:
    return f"replica-pin:{user_id}"


def _note_user(reads: Reads) -> None:
    """A user who wrote in the last seconds from another client (an API script keeps no cookie) is pinned
    too: the pin is also kept per user in the cache. Asked once per request, once the user is known (a
    token's user only inside the API view)."""
    user = getattr(reads.request, "user", None)
    user_id = user.pk if user is not None and user.is_authenticated else None
    if user_id is None or user_id == reads.user_checked:
        return
    reads.user_checked = user_id
    with suppress(RedisError, OSError):  # without the cache the cookie still pins the browser
        reads.pinned = reads.pinned or bool(cache.get(_pin_key(user_id)))


def _pin(reads: Reads, response: HttpResponse) -> None:
    response.set_cookie(
        PIN_COOKIE,
        "1",
        max_age=settings.READ_REPLICA_PIN_SECONDS,
        secure=settings.SESSION_COOKIE_SECURE,
        httponly=True,
        samesite="Lax",
    )
    user = getattr(reads.request, "user", None)
    if user is not None and user.is_authenticated:
        with suppress(RedisError, OSError):
            cache.set(_pin_key(user.pk), 1, settings.READ_REPLICA_PIN_SECONDS)


def on_replica() -> bool:
    """Whether this request's reads may go to the replica (caches shared between users must not keep what
    a lagging replica showed just after a change)."""
    reads = _reads.get()
    return reads is not None and reads.on_replica and enabled()


def settle_seconds() -> int:
    """How long after a commit a read from the replica may still miss it."""
    return int(settings.READ_REPLICA_MAX_LAG_SECONDS + settings.READ_REPLICA_LAG_CHECK_SECONDS)


def enabled() -> bool:
    return bool(settings.READ_REPLICA) and REPLICA in settings.DATABASES


def replica_lag() -> float | None:
    """Seconds the replica's replay is behind the primary; None when it cannot be asked."""
    try:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(LAG_SQL)
            return float(cursor.fetchone()[0])
    except DatabaseError:
        logger.warning("the read replica cannot be reached: reading from the primary", exc_info=True)
        connections[REPLICA].close()
        return None


def replica_fresh() -> bool:
    """Whether the replica is within the allowed lag (asked at most every few seconds per process)."""
    global _lag_checked
    now = time.monotonic()
    if _lag_checked is not None and now - _lag_checked[0] < settings.READ_REPLICA_LAG_CHECK_SECONDS:
        return _lag_checked[1]
    lag = replica_lag()
    fresh = lag is not None and lag <= settings.READ_REPLICA_MAX_LAG_SECONDS
    if not fresh and lag is not None:
        logger.warning("the read replica is %.1f s behind: reading from the primary", lag)
    # A replica that cannot be reached is asked again only after a while: each try may wait for the
    # connection's timeout.
    checked = time.monotonic() if lag is not None else time.monotonic() + UNREACHABLE_RETRY_SECONDS
    _lag_checked = (checked, fresh)
    return fresh


def forget_lag() -> None:
    """Ask the replica again on the next read (tests, and after a failover)."""
    global _lag_checked
    _lag_checked = None


class ReplicaRouter:
    """Reads go to the replica where the request allows it (see the module's docstring); writes, and
    migrations, to the primary. Whether the request wrote is seen on the primary's connection
    (:class:`WriteWatch`), not here: a read that locks or may create (get_or_create) asks for the write
    database too."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str | None:
        reads = _reads.get()
        if reads is None or not reads.on_replica or not enabled():
            return None
        if model._meta.label_lower in settings.READ_REPLICA_PRIMARY_MODELS:
            return None
        _note_user(reads)
        if reads.pinned:
            return None
        if connections[DEFAULT_DB_ALIAS].in_atomic_block or not replica_fresh():
            return None
        return REPLICA

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool:
        return True  # one database, two servers

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool:
        return db == DEFAULT_DB_ALIAS


def _route_allowed(request: HttpRequest) -> bool:
    if request.method not in ("GET", "HEAD") or request.resolver_match is None:
        return False
    match = request.resolver_match
    return match.namespace in settings.READ_REPLICA_ROUTES or match.view_name in settings.READ_REPLICA_ROUTES


class ReplicaReadsMiddleware:
    """Decides, per request, whether its reads may go to the replica, and pins a user who wrote to the
    primary for ``READ_REPLICA_PIN_SECONDS``."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not enabled():
            return self.get_response(request)
        reads = Reads(pinned=PIN_COOKIE in request.COOKIES, request=request)
        token = _reads.set(reads)
        try:
            with connections[DEFAULT_DB_ALIAS].execute_wrapper(WriteWatch(reads)):
                response = self.get_response(request)
        finally:
            _reads.reset(token)
        if reads.wrote or request.method not in ("GET", "HEAD", "OPTIONS"):
            _pin(reads, response)
        # A streamed answer (a CSV export) reads as it streams; a file answer has read everything already.
        if (
            isinstance(response, StreamingHttpResponse)
            and not isinstance(response, FileResponse)
            and not response.is_async
        ):
            response.streaming_content = _reading(reads, cast(Iterator[bytes], response.streaming_content))
        return response

    def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> None:
        reads = _reads.get()
        if reads is None or not _route_allowed(request):
            return
        # The session and the user come from the primary (a sign-in may not have reached the replica yet).
        user = getattr(request, "user", None)
        if user is not None:
            _ = user.pk  # evaluates the lazy user
        reads.allowed = True


def _reading(reads: Reads, content: Iterator[Any]) -> Iterator[Any]:
    """A streamed answer (a CSV export) reads its rows after the view has returned: with the same rules."""
    rows = iter(content)
    while True:
        token = _reads.set(reads)
        try:
            chunk = next(rows)
        except StopIteration:
            return
        finally:
            _reads.reset(token)
        yield chunk
