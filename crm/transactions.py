"""Write transactions that survive a concurrent writer: one retry on a deadlock or serialization failure.

PostgreSQL aborts one of two transactions that wait on each other (deadlock) or that cannot be serialized.
Nothing of the aborted one was written, so running it again is safe; a second failure in a row is told to
the user as a form error (``WriteConflict`` is a ``ValidationError``) instead of a server error.
"""

import functools
import logging
from collections.abc import Callable

from django.core.exceptions import ValidationError
from django.db import OperationalError, connection, transaction
from django.utils.translation import gettext_lazy as _

logger = logging.getLogger(__name__)

# SQLSTATEs of the transaction conflicts that a retry resolves.
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
RETRYABLE = {SERIALIZATION_FAILURE, DEADLOCK_DETECTED}


class WriteConflict(ValidationError):
    """Another write collided with this one twice in a row; nothing was saved."""

    def __init__(self) -> None:
        super().__init__(
            _(
                "Someone else was saving the same records at the same moment. "
                "Nothing was saved: please try again."
            ),
            code="write_conflict",
        )


def is_retryable(exc: OperationalError) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) in RETRYABLE


def atomic_retrying[**P, R](func: Callable[P, R]) -> Callable[P, R]:
    """``transaction.atomic`` that runs ``func`` once more when PostgreSQL aborts it as a deadlock victim
    or a serialization failure. Inside an outer transaction it is a plain savepoint: only the outermost
    transaction can be retried, so the outer caller decides."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if connection.in_atomic_block:
            with transaction.atomic():
                return func(*args, **kwargs)
        for attempt in (1, 2):
            try:
                with transaction.atomic():
                    return func(*args, **kwargs)
            except OperationalError as exc:
                if not is_retryable(exc):
                    raise
                logger.warning("%s: %s on attempt %d", func.__qualname__, exc.__cause__.sqlstate, attempt)
                if attempt == 2:
                    raise WriteConflict from exc
        raise AssertionError("unreachable")

    return wrapper
