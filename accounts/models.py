from django.contrib.auth.models import AbstractUser
from django.contrib.postgres.indexes import BrinIndex
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _


class Team(models.Model):
    class Kind(models.TextChoices):
        SALES = "sales", _("Sales")
        SUPPORT = "support", _("Support")

    name = models.CharField(_("name"), max_length=100, unique=True)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.SALES)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

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
    deactivated_at = models.DateTimeField(_("deactivated at"), null=True, blank=True)

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
    def is_rep(self) -> bool:
        return self.role == self.Role.REP and not self.is_superuser

    @property
    def is_agent(self) -> bool:
        return self.role == self.Role.AGENT and not self.is_superuser


class Seat(models.Model):
    """A period during which a user held a CRM licence: the denominator of the adoption KPIs."""

    user = models.ForeignKey(User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="seats")
    started_at = models.DateTimeField(_("started at"))
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)

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
    at = models.DateTimeField(_("at"), db_index=False)

    class Meta:
        ordering = ["-at"]
        verbose_name = _("login event")
        verbose_name_plural = _("login events")
        indexes = [
            models.Index(fields=["user", "at"], name="loginevent_user_at"),
            BrinIndex(fields=["at"], name="loginevent_at_brin"),
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
    at = models.DateTimeField(_("at"))
    via = models.CharField(_("via"), max_length=10, choices=Via.choices, default=Via.WEB)

    class Meta:
        ordering = ["-at"]
        verbose_name = _("usage event")
        verbose_name_plural = _("usage events")
        indexes = [
            models.Index(fields=["user", "at"], name="usageevent_user_at"),
            BrinIndex(fields=["at"], name="usageevent_at_brin"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.verb} {self.object_type}#{self.object_id}"
