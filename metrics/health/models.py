"""Customer health (KPIS.md §10.10): the weights and bands a manager sets, today's score of each active
customer with the facts and points behind it, and each scoring run with its backtest. Registered with the
metrics app by ``metrics.models``."""

import operator
from functools import reduce

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q
from django.db.models.lookups import Exact
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.dates import validate_date_in_range
from accounts.text import StorableJSONEncoder
from crm.models import Customer
from metrics.health.components import (
    COMPONENTS,
    DEFAULT_AT_RISK_BELOW,
    DEFAULT_CRITICAL_BELOW,
    DEFAULT_WEIGHTS,
)

POINTS = {"max_digits": 4, "decimal_places": 1}
REVENUE = {"max_digits": 18, "decimal_places": 2}


class Band(models.TextChoices):
    HEALTHY = "healthy", _("Healthy")
    AT_RISK = "at_risk", _("At risk")
    CRITICAL = "critical", _("Critical")


# At risk and critical together: the customers the score flags (the backtest's "predicted to churn").
FLAGGED = (Band.AT_RISK, Band.CRITICAL)


def _weight(code: str, label: Promise) -> models.PositiveSmallIntegerField:
    return models.PositiveSmallIntegerField(
        label,
        default=DEFAULT_WEIGHTS[code],
        validators=[MaxValueValidator(100)],
    )


class HealthSettings(models.Model):
    """The single row of the health score's settings: the weight (maximum points) of each component, which
    add up to 100, and the scores below which a customer is critical or at risk."""

    recency_weight = _weight("recency", _("recent contact"))
    satisfaction_weight = _weight("satisfaction", _("satisfaction"))
    complaints_weight = _weight("complaints", _("complaints"))
    sla_weight = _weight("sla", _("SLA breaches"))
    renewal_weight = _weight("renewal", _("renewal"))
    revenue_weight = _weight("revenue", _("revenue trend"))
    owner_weight = _weight("owner", _("owner's attention"))
    critical_below = models.PositiveSmallIntegerField(
        _("critical below"),
        default=DEFAULT_CRITICAL_BELOW,
        validators=[MinValueValidator(1), MaxValueValidator(99)],
    )
    at_risk_below = models.PositiveSmallIntegerField(
        _("at risk below"),
        default=DEFAULT_AT_RISK_BELOW,
        validators=[MinValueValidator(2), MaxValueValidator(100)],
    )
    updated_at = models.DateTimeField(
        _("changed at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    updated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("changed by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        verbose_name = _("health score settings")
        verbose_name_plural = _("health score settings")
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="healthsettings_singleton"),
            # Each weight is the most points its component can give: the score runs from 0 to 100.
            models.CheckConstraint(
                condition=Exact(reduce(operator.add, (F(c.weight_field) for c in COMPONENTS)), 100),
                name="healthsettings_weights_sum_100",
            ),
            models.CheckConstraint(
                condition=Q(
                    critical_below__gte=1,
                    at_risk_below__lte=100,
                    critical_below__lt=F("at_risk_below"),
                ),
                name="healthsettings_bands_ordered",
            ),
        ]

    def __str__(self) -> str:
        return str(self._meta.verbose_name)

    @classmethod
    def load(cls) -> "HealthSettings":
        """The settings row, or the defaults (unsaved) until a manager first saves them: reading writes
        nothing."""
        return cls.objects.filter(pk=1).first() or cls(pk=1)

    def clean(self) -> None:
        """The weights add up to 100 (the score's maximum); critical lies below at risk."""
        total = sum(w or 0 for w in self.weights.values())
        errors: dict[str, list[str]] = {}
        if total != 100:
            errors[NON_FIELD_ERRORS] = [
                gettext("The weights must add up to 100 points; they add up to %(total)s.") % {"total": total}
            ]
        if (
            self.critical_below is not None
            and self.at_risk_below is not None
            and self.critical_below >= self.at_risk_below
        ):
            errors["critical_below"] = [gettext("Critical must start below the at-risk threshold.")]
        if errors:
            raise ValidationError(errors)

    @property
    def weights(self) -> dict[str, int]:
        """Component code -> its weight (maximum points)."""
        return {c.code: getattr(self, c.weight_field) for c in COMPONENTS}

    def as_json(self) -> dict[str, object]:
        """What a scoring run used: the weights and the band thresholds."""
        return {
            "weights": self.weights,
            "critical_below": self.critical_below,
            "at_risk_below": self.at_risk_below,
        }


