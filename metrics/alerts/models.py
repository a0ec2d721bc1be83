"""Alerts (KPIS.md §10.8) and who was told of them. Registered with the metrics app by ``metrics.models``."""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils.translation import gettext_lazy as _

from accounts.dates import validate_date_in_range
from accounts.text import StorableJSONEncoder
from metrics.models import KPI_VALUE, Granularity, Scope

# Whose numbers an alert is about: the company's, a team's, a person's, or a support agent's tickets'.
ALERT_SCOPES = (Scope.COMPANY, Scope.TEAM, Scope.USER, Scope.AGENT)


class Alert(models.Model):
    """One KPI of one scope and period that is off its target pace or outside its control limits.

    Written only by ``metrics.alerts.services``: one row per KPI, scope and period, whatever the kind (a
    period's pace alert while it runs becomes its anomaly alert once it has ended), updated when the next
    snapshot run evaluates it again. ``resolved_at`` is set when the condition no longer holds (back on
    track, back inside the limits, or a later period took over); it is cleared when it holds again. A
    dismissed alert stays dismissed for its KPI, scope and period.

    ``scope`` is company, team, user or (CSAT and CES of a support agent's tickets) agent; ``scope_id`` as
    in ``KpiSnapshot``. ``why`` is the data of the contribution sentence (KPIS.md §10.4): the team or person
    that moved the number most (``scope``, ``key``), by how much (``change``, in the KPI's unit) and their
    sample (``n``); empty when no segment stands out or the scope has none (a person).
    """

    class Kind(models.TextChoices):
        PACE = "pace", _("Off target pace")
        ANOMALY = "anomaly", _("Anomaly")

    kpi = models.CharField(_("KPI"), max_length=60)
    granularity = models.CharField(_("granularity"), max_length=8, choices=Granularity.choices)
    period_start = models.DateTimeField(_("period start"), validators=[validate_date_in_range])
    period_end = models.DateTimeField(_("period end"), validators=[validate_date_in_range])
    scope = models.CharField(
        _("scope"),
        max_length=8,
        choices=[(value, label) for value, label in Scope.choices if value in ALERT_SCOPES],
    )
    scope_id = models.CharField(_("scope id"), max_length=40, blank=True, default="")
    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    value = models.DecimalField(_("value"), **KPI_VALUE, null=True, blank=True)
    sample_size = models.PositiveIntegerField(_("sample size"), null=True, blank=True)
    # Pace: the target, the value projected to the period's end and its share of the target (the good way).
    target = models.DecimalField(_("target"), **KPI_VALUE, null=True, blank=True)
    projected = models.DecimalField(_("projected"), **KPI_VALUE, null=True, blank=True)
    percent_of_target = models.IntegerField(_("share of target at this pace (%)"), null=True, blank=True)
    # Anomaly: the control chart's centre line and limits.
    centre = models.DecimalField(_("centre line"), **KPI_VALUE, null=True, blank=True)
    lower_limit = models.DecimalField(_("lower limit"), **KPI_VALUE, null=True, blank=True)
    upper_limit = models.DecimalField(_("upper limit"), **KPI_VALUE, null=True, blank=True)
    why = models.JSONField(_("biggest contributor"), default=dict, blank=True, encoder=StorableJSONEncoder)
    created_at = models.DateTimeField(_("created at"), validators=[validate_date_in_range])
    raised_at = models.DateTimeField(
        _("raised at"),
        help_text=_("When the condition last began to hold."),
        validators=[validate_date_in_range],
    )
    updated_at = models.DateTimeField(
        _("updated at"), help_text=_("When its numbers last changed."), validators=[validate_date_in_range]
    )
    resolved_at = models.DateTimeField(
        _("resolved at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    dismissed_at = models.DateTimeField(
        _("dismissed at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    dismissed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("dismissed by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["-raised_at", "-id"]
        verbose_name = _("alert")
        verbose_name_plural = _("alerts")
        constraints = [
            # One alert per KPI, scope and period: re-evaluation updates it (an upsert on this key).
            models.UniqueConstraint(
                fields=["kpi", "granularity", "scope", "scope_id", "period_start"],
                name="alert_one_per_period",
            ),
            models.CheckConstraint(condition=Q(period_end__gt=F("period_start")), name="alert_period"),
            models.CheckConstraint(
                condition=Q(scope="company", scope_id="") | (~Q(scope="company") & ~Q(scope_id="")),
                name="alert_scope_id",
            ),
            models.CheckConstraint(
                condition=Q(dismissed_by__isnull=True) | Q(dismissed_at__isnull=False), name="alert_dismissed"
            ),
        ]
        indexes = [
            # A rep's or an agent's own alerts.
            models.Index(fields=["scope", "scope_id", "-raised_at"], name="alert_scope_raised"),
            # The active ones (the dashboard's panel, the weekly report, the evaluation's resolve step).
            models.Index(
                fields=["-raised_at"],
                condition=Q(resolved_at__isnull=True, dismissed_at__isnull=True),
                name="alert_active",
            ),
        ]

    def __str__(self) -> str:
        period = f"{self.granularity} {self.period_start:%Y-%m-%d}"
        return f"{self.kind} {self.kpi} {period} {self.scope}:{self.scope_id}"

    @property
    def is_active(self) -> bool:
        return self.resolved_at is None and self.dismissed_at is None


class AlertNotice(models.Model):
    """Who was told of an alert, how, when and what: in the app when it was raised (every manager, and the
    person whose numbers it is about), by e-mail in a weekly report. One per alert, person, channel and kind
    (a pace alert that becomes an anomaly is told again)."""

    class Channel(models.TextChoices):
        APP = "app", _("In the app")
        EMAIL = "email", _("Weekly report")

    alert = models.ForeignKey(
        Alert, verbose_name=_("alert"), on_delete=models.CASCADE, related_name="notices"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("person"), on_delete=models.CASCADE, related_name="+"
    )
    channel = models.CharField(_("channel"), max_length=8, choices=Channel.choices)
    kind = models.CharField(_("kind"), max_length=8, choices=Alert.Kind.choices)
    value = models.DecimalField(_("value told"), **KPI_VALUE, null=True, blank=True)
    told_at = models.DateTimeField(_("told at"), validators=[validate_date_in_range])

    class Meta:
        ordering = ["told_at", "id"]
        verbose_name = _("alert notice")
        verbose_name_plural = _("alert notices")
        constraints = [
            models.UniqueConstraint(fields=["alert", "user", "channel", "kind"], name="alertnotice_once"),
        ]

    def __str__(self) -> str:
        return f"{self.alert_id} → {self.user_id} ({self.channel}, {self.told_at:%Y-%m-%d %H:%M})"
