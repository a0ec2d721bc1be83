from datetime import datetime

from django.contrib.auth.models import AbstractUser
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from accounts.dates import validate_date_in_range
from accounts.text import StorableJSONEncoder


class Team(models.Model):
    class Kind(models.TextChoices):
        SALES = "sales", _("Sales")
        SUPPORT = "support", _("Support")

    name = models.CharField(_("name"), max_length=100, unique=True)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.SALES)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True, validators=[validate_date_in_range])

    class Meta:
        ordering = ["name"]
        verbose_name = _("team")
        verbose_name_plural = _("teams")

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    class Role(models.TextChoices):
        REP = "rep", _("Sales rep")
        AGENT = "agent", _("Support agent")
        MANAGER = "manager", _("Manager")
        ADMIN = "admin", _("Administrator")

    class Language(models.TextChoices):
        EN = "en", _("English")
        ZH_HANS = "zh-hans", _("Simplified Chinese")

    role = models.CharField(_("role"), max_length=10, choices=Role.choices, default=Role.REP)
    team = models.ForeignKey(
        Team, verbose_name=_("team"), null=True, blank=True, on_delete=models.SET_NULL, related_name="members"
    )
    language = models.CharField(_("language"), max_length=10, choices=Language.choices, default=Language.EN)
    # Service and integration accounts never count as staff in the adoption KPIs.
    is_service_account = models.BooleanField(_("service account"), default=False)
    deactivated_at = models.DateTimeField(
        _("deactivated at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    # AbstractUser's dates, with the CRM's date range (both can be edited in the admin).
    last_login = models.DateTimeField(
        _("last login"), blank=True, null=True, validators=[validate_date_in_range]
    )
    date_joined = models.DateTimeField(
        _("date joined"), default=timezone.now, validators=[validate_date_in_range]
    )

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        constraints = [
            models.CheckConstraint(
                condition=Q(deactivated_at__isnull=True) | Q(deactivated_at__gte=F("date_joined")),
                name="user_deactivated_after_joined",
            ),
        ]

    def __str__(self) -> str:
        return self.get_full_name() or self.username

    @property
    def is_manager(self) -> bool:
        return self.role in (self.Role.MANAGER, self.Role.ADMIN) or self.is_superuser

    @property
    def is_admin(self) -> bool:
        return self.role == self.Role.ADMIN or self.is_superuser

    @property
    def is_rep(self) -> bool:
        return self.role == self.Role.REP and not self.is_superuser

    @property
    def is_agent(self) -> bool:
        return self.role == self.Role.AGENT and not self.is_superuser


class Seat(models.Model):
    """A period during which a user held a CRM licence: the denominator of the adoption KPIs."""

    user = models.ForeignKey(User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="seats")
    started_at = models.DateTimeField(_("started at"), validators=[validate_date_in_range])
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True, validators=[validate_date_in_range])

    class Meta:
        ordering = ["user", "started_at"]
        verbose_name = _("seat")
        verbose_name_plural = _("seats")
        constraints = [
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True) | Q(ended_at__gt=F("started_at")),
                name="seat_ends_after_start",
            ),
            models.UniqueConstraint(
                fields=["user"], condition=Q(ended_at__isnull=True), name="seat_one_open_per_user"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.started_at:%Y-%m-%d}–{self.ended_at or ''}"


