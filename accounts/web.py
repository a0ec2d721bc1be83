"""Web helpers every app's views share: htmx partials and the capped paginator. They live in ``accounts``,
the app every other one builds on, so that ``accounts`` itself needs no other app (the layering rules in
pyproject.toml)."""

from functools import cached_property

from django.core.paginator import Paginator
from django.http import HttpRequest

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
