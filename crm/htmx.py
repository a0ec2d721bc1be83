"""HTMX helpers shared by the apps' views."""

from django.http import HttpRequest


def partial_template(request: HttpRequest, template: str, partial: str) -> str:
    """The fragment for an htmx swap, the whole page otherwise (and for history restores)."""
    if request.htmx and not request.htmx.history_restore_request:
        return f"{template}#{partial}"
    return template