class LoginEvent(models.Model):
    """One successful sign-in. Django's ``last_login`` keeps only the latest; adoption needs them all."""

    user = models.ForeignKey(
        User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="login_events"
    )
    at = models.DateTimeField(_("at"), db_index=False, validators=[validate_date_in_range])

    class Meta:
        ordering = ["-at"]
        verbose_name = _("login event")
        verbose_name_plural = _("login events")
        indexes = [
            models.Index(fields=["user", "at"], name="loginevent_user_at"),
            models.Index(fields=["at"], name="loginevent_at"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.at:%Y-%m-%d %H:%M}"


class UsageEvent(models.Model):
    """A meaningful action in the CRM (create, update, …), written by the services."""

    class Verb(models.TextChoices):
        CREATE = "create", _("created")
        UPDATE = "update", _("updated")
        DELETE = "delete", _("deleted")
        STAGE = "stage", _("moved stage")
        REPLY = "reply", _("replied")
        COMPLETE = "complete", _("completed")
        MERGE = "merge", _("merged")

    class Via(models.TextChoices):
        WEB = "web", _("web")
        IMPORT = "import", _("import")
        API = "api", _("API")
        SYSTEM = "system", _("system")

    user = models.ForeignKey(
        User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="usage_events"
    )
    verb = models.CharField(_("verb"), max_length=10, choices=Verb.choices)
    object_type = models.CharField(_("object type"), max_length=30)
    object_id = models.BigIntegerField(_("object id"))
    at = models.DateTimeField(_("at"), validators=[validate_date_in_range])
    via = models.CharField(_("via"), max_length=10, choices=Via.choices, default=Via.WEB)

    class Meta:
        ordering = ["-at"]
        verbose_name = _("usage event")
        verbose_name_plural = _("usage events")
        indexes = [
            models.Index(fields=["user", "at"], name="usageevent_user_at"),
            models.Index(fields=["at"], name="usageevent_at"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.verb} {self.object_type}#{self.object_id}"


class StaffFeedback(models.Model):
    """What a staff member thinks of the CRM, sent from any page; managers read it on the adoption page."""

    user = models.ForeignKey(User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="feedback")
    rating = models.PositiveSmallIntegerField(_("rating"))
    comment = models.TextField(_("comment"), blank=True, max_length=2000)
    page = models.CharField(_("page"), max_length=300, blank=True)
    created_at = models.DateTimeField(_("sent at"), auto_now_add=True, validators=[validate_date_in_range])

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("staff feedback")
        verbose_name_plural = _("staff feedback")
        constraints = [
            models.CheckConstraint(
                condition=Q(rating__gte=1, rating__lte=5), name="staff_feedback_rating_1_5"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.rating}/5 @ {self.created_at:%Y-%m-%d}"


class SecurityEvent(models.Model):
    """One security-relevant event (sign-in, refused access, export, merge, personal data request).

    Never holds secrets: no passwords, no survey tokens, no query strings (see ``accounts.security``).
    """

    class Kind(models.TextChoices):
        SIGN_IN = "sign_in", _("signed in")
        SIGN_IN_FAILED = "sign_in_failed", _("sign-in failed")
        LOCKED_OUT = "locked_out", _("locked out")
        ACCESS_REFUSED = "access_refused", _("access refused")
        EXPORT = "export", _("export")
        MERGE = "merge", _("merge")
        PERSONAL_DATA_EXPORT = "personal_data_export", _("personal data export")
        PERSONAL_DATA_ERASE = "personal_data_erase", _("personal data erased")
        TWO_FACTOR_FAILED = "two_factor_failed", _("two-factor code refused")
        TWO_FACTOR_SKIPPED = "two_factor_skipped", _("sign-in without its two-factor code refused")
        RECOVERY_CODE_USED = "recovery_code_used", _("signed in with a recovery code")
        API_TOKEN_CREATED = "api_token_created", _("API token created")
        API_TOKEN_REVOKED = "api_token_revoked", _("API token revoked")
        API_TOKEN_USED = "api_token_used", _("API token used")
        API_TOKEN_REFUSED = "api_token_refused", _("API token refused")

    at = models.DateTimeField(_("at"), db_index=False, validators=[validate_date_in_range])
    kind = models.CharField(_("kind"), max_length=24, choices=Kind.choices)
    user = models.ForeignKey(
        User,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="security_events",
    )
    username = models.CharField(_("username tried"), max_length=150, blank=True)
    ip = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    path = models.CharField(_("path"), max_length=300, blank=True)
    detail = models.JSONField(_("detail"), default=dict, blank=True, encoder=StorableJSONEncoder)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("security event")
        verbose_name_plural = _("security events")
        indexes = [
            models.Index(fields=["kind", "-at"], name="securityevent_kind_at"),
            models.Index(fields=["user", "-at"], name="securityevent_user_at"),
            BrinIndex(fields=["at"], name="securityevent_at_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.user or self.username} @ {self.at:%Y-%m-%d %H:%M}"


class ApiToken(models.Model):
    """A personal API token: the API acts as its user, within its scope, until it expires or is revoked.

    The token itself is shown once, when it is created; only its SHA-256 is stored (it is 256 random
    bits, so a plain hash is as strong as a slow one and lets a request be checked with one index look-up).
    """

    class Scope(models.TextChoices):
        READ = "read", _("read only")
        WRITE = "write", _("read and write")

    user = models.ForeignKey(
        User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(_("name"), max_length=100)
    # The first characters of the token, shown in lists so that people can tell their tokens apart.
    prefix = models.CharField(_("starts with"), max_length=16)
    key_hash = models.CharField(max_length=64, unique=True)
    scope = models.CharField(_("scope"), max_length=5, choices=Scope.choices, default=Scope.READ)
    created_at = models.DateTimeField(_("created"), default=timezone.now, validators=[validate_date_in_range])
    created_by = models.ForeignKey(
        User, verbose_name=_("created by"), null=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField(
        _("expires"), null=True, blank=True, validators=[validate_date_in_range]
    )
    last_used_at = models.DateTimeField(
        _("last used"), null=True, blank=True, validators=[validate_date_in_range]
    )
    revoked_at = models.DateTimeField(
        _("revoked"), null=True, blank=True, validators=[validate_date_in_range]
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_usable(self, now: datetime | None = None) -> bool:
        now = now or timezone.now()
        return (
            self.revoked_at is None
            and (self.expires_at is None or self.expires_at > now)
            and self.user.is_active
        )
