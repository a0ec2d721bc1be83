from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import LoginEvent, Seat, StaffFeedback, Team, UsageEvent, User


def usage_record(
    *, user: User, verb: str, obj: models.Model, via: str = UsageEvent.Via.WEB, at: datetime | None = None
) -> UsageEvent:
    """Record one meaningful action by ``user`` on ``obj``; adoption KPIs count these."""
    return UsageEvent.objects.create(
        user=user,
        verb=verb,
        object_type=usage_object_type(obj),
        object_id=obj.pk,
        via=via,
        at=at or timezone.now(),
    )


def usage_object_type(obj: models.Model) -> str:
    """What a usage event calls ``obj``'s kind (``UsageEvent.object_type``): its model's name, e.g. "deal"."""
    model_name = obj._meta.model_name
    if model_name is None:  # only before Django has prepared the model class
        raise TypeError(f"{type(obj).__name__} is not a prepared model")
    return model_name


def login_record(*, user: User, at: datetime | None = None) -> LoginEvent:
    """Record one successful sign-in."""
    return LoginEvent.objects.create(user=user, at=at or timezone.now())


def team_create(*, name: str, kind: str = Team.Kind.SALES) -> Team:
    """Create a team; the name is unique."""
    team = Team(name=name, kind=kind)
    team.full_clean()
    team.save()
    return team


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str | None = None,
    role: str = User.Role.REP,
    team: Team | None = None,
    first_name: str = "",
    last_name: str = "",
    email: str = "",
    language: str = User.Language.EN,
    with_seat: bool = True,
    at: datetime | None = None,
) -> User:
    """Create a staff user; ``with_seat`` opens their licensed seat from ``at``."""
    at = at or timezone.now()
    user = User(
        username=username,
        role=role,
        team=team,
        first_name=first_name,
        last_name=last_name,
        email=email,
        language=language,
        date_joined=at,
        is_staff=role == User.Role.ADMIN,
        is_superuser=role == User.Role.ADMIN,
    )
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.full_clean(exclude=["password"])
    user.save()
    if with_seat:
        Seat.objects.create(user=user, started_at=at)
    return user


@transaction.atomic
def user_deactivate(*, user: User, at: datetime | None = None) -> User:
    """Deactivate a user and end their seat; their records and history stay."""
    at = at or timezone.now()
    open_seats = Seat.objects.select_for_update().filter(user=user, ended_at__isnull=True)
    if at < user.date_joined or open_seats.filter(started_at__gte=at).exists():
        raise ValidationError(
            {"deactivated_at": _("A user cannot be deactivated before they joined or their seat started.")}
        )
    user.is_active = False
    user.deactivated_at = at
    user.save(update_fields=["is_active", "deactivated_at"])
    open_seats.update(ended_at=at)
    return user


def feedback_send(*, user: User, rating: int, comment: str = "", page: str = "") -> StaffFeedback:
    """Store one piece of staff feedback on the CRM (rating 1–5, optional comment, the page it came from)."""
    feedback = StaffFeedback(user=user, rating=rating, comment=comment.strip(), page=page[:300])
    feedback.full_clean()
    feedback.save()
    return feedback
