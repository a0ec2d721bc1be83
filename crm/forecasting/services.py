"""Every write of stage probabilities: each change leaves a version, so past forecasts keep theirs."""

from datetime import UTC, datetime
from typing import Any

from django.apps import apps as django_apps
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from crm.forecasting.models import StageProbabilityVersion
from crm.models import ForecastCategory, PipelineStage
from crm.transactions import atomic_retrying

# The first version of a stage that existed before versions began: it holds for every earlier forecast.
SINCE_EVER = datetime(1990, 1, 1, tzinfo=UTC)


class StaleProbabilityError(ValidationError):
    """The stage's probability changed since the page showing it was loaded; nothing was written."""

    def __init__(self, current: int) -> None:
        self.current = current
        super().__init__(
            _("Someone changed this stage's probability to %(current)s %% meanwhile. Nothing was changed.")
            % {"current": current},
            code="stale",
        )


def default_forecast_category(kind: str, probability: int) -> str:
    """A stage's forecast category when nobody chose one: late stages commit, middle ones best case,
    early ones pipeline; a won stage commit (already closed), a lost one omitted."""
    if kind == PipelineStage.Kind.WON:
        return ForecastCategory.COMMIT
    if kind == PipelineStage.Kind.LOST:
        return ForecastCategory.OMITTED
    if probability >= 70:
        return ForecastCategory.COMMIT
    if probability >= 40:
        return ForecastCategory.BEST_CASE
    return ForecastCategory.PIPELINE


def stage_versions_seed(apps: Any = None) -> int:
    """Give every stage without a probability version its first one (valid since ever) and, being new to
    forecasting, its default forecast category. Idempotent; returns the versions written. ``apps``: a
    migration's historical models (default: today's); before the versions' migration it does nothing."""
    apps = apps or django_apps
    try:
        versions = apps.get_model("crm", "StageProbabilityVersion")
    except LookupError:
        return 0
    stages = apps.get_model("crm", "PipelineStage")
    new = list(stages.objects.filter(probability_versions__isnull=True).order_by("pk"))
    for stage in new:
        stage.forecast_category = default_forecast_category(stage.kind, stage.probability)
        stage.save(update_fields=["forecast_category"])
    versions.objects.bulk_create(
        versions(
            stage_id=stage.pk,
            probability=stage.probability,
            valid_from=SINCE_EVER,
            reason=StageProbabilityVersion.Reason.INITIAL,
        )
        for stage in new
    )
    return len(new)


@transaction.atomic
def stage_probability_record(
    *, stage: PipelineStage, actor: User | None, reason: str, at: datetime | None = None, note: str = ""
) -> StageProbabilityVersion | None:
    """After a stage was saved elsewhere (the admin's pipeline settings): a version of its probability
    when it differs from the latest one (or the stage has none yet). None when nothing changed."""
    latest = stage.probability_versions.order_by("-valid_from", "-id").first()
    if latest is not None and latest.probability == stage.probability:
        return None
    version = StageProbabilityVersion(
        stage=stage,
        probability=stage.probability,
        valid_from=at or timezone.now(),
        set_by=actor,
        reason=reason,
        note=note[:300],
    )
    version.full_clean()
    version.save()
    return version


@atomic_retrying
def stage_probability_set(
    *,
    stage_id: int,
    probability: int,
    expected: int,
    actor: User,
    reason: str = StageProbabilityVersion.Reason.CALIBRATION,
    note: str = "",
    at: datetime | None = None,
) -> StageProbabilityVersion:
    """Change an open stage's probability and record the version (the calibration's one click).

    Refused (StaleProbabilityError) when the stored probability is no longer ``expected``, the one the
    user saw: someone changed it meanwhile. Managers only. The stage's row is locked for the change, so
    two clicks at once give one change and one refusal.
    """
    if not actor.is_manager:
        raise ValidationError(_("Only managers change stage probabilities."), code="forbidden")
    try:
        stage = PipelineStage.objects.select_for_update().get(pk=stage_id)
    except PipelineStage.DoesNotExist:
        raise ValidationError({"stage": _("There is no such stage.")}) from None
    if stage.kind != PipelineStage.Kind.OPEN:
        raise ValidationError({"stage": _("Won and lost stages keep 100 % and 0 %.")})
    if stage.probability != expected:
        raise StaleProbabilityError(stage.probability)
    if not 0 <= probability <= 100:
        raise ValidationError({"probability": _("A probability is from 0 to 100 %.")})
    if probability == stage.probability:
        raise ValidationError({"probability": _("The stage has this probability already.")})
    stage.probability = probability
    stage.full_clean()
    stage.save(update_fields=["probability"])
    version = stage_probability_record(stage=stage, actor=actor, reason=reason, at=at, note=note)
    assert version is not None  # the probability changed
    return version
