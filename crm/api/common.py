"""What every API endpoint shares: the one error shape, keyset (cursor) pagination, form validation with
field-level messages, ``Idempotency-Key`` replays and the per-token rate limit.

Errors always read ``{"error": {"code": …, "message": …, "fields": {field: [messages]}}}``.
"""

import base64
import binascii
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Schema
from ninja.throttling import BaseThrottle

from accounts.models import UsageEvent
from accounts.text import storable_text
from crm import services

logger = logging.getLogger(__name__)

VIA = UsageEvent.Via.API
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
IDEMPOTENCY_SECONDS = 24 * 3600
# Longer than any request may run (gunicorn kills a worker after 30 s).
IN_PROGRESS_SECONDS = 120


class ApiError(Exception):
    """An answer other than success: its status, a stable code, a sentence and field messages."""

    def __init__(
        self, status: int, code: str, message: str, fields: dict[str, list[str]] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields, self.extra = status, code, message, fields, extra


def error_response(
    status: int, code: str, message: str, fields: dict[str, list[str]] | None = None, **extra: Any
) -> JsonResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    body.update(extra)
    return JsonResponse({"error": body}, status=status, json_dumps_params={"ensure_ascii": False})


class ErrorBody(Schema):
    code: str
    message: str
    fields: dict[str, list[str]] | None = None


class ErrorOut(Schema):
    error: ErrorBody


def not_found() -> ApiError:
    return ApiError(404, "not_found", "No such record, or not one you may see.")


def get_visible(qs: QuerySet, pk: int) -> Any:
    """The record ``pk`` of an access-scoped queryset; one the user may not see is a 404, as in the UI."""
    obj = qs.filter(pk=pk).first()
    if obj is None:
        raise not_found()
    return obj


def clean_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """JSON values as a form reads them: text stripped of NUL and lone surrogates, numbers as text."""

    def one(value: Any) -> Any:
        if value is None:
            return ""
        if isinstance(value, str):
            return storable_text(value)
        if isinstance(value, bool):
            return "on" if value else ""
        if isinstance(value, (int, float, Decimal, date, datetime)):
            return str(value)
        return value

    return {key: one(value) for key, value in payload.items()}


def validated(form: forms.Form) -> dict[str, Any]:
    """The form's cleaned data, or a 422 naming each field's problem in the user's language."""
    if not form.is_valid():
        fields = {name: [str(message) for message in messages] for name, messages in form.errors.items()}
        raise ApiError(422, "invalid", "Some fields are not valid.", fields)
    return form.cleaned_data


CUSTOM_OUT = (
    "The record's custom fields: key → stored value (text, a number, an amount or decimal as a string such "
    "as “1250.50”, a date as “YYYY-MM-DD”, true/false, an option's key, a list of option keys, a "
    "user's id); an empty field has no key."
)
CUSTOM_IN = (
    "Custom field values by key, as ``custom`` reads them (an option may also be given by its label); "
    "only the keys sent change, null clears one. Problems come back as 422 under ``custom.<key>``."
)


def custom_changes(payload: Schema) -> dict[str, Any]:
    """``{"custom": …}`` when the body sent custom values, else nothing (the record's stay)."""
    custom = getattr(payload, "custom", None)
    return {"custom": custom} if custom is not None else {}


@functools.cache
def builtin_form[FormClass: type[forms.Form]](form_class: FormClass) -> FormClass:
    """A record's page form without the fields it gains per custom field (``cf_<key>``): the API reads the
    built-in fields with it and hands ``custom`` to the service, which checks it (a problem comes back at
    ``custom.<key>``, and a value not sent is never read as emptied)."""
    return type(form_class.__name__, (form_class,), {"custom_entity": "", "__module__": __name__})


def validation_fields(exc: ValidationError) -> dict[str, list[str]]:
    if hasattr(exc, "error_dict"):
        return {name: [str(m) for e in errors for m in e.messages] for name, errors in exc.error_dict.items()}
    return {"__all__": [str(m) for m in exc.messages]}


# Keyset pagination ---------------------------------------------------------------------------------------


class Page(Schema):
    next: str | None = None
    results: list[Any]


def _encode(values: list[Any]) -> str:
    raw = json.dumps([v.isoformat() if isinstance(v, (date, datetime)) else str(v) for v in values])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str, size: int) -> list[str]:
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        values = None
    if not isinstance(values, list) or len(values) != size or not all(isinstance(v, str) for v in values):
        raise bad_cursor()
    return values


