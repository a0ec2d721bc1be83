"""Reads of accounts: the security log, and the people a people picker offers."""

from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet
from django.utils.translation import gettext_lazy as _

from accounts.models import ApiToken, SecurityEvent, User


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


@dataclass(frozen=True)
class StaffKind:
    """Who a people picker offers (``STAFF_KINDS``): the roles, whether people who left count (filters
    find their old records), who may ask (managers only for owners) and what picking nobody means."""

    roles: tuple[str, ...]
    include_inactive: bool = False
    managers_only: bool = False
    empty_label: Any = ""


STAFF_KINDS: dict[str, StaffKind] = {
    "owner": StaffKind((User.Role.REP, User.Role.MANAGER), managers_only=True),
    "owner-filter": StaffKind(
        (User.Role.REP, User.Role.MANAGER),
        include_inactive=True,
        managers_only=True,
        empty_label=_("All owners"),
    ),
    "agent": StaffKind((User.Role.AGENT,), empty_label=_("Assign automatically")),
    "assignee": StaffKind((User.Role.AGENT, User.Role.MANAGER), empty_label=_("Unassigned")),
    # The dashboard's and KPI pages' numbers per person (reps and agents have them).
    "person": StaffKind(
        (User.Role.REP, User.Role.AGENT), include_inactive=True, managers_only=True, empty_label=_("Everyone")
    ),
    # A target for one person, and the security log's filter: anyone on the staff.
    "staff": StaffKind(tuple(User.Role.values), include_inactive=True, managers_only=True),
    "staff-filter": StaffKind(
        tuple(User.Role.values), include_inactive=True, managers_only=True, empty_label=_("Everyone")
    ),
    # A custom field of type "user" (``crm.custom_field_forms``): anyone active on the staff; its list filter
    # also finds people who left (their old records).
    "custom-user": StaffKind(tuple(User.Role.values)),
    "custom-user-filter": StaffKind(tuple(User.Role.values), include_inactive=True, empty_label=_("Any")),
}


def staff_of_kind(*, kind: str) -> QuerySet[User]:
    """The people a picker of ``kind`` offers, by name. Forms validate against the same queryset."""
    spec = STAFF_KINDS[kind]
    qs = User.objects.filter(role__in=spec.roles, is_service_account=False)
    if not spec.include_inactive:
        qs = qs.filter(is_active=True)
    return qs.select_related("team").order_by("first_name", "last_name", "username", "id")


def staff_search(*, qs: QuerySet[User], q: str) -> QuerySet[User]:
    """People whose first name, last name, user name or e-mail contains every typed word."""
    for word in q.split()[:5]:
        qs = qs.filter(
            Q(first_name__icontains=word)
            | Q(last_name__icontains=word)
            | Q(username__icontains=word)
            | Q(email__icontains=word)
        )
    return qs


def staff_directory() -> QuerySet[User]:
    """Every member of staff (service accounts included, flagged), active first, then by name."""
    return User.objects.order_by("-is_active", "first_name", "last_name", "username", "id")


def api_token_list(*, user: User) -> QuerySet[ApiToken]:
    """The tokens ``user`` may see and revoke: their own, and (admins) those of service accounts."""
    qs = ApiToken.objects.select_related("user")
    if user.is_admin:
        return qs.filter(Q(user=user) | Q(user__is_service_account=True))
    return qs.filter(user=user)