class CustomerHealth(models.Model):
    """One active customer's health score as of a day (the start of ``as_of`` in the reporting time zone),
    the facts it was made from and the points of each component (weight × full, half or none). Only the
    newest scoring is kept; the daily task replaces it (``metrics.health.services.health_refresh``)."""

    customer = models.ForeignKey(
        Customer, verbose_name=_("customer"), on_delete=models.CASCADE, related_name="health_scores"
    )
    as_of = models.DateField(_("as of"), validators=[validate_date_in_range])
    score = models.DecimalField(_("health score"), **POINTS)
    band = models.CharField(_("band"), max_length=8, choices=Band.choices)
    # The facts behind the points.
    last_touch_at = models.DateTimeField(
        _("last contact or purchase"), null=True, blank=True, validators=[validate_date_in_range]
    )
    survey_kind = models.CharField(_("latest survey"), max_length=4, blank=True)
    survey_score = models.SmallIntegerField(_("latest survey score"), null=True, blank=True)
    survey_at = models.DateTimeField(
        _("answered at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    complaints = models.PositiveIntegerField(_("complaints (90 days)"), default=0)
    sla_breaches = models.PositiveIntegerField(_("SLA breaches (90 days)"), default=0)
    renewal_due_on = models.DateField(
        _("renewal due without a renewal deal"), null=True, blank=True, validators=[validate_date_in_range]
    )
    revenue_12m = models.DecimalField(_("won revenue, last 12 months"), **REVENUE, default=0)
    revenue_prior_12m = models.DecimalField(_("won revenue, 12 months before"), **REVENUE, default=0)
    owner_activities = models.PositiveIntegerField(_("owner's activities (90 days)"), default=0)
    # The points of each component (``metrics.health.components``).
    recency_points = models.DecimalField(_("recent contact"), **POINTS)
    satisfaction_points = models.DecimalField(_("satisfaction"), **POINTS)
    complaints_points = models.DecimalField(_("complaints"), **POINTS)
    sla_points = models.DecimalField(_("SLA breaches"), **POINTS)
    renewal_points = models.DecimalField(_("renewal"), **POINTS)
    revenue_points = models.DecimalField(_("revenue trend"), **POINTS)
    owner_points = models.DecimalField(_("owner's attention"), **POINTS)

    class Meta:
        ordering = ["score", "customer_id"]
        verbose_name = _("customer health score")
        verbose_name_plural = _("customer health scores")
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "as_of"], name="customerhealth_unique_customer_as_of"
            ),
            models.CheckConstraint(
                condition=Q(score__gte=0, score__lte=100), name="customerhealth_score_0_100"
            ),
        ]
        indexes = [
            # The health list: a band's customers, riskiest first (or a page of all of them by score).
            models.Index(fields=["as_of", "band", "score", "customer"], name="customerhealth_band_score"),
            models.Index(fields=["as_of", "score", "customer"], name="customerhealth_score"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id} {self.as_of}: {self.score} {self.band}"

    @property
    def points(self) -> dict[str, object]:
        return {c.code: getattr(self, c.points_field) for c in COMPONENTS}


class CustomerHealthRun(models.Model):
    """One scoring of every active customer (as of the start of ``as_of``) and the backtest of the same score
    over the past month starts: the settings it used, churn per band, lift, precision, recall, AUC and
    the verdict. One per day; a re-scoring the same day (new weights) replaces it."""

    class Verdict(models.TextChoices):
        BEATS = "beats", _("Beats the base rate")
        FAILS = "fails", _("Does not beat the base rate")
        TOO_FEW = "too_few", _("Not enough data")

    as_of = models.DateField(_("as of"), unique=True, validators=[validate_date_in_range])
    computed_at = models.DateTimeField(_("computed at"), validators=[validate_date_in_range])
    duration_seconds = models.FloatField(_("duration (s)"), default=0)
    scored = models.PositiveIntegerField(_("customers scored"), default=0)
    # {band: customers}: how many of the customers scored as of ``as_of`` are in each band.
    bands = models.JSONField(_("customers per band"), default=dict, encoder=StorableJSONEncoder)
    # {owner id ("" for none): {band: customers, "score": Σ scores}} at the scoring: what the KPI snapshots
    # read (per person and team) instead of scanning every score in each run.
    by_owner = models.JSONField(_("per owner"), default=dict, encoder=StorableJSONEncoder)
    # {"weights": {code: points}, "critical_below": n, "at_risk_below": n}
    settings = models.JSONField(_("settings used"), default=dict, encoder=StorableJSONEncoder)
    # metrics.health.backtest.Backtest.to_json(): the month starts, the bands and the totals.
    backtest = models.JSONField(_("backtest"), default=dict, encoder=StorableJSONEncoder)
    observations = models.PositiveIntegerField(_("customers scored at the month starts"), default=0)
    churned = models.PositiveIntegerField(_("of them churned within 90 days"), default=0)
    base_rate = models.FloatField(_("base churn rate"), null=True, blank=True)
    lift = models.FloatField(_("lift"), null=True, blank=True)
    precision = models.FloatField(_("precision"), null=True, blank=True)
    recall = models.FloatField(_("recall"), null=True, blank=True)
    auc = models.FloatField(_("AUC"), null=True, blank=True)
    auc_margin = models.FloatField(_("AUC noise margin"), null=True, blank=True)
    verdict = models.CharField(_("verdict"), max_length=8, choices=Verdict.choices, default=Verdict.TOO_FEW)

    class Meta:
        ordering = ["-as_of"]
        verbose_name = _("customer health run")
        verbose_name_plural = _("customer health runs")

    def __str__(self) -> str:
        return f"{self.as_of}: {self.scored} scored, {self.verdict}"
