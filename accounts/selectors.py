from django.db.models import QuerySet

from accounts.models import SecurityEvent, User


def security_event_list(*, user: User, kind: str = "", actor: User | None = None) -> QuerySet[SecurityEvent]:
    """The security log, newest first, for managers and admins only (anyone else sees nothing)."""
    if not user.is_manager:
        return SecurityEvent.objects.none()
    events = SecurityEvent.objects.select_related("user").order_by("-at", "-id")
    if kind:
        events = events.filter(kind=kind)
    if actor is not None:
        events = events.filter(user=actor)
    return events
