"""Personal API tokens and service accounts: create (the token is shown once), revoke, and check a token
presented to the API. Every step goes to the security log; a token's use is logged once an hour at most
(with ``last_used_at``), so that a busy integration does not flood the log."""

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.hashers import make_password
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import ApiToken, SecurityEvent, User
from accounts.security import security_log

TOKEN_PREFIX = "mcrm_"  # noqa: S105 (the public start of every token, not a secret)
# A token's use is written to its row and to the security log at most this often.
USE_LOG_INTERVAL = timedelta(hours=1)
MAX_TOKENS_PER_USER = 20


@dataclass(frozen=True)
class NewToken:
    token: ApiToken
    secret: str  # the whole token, shown once


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _may_manage(actor: User, owner: User) -> bool:
    return actor.pk == owner.pk or (actor.is_admin and owner.is_service_account)


@transaction.atomic
def api_token_create(
    *,
    actor: User,
    user: User,
    name: str,
    scope: str = ApiToken.Scope.READ,
    expires_at: datetime | None = None,
    request: HttpRequest | None = None,
) -> NewToken:
    """A new token for ``user`` (the actor themselves, or a service account an admin manages)."""
    if not _may_manage(actor, user):
        raise PermissionDenied
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": _("Choose a date in the future, or none.")})
    if ApiToken.objects.filter(user=user, revoked_at=None).count() >= MAX_TOKENS_PER_USER:
        raise ValidationError(
            _("%(user)s already has %(n)s active tokens; revoke one first.")
            % {"user": user.get_username(), "n": MAX_TOKENS_PER_USER}
        )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        scope=scope,
        expires_at=expires_at,
        prefix=secret[: len(TOKEN_PREFIX) + 6],
        key_hash=token_hash(secret),
        created_by=actor,
    )
    security_log(
        kind=SecurityEvent.Kind.API_TOKEN_CREATED,
        request=request,
        user=actor,
        token_id=token.pk,
        owner_id=user.pk,
    )
    return NewToken(token, secret)


@transaction.atomic
def api_token_revoke(*, actor: User, token: ApiToken, request: HttpRequest | None = None) -> ApiToken:
    if not _may_manage(actor, token.user):
        raise PermissionDenied
    updated = ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=timezone.now())
    if updated:
        security_log(
            kind=SecurityEvent.Kind.API_TOKEN_REVOKED, request=request, user=actor, token_id=token.pk
        )
    token.refresh_from_db()
    return token


def api_token_authenticate(*, secret: str, request: HttpRequest | None = None) -> ApiToken | None:
    """The usable token ``secret`` names (its user active, not expired, not revoked), else None; a
    refusal is logged, and so is the first use in each ``USE_LOG_INTERVAL``."""
    token = None
    if secret.startswith(TOKEN_PREFIX) and len(secret) <= 100:
        token = ApiToken.objects.select_related("user").filter(key_hash=token_hash(secret)).first()
    now = timezone.now()
    if token is None or not token.is_usable(now):
        # Codes, not prose: the security log shows them as they are, in every language.
        refusal = (
            "token_unknown" if token is None else "token_revoked" if token.revoked_at else "token_expired"
        )
        security_log(
            kind=SecurityEvent.Kind.API_TOKEN_REFUSED,
            request=request,
            user=None if token is None else token.user,
            refusal=refusal,
        )
        return None
    if token.last_used_at is None or now - token.last_used_at >= USE_LOG_INTERVAL:
        # Conditional, so that concurrent requests log the use once.
        stale = Q(last_used_at=None) | Q(last_used_at__lt=now - USE_LOG_INTERVAL)
        if ApiToken.objects.filter(stale, pk=token.pk).update(last_used_at=now):
            security_log(
                kind=SecurityEvent.Kind.API_TOKEN_USED, request=request, user=token.user, token_id=token.pk
            )
        token.last_used_at = now
    return token


@transaction.atomic
def service_account_create(*, actor: User, username: str, role: str, first_name: str = "") -> User:
    """An account for an integration: it signs in only with tokens and never counts as a licensed user."""
    if not actor.is_admin:
        raise PermissionDenied
    if User.objects.filter(username__iexact=username).exists():
        raise ValidationError({"username": _("This user name is taken.")})
    if role not in (User.Role.REP, User.Role.AGENT, User.Role.MANAGER):
        raise ValidationError({"role": _("Choose sales rep, support agent or manager.")})
    return User.objects.create(
        username=username,
        first_name=first_name,
        role=role,
        is_service_account=True,
        password=make_password(None),
    )
