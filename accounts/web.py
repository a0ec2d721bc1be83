"""Web helpers every app's views share: htmx partials, the capped paginator, the role check and service
errors onto forms. They live in ``accounts``,
the app every other one builds on, so that ``accounts`` itself needs no other app (the layering rules in
pyproject.toml)."""

from functools import cached_property
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest

# Rows per page of a list.
PAGE_SIZE = 25


def partial_template(request: HttpRequest, template: str, partial: str) -> str:
    """The fragment for an htmx swap, the whole page otherwise (and for history restores)."""
    if request.htmx and not request.htmx.history_restore_request:
        return f"{template}#{partial}"
    return template


class CappedPaginator(Paginator):
    """Counts at most ``COUNT_CAP`` rows, so a list over a million deals costs the same as over a thousand.

    Beyond the cap the page shows "10,000+" and asks for a narrower filter instead of an exact total.
    """

    COUNT_CAP = 10_000

    def __init__(self, object_list, per_page, *args, count: int | None = None, **kwargs) -> None:
        super().__init__(object_list, per_page, *args, **kwargs)
        if count is not None:  # counted already, e.g. by metrics.selectors.drill_page
            self.__dict__["count"] = count

    @cached_property
    def count(self) -> int:
        return self.object_list.order_by()[: self.COUNT_CAP + 1].count()

    @property
    def is_capped(self) -> bool:
        return self.count > self.COUNT_CAP


def require_staff_role(user: Any, *roles: str) -> None:
    """Managers and admins, or one of ``roles``; anyone else gets a 404 (a page they may not use does not
    exist for them). Without ``roles``: managers and admins only."""
    if not (user.is_manager or user.role in roles):
        raise Http404


def form_errors_from(exc: ValidationError, form: forms.BaseForm) -> None:
    """Put a service's ValidationError onto the form, field by field where it names one of the form's (a
    custom field's ``custom.<key>`` is the form's ``cf_<key>``)."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.error_dict.items():
            name = f"cf_{field.removeprefix('custom.')}" if field.startswith("custom.") else field
            form.add_error(name if name in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)