def bad_cursor() -> ApiError:
    return ApiError(422, "invalid", "The cursor is not valid.", {"cursor": ["Use the `next` of a page."]})


def paginate(qs: QuerySet, *, order: str, cursor: str | None, limit: int | None) -> dict[str, Any]:
    """One page of ``qs`` ordered by ``order`` (a non-null field, ``-`` for descending) then id, after
    ``cursor``: a keyset page, so that page 1 000 costs what page 1 does and rows added meanwhile
    neither repeat nor go missing."""
    field = order.lstrip("-")
    descending = order.startswith("-")
    size = min(max(limit or PAGE_SIZE, 1), MAX_PAGE_SIZE)
    qs = qs.order_by(f"-{field}" if descending else field, "-pk" if descending else "pk")
    if cursor:
        value, pk = _decode(cursor, 2)
        model_field = qs.model._meta.get_field(field)
        try:
            value, pk = model_field.to_python(value), int(pk)
        except (ValidationError, ValueError, TypeError):
            raise bad_cursor() from None
        if value is None or not 0 < pk < 2**63:
            raise bad_cursor()
        op = "lt" if descending else "gt"
        qs = qs.filter(Q(**{f"{field}__{op}": value}) | Q(**{field: value, f"pk__{op}": pk}))
    rows = list(qs[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    last = rows[-1] if rows else None
    return {
        "next": _encode([getattr(last, field), last.pk]) if more and last is not None else None,
        "results": rows,
    }


# Idempotency ---------------------------------------------------------------------------------------------


class IdempotencyMiddleware:
    """``Idempotency-Key`` on an API POST: a replay with the same key (per token) within 24 h gets the first
    answer again and changes nothing; the same key with another body is refused (422), and one still
    running answers 409 (for ``IN_PROGRESS_SECONDS`` at most: a request whose process died does not block
    its key for a day). Transient answers are not kept, so that a retry can still succeed: 5xx, and any
    that says when to retry (``Retry-After``: the rate limit, a write that collided)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        key = request.headers.get("Idempotency-Key", "")
        if request.method != "POST" or not key or not request.path.startswith("/api/"):
            return self.get_response(request)
        who = hashlib.sha256(request.headers.get("Authorization", "").encode("utf-8", "replace")).hexdigest()
        what = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
        cache_key = f"api-idem:{who}:{what}"
        digest = hashlib.sha256(request.path.encode("utf-8", "replace") + b"\0" + request.body).hexdigest()
        stored = cache.get(cache_key)
        if stored is None and cache.add(cache_key, {"body": digest}, IN_PROGRESS_SECONDS):
            response = self.get_response(request)
            if response.status_code < 500 and not response.has_header("Retry-After"):
                kept = {"body": digest, "status": response.status_code, "content": response.content}
                cache.set(cache_key, kept, IDEMPOTENCY_SECONDS)
            else:
                cache.delete(cache_key)
            return response
        stored = stored or cache.get(cache_key) or {}
        if stored.get("body") != digest:
            return error_response(
                422, "idempotency_key_reused", "This Idempotency-Key was used with another request."
            )
        if "content" not in stored:
            return error_response(409, "in_progress", "A request with this Idempotency-Key is still running.")
        response = HttpResponse(stored["content"], status=stored["status"], content_type="application/json")
        response["Idempotent-Replayed"] = "true"
        return response


# Rate limit ----------------------------------------------------------------------------------------------


UNIT_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}


@functools.cache
def parse_rate(rate: str) -> tuple[int, int]:
    """``"600/min"`` → (600, 60); anything else → (0, 0), no limit (and a warning in the log)."""
    count, _, unit = rate.partition("/")
    if count.strip().isdigit() and unit.strip() in UNIT_SECONDS:
        return int(count), UNIT_SECONDS[unit.strip()]
    logger.warning("CRM_API_RATE %r is not <n>/<s|min|h|d>: the API is not rate limited", rate)
    return 0, 0


class TokenRateThrottle(BaseThrottle):
    """Requests per token (``CRM_API_RATE``, e.g. ``600/min``) in fixed windows, counted atomically in Redis
    (INCR), so that concurrent requests in many processes cannot slip past the limit; over it, 429 with
    ``Retry-After`` (the seconds to the next window). While the cache is down, requests are allowed."""

    def __init__(self) -> None:
        self._wait = threading.local()

    def allow_request(self, request: HttpRequest) -> bool:
        token = getattr(request, "auth", None)
        limit, seconds = parse_rate(settings.CRM_API_RATE)
        if token is None or not limit:
            return True
        now = time.time()
        window = int(now // seconds)
        key = f"api-rate:{token.key_hash[:24]}:{seconds}:{window}"  # per token, never reused
        try:
            cache.add(key, 0, seconds + 1)
            count = cache.incr(key)
        except Exception:  # the cache is down: the API stays up
            logger.warning("API rate limit not counted", exc_info=True)
            return True
        self._wait.seconds = (window + 1) * seconds - now
        return count <= limit

    def wait(self) -> float | None:
        return getattr(self._wait, "seconds", None)


def form_defaults(form_class: type[forms.Form]) -> dict[str, Any]:
    """The defaults a new record gets on its page (each field's initial value), for fields not sent."""
    return {
        name: field.initial for name, field in form_class.base_fields.items() if field.initial is not None
    }


# Optimistic locking ----------------------------------------------------------------------------------


class ConflictOut(Schema):
    class Body(Schema):
        code: str
        message: str
        changes: dict[str, list[str | None]]
        changed_by: list[str]
        current_version: int

    error: Body


class CustomConflictOut(Schema):
    class Body(Schema):
        code: str
        message: str
        changes: dict[str, list[Any]] = Field(
            description="``custom.<key>`` → [the value you read, the value now], as ``custom`` reads them."
        )
        changed_by: list[str]

    error: Body


def client_version(payload_version: int | None, if_match: str | None) -> int | None:
    """The version the client read: the body's ``version``, else the ``If-Match`` ETag (``"3"``)."""
    if payload_version is not None:
        return payload_version
    tag = (if_match or "").strip().removeprefix("W/").strip('"')
    if not tag:
        return None
    if not tag.isdigit() or len(tag) > 9:
        raise ApiError(
            422, "invalid", "If-Match is not a version.", {"If-Match": ["Send the version you read."]}
        )
    return int(tag)


def _conflict(exc: services.ConcurrentEditError) -> ApiError:
    return ApiError(
        409,
        "conflict",
        "Someone else changed this record since your version; nothing was written.",
        changes={name: [_text(then), _text(now)] for name, (then, now) in exc.changes.items()},
        changed_by=[str(user) for user in exc.changed_by],
        current_version=exc.current.version,
    )


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(getattr(value, "pk", value))


@contextmanager
def conflict_is_409() -> Iterator[None]:
    try:
        yield
    except services.ConcurrentEditError as exc:
        raise _conflict(exc) from None


@contextmanager
def custom_conflict_is_409() -> Iterator[None]:
    """A custom value changed by someone else since the client read it: 409 with the values (no version)."""
    try:
        yield
    except services.ConcurrentEditError as exc:
        raise ApiError(
            409,
            "conflict",
            "Someone else changed these fields since you read them; nothing was written.",
            changes={name: [then, now] for name, (then, now) in exc.changes.items()},
            changed_by=[str(user) for user in exc.changed_by],
        ) from None
