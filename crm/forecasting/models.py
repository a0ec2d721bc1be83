"""The versions of each pipeline stage's probability."""

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from accounts.dates import validate_date_in_range


class StageProbabilityVersion(models.Model):
    """The probability a stage had from ``valid_from`` until its next version. Written by
    ``crm.forecasting.services`` whenever the stage's probability changes; never changed afterwards."""

    class Reason(models.TextChoices):
        INITIAL = "initial", _("As the stage was when versions began")
        ADMIN = "admin", _("Changed in the pipeline settings")
        CALIBRATION = "calibration", _("Suggested by the calibration and applied")
        SEED = "seed", _("Set when the stage was created")
        DEMO = "demo", _("Demo data")

    stage = models.ForeignKey(
        "crm.PipelineStage",
        verbose_name=_("stage"),
        on_delete=models.CASCADE,
        related_name="probability_versions",
    )
    probability = models.PositiveSmallIntegerField(
        _("probability %"), validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    valid_from = models.DateTimeField(_("valid from"), validators=[validate_date_in_range])
    set_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("set by"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    reason = models.CharField(_("reason"), max_length=12, choices=Reason.choices)
    note = models.CharField(_("note"), max_length=300, blank=True)

    class Meta:
        ordering = ["stage", "valid_from", "id"]
        verbose_name = _("stage probability version")
        verbose_name_plural = _("stage probability versions")
        constraints = [
            models.CheckConstraint(
                condition=Q(probability__gte=0, probability__lte=100), name="stageprobability_0_100"
            ),
        ]
        indexes = [models.Index(fields=["stage", "-valid_from", "-id"], name="stageprobability_stage_from")]

    def __str__(self) -> str:
        return f"{self.stage_id}: {self.probability} % from {self.valid_from:%Y-%m-%d %H:%M}"
