"""NPS, CES and CSAT surveys sent as personal links (KPIS.md §1, §9.2).

A ``Survey`` is a definition (question texts per language, scale, trigger, cadence); a
``SurveyInvitation`` is one e-mail to one customer with a single-use link whose token is stored only as
its SHA-256; a ``SurveyResponse`` is the one answer an invitation can get.
"""

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Length
from django.db.models.lookups import LessThanOrEqual
from django.utils.translation import gettext_lazy as _

from accounts.dates import validate_date_in_range
from accounts.text import StorableJSONEncoder
from crm.models import Activity, Customer, Ticket

COMMENT_MAX_LENGTH = 5000
# Language codes of settings.LANGUAGES -> suffix of the per-language text fields.
TEXT_SUFFIX = {"en": "en", "zh-hans": "zh_hans"}
TEXT_FIELDS = (
    "question",
    "followup_negative",
    "followup_neutral",
    "followup_positive",
    "label_low",
    "label_high",
)


class Survey(models.Model):
    """A survey definition. Scales are fixed per kind so answers of one kind are always comparable."""

    class Kind(models.TextChoices):
        NPS = "nps", _("NPS")
        CES = "ces", _("CES")
        CSAT = "csat", _("CSAT")

    class NpsType(models.TextChoices):
        RELATIONSHIP = "relationship", _("Relationship NPS")
        TRANSACTIONAL = "transactional", _("Transactional NPS")

    class Trigger(models.TextChoices):
        TICKET_SOLVED = "ticket_solved", _("Ticket solved")
        PERIODIC = "periodic", _("Daily trickle")
        MANUAL = "manual", _("Manual campaign")

    # (scale_min, scale_max, negative_max, positive_min) of each kind: NPS detractors 0–6 / promoters
    # 9–10; CES 2.0 difficult 1–3 / easy 5–7; CSAT dissatisfied 1–2 / satisfied 4–5 (top-2-box).
    SCALES = {Kind.NPS: (0, 10, 6, 9), Kind.CES: (1, 7, 3, 5), Kind.CSAT: (1, 5, 2, 4)}

    name = models.CharField(_("name"), max_length=120, unique=True)
    kind = models.CharField(_("kind"), max_length=4, choices=Kind.choices)
    nps_type = models.CharField(
        _("NPS type"),
        max_length=13,
        choices=NpsType.choices,
        blank=True,
        help_text=_("Relationship and transactional NPS are reported apart, never pooled."),
    )
    trigger = models.CharField(_("sent when"), max_length=13, choices=Trigger.choices)
    scale_min = models.PositiveSmallIntegerField(_("lowest score"))
    scale_max = models.PositiveSmallIntegerField(_("highest score"))
    # Every supported scale reads "higher is better"; a lower-is-better scale would have to be flipped
    # before any aggregate (KPIS.md §2.3), so the constraint below refuses it.
    higher_is_better = models.BooleanField(_("higher is better"), default=True)
    negative_max = models.PositiveSmallIntegerField(
        _("negative up to"), help_text=_("Scores up to this one create a follow-up task for the owner.")
    )
    positive_min = models.PositiveSmallIntegerField(_("positive from"))
    delay_hours = models.PositiveSmallIntegerField(_("delay after the ticket is solved (hours)"), default=24)
    response_window_days = models.PositiveSmallIntegerField(_("link valid for (days)"), default=14)
    cadence_days = models.PositiveSmallIntegerField(
        _("ask a customer this kind of survey at most every (days)"), default=7
    )
    is_active = models.BooleanField(_("active"), default=True)

    question_en = models.CharField(_("question (English)"), max_length=300)
    question_zh_hans = models.CharField(_("question (Chinese)"), max_length=300)
    followup_negative_en = models.CharField(_("follow-up after a low score (English)"), max_length=300)
    followup_negative_zh_hans = models.CharField(_("follow-up after a low score (Chinese)"), max_length=300)
    followup_neutral_en = models.CharField(_("follow-up after a middle score (English)"), max_length=300)
    followup_neutral_zh_hans = models.CharField(_("follow-up after a middle score (Chinese)"), max_length=300)
    followup_positive_en = models.CharField(_("follow-up after a high score (English)"), max_length=300)
    followup_positive_zh_hans = models.CharField(_("follow-up after a high score (Chinese)"), max_length=300)
    label_low_en = models.CharField(_("label of the lowest score (English)"), max_length=60)
    label_low_zh_hans = models.CharField(_("label of the lowest score (Chinese)"), max_length=60)
    label_high_en = models.CharField(_("label of the highest score (English)"), max_length=60)
    label_high_zh_hans = models.CharField(_("label of the highest score (Chinese)"), max_length=60)

    created_at = models.DateTimeField(_("created at"), auto_now_add=True, validators=[validate_date_in_range])
    updated_at = models.DateTimeField(_("updated at"), auto_now=True, validators=[validate_date_in_range])

    class Meta:
        ordering = ["kind", "name"]
        verbose_name = _("survey")
        verbose_name_plural = _("surveys")
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="nps", scale_min=0, scale_max=10, negative_max=6, positive_min=9)
                | Q(kind="ces", scale_min=1, scale_max=7, negative_max=3, positive_min=5)
                | Q(kind="csat", scale_min=1, scale_max=5, negative_max=2, positive_min=4),
                name="survey_scale_of_kind",
            ),
            models.CheckConstraint(condition=Q(higher_is_better=True), name="survey_higher_is_better"),
            models.CheckConstraint(
                condition=(Q(kind="nps") & ~Q(nps_type="")) | (~Q(kind="nps") & Q(nps_type="")),
                name="survey_nps_type_iff_nps",
            ),
            models.CheckConstraint(
                condition=~Q(trigger="periodic") | Q(kind="nps", nps_type="relationship"),
                name="survey_periodic_is_relationship_nps",
            ),
            models.CheckConstraint(
                condition=Q(response_window_days__gte=1, response_window_days__lte=90),
                name="survey_window_1_90_days",
                violation_error_message=_("A link can be valid for 1 to 90 days."),
            ),
            models.CheckConstraint(
                condition=Q(cadence_days__lte=730),
                name="survey_cadence_max_2_years",
                violation_error_message=_("Ask at most every 730 days."),
            ),
            # One automatic survey per kind and trigger, or a solved ticket would be asked twice.
            models.UniqueConstraint(
                fields=["kind", "trigger"],
                condition=Q(is_active=True) & ~Q(trigger="manual"),
                name="survey_one_active_automatic_per_kind",
                violation_error_message=_(
                    "Another active survey of this kind is already sent automatically on this trigger. "
                    "Switch that one off first."
                ),
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def text(self, name: str, language: str, company: str = "") -> str:
        """A customer-facing text in ``language`` (English when that language's text is empty), with
        ``{company}`` replaced by the company name."""
        suffix = TEXT_SUFFIX.get(language, "en")
        value = getattr(self, f"{name}_{suffix}") or getattr(self, f"{name}_en")
        return value.replace("{company}", company)

    def bucket(self, score: int) -> str:
        """ "negative", "neutral" or "positive" (detractor/passive/promoter for NPS)."""
        if score <= self.negative_max:
            return "negative"
        if score >= self.positive_min:
            return "positive"
        return "neutral"

    @property
    def scores(self) -> range:
        return range(self.scale_min, self.scale_max + 1)


class SurveyCampaign(models.Model):
    """A manager's one-off send of a survey to the customers matching a filter."""

    class Status(models.TextChoices):
        QUEUED = "queued", _("Queued")
        DONE = "done", _("Sent")

    survey = models.ForeignKey(
        Survey, verbose_name=_("survey"), on_delete=models.PROTECT, related_name="campaigns"
    )
    filters = models.JSONField(_("filters"), default=dict, blank=True, encoder=StorableJSONEncoder)
    matched = models.PositiveIntegerField(_("customers matched at launch"), default=0)
    status = models.CharField(_("status"), max_length=6, choices=Status.choices, default=Status.QUEUED)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(_("created at"), validators=[validate_date_in_range])
    finished_at = models.DateTimeField(
        _("finished at"), null=True, blank=True, validators=[validate_date_in_range]
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("survey campaign")
        verbose_name_plural = _("survey campaigns")

    def __str__(self) -> str:
        return f"{self.survey} @ {self.created_at:%Y-%m-%d %H:%M}"


class SurveyInvitation(models.Model):
    """One survey e-mail to one customer. ``token_hash`` is set exactly when the link was e-mailed."""

    class Status(models.TextChoices):
        SCHEDULED = "scheduled", _("Scheduled")
        SENT = "sent", _("Sent")
        OPENED = "opened", _("Opened")
        PARTIAL = "partial", _("Scored, no comment yet")
        COMPLETED = "completed", _("Completed")
        EXPIRED = "expired", _("Expired")
        REVOKED = "revoked", _("Revoked")
        SUPPRESSED = "suppressed", _("Not sent")

    class Reason(models.TextChoices):
        NO_EMAIL = "no_email", _("no e-mail address")
        INTERNAL = "internal", _("internal or test customer")
        MERGED = "merged", _("merged duplicate")
        UNSUBSCRIBED = "unsubscribed", _("unsubscribed")
        BOUNCED = "bounced", _("e-mail bounced")
        COOLDOWN = "cooldown", _("surveyed recently (any survey)")
        CADENCE = "cadence", _("asked this kind of survey recently")
        REOPENED = "reopened", _("ticket reopened")
        SURVEY_INACTIVE = "survey_inactive", _("survey switched off")
        MANAGER = "manager", _("revoked by a manager")

    # Invitations that still wait for an answer (the link works).
    AWAITING = (Status.SENT, Status.OPENED)

    survey = models.ForeignKey(
        Survey, verbose_name=_("survey"), on_delete=models.PROTECT, related_name="invitations"
    )
    customer = models.ForeignKey(
        Customer, verbose_name=_("customer"), on_delete=models.PROTECT, related_name="survey_invitations"
    )
    ticket = models.ForeignKey(
        Ticket,
        verbose_name=_("ticket"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="survey_invitations",
    )
    campaign = models.ForeignKey(
        SurveyCampaign,
        verbose_name=_("campaign"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="invitations",
    )
    trigger = models.CharField(_("trigger"), max_length=13, choices=Survey.Trigger.choices)
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.SCHEDULED)
    suppression_reason = models.CharField(
        _("why not sent"), max_length=16, choices=Reason.choices, blank=True
    )
    email = models.EmailField(_("sent to"), blank=True)
    language = models.CharField(_("language"), max_length=10, blank=True)
    token_hash = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    # The reminder carries a second link (only hashes are stored, so the first one cannot be resent).
    reminder_token_hash = models.CharField(max_length=64, null=True, blank=True, unique=True, editable=False)
    created_at = models.DateTimeField(_("created at"), validators=[validate_date_in_range])
    scheduled_for = models.DateTimeField(_("scheduled for"), validators=[validate_date_in_range])
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True, validators=[validate_date_in_range])
    expires_at = models.DateTimeField(
        _("expires at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    opened_at = models.DateTimeField(
        _("first opened at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    started_at = models.DateTimeField(
        _("score submitted at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    completed_at = models.DateTimeField(
        _("completed at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    reminder_count = models.PositiveSmallIntegerField(_("reminders"), default=0)
    last_reminder_at = models.DateTimeField(
        _("reminded at"), null=True, blank=True, validators=[validate_date_in_range]
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("survey invitation")
        verbose_name_plural = _("survey invitations")
        constraints = [
            # One CES/CSAT per ticket and survey (Chatwoot: once per conversation).
            models.UniqueConstraint(fields=["survey", "ticket"], name="surveyinvitation_once_per_ticket"),
            models.UniqueConstraint(
                fields=["campaign", "customer"], name="surveyinvitation_once_per_campaign"
            ),
            models.CheckConstraint(
                condition=Q(status="suppressed", sent_at__isnull=True) | ~Q(status="suppressed"),
                name="surveyinvitation_suppressed_not_sent",
            ),
            models.CheckConstraint(
                condition=(Q(status__in=["suppressed", "revoked"]) & ~Q(suppression_reason=""))
                | (~Q(status__in=["suppressed", "revoked"]) & Q(suppression_reason="")),
                name="surveyinvitation_reason_iff_not_sent",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["scheduled", "suppressed"])
                | Q(sent_at__isnull=False, expires_at__isnull=False, token_hash__isnull=False)
                | Q(status="revoked"),
                name="surveyinvitation_sent_has_link",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=F("sent_at")),
                name="surveyinvitation_expires_after_sent",
            ),
            models.CheckConstraint(condition=Q(reminder_count__lte=1), name="surveyinvitation_one_reminder"),
            models.CheckConstraint(
                condition=~Q(trigger="ticket_solved") | Q(ticket__isnull=False),
                name="surveyinvitation_ticket_trigger_has_ticket",
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "-sent_at"], name="surveyinv_customer_sent"),
            models.Index(fields=["status", "scheduled_for"], name="surveyinv_status_scheduled"),
            models.Index(fields=["sent_at"], name="surveyinv_sent_at"),
            models.Index(fields=["survey", "created_at"], name="surveyinv_survey_created"),
            # The surveys page's funnel of the last 90 days, from this index alone.
            models.Index(
                fields=["created_at"],
                include=[
                    "status",
                    "sent_at",
                    "opened_at",
                    "started_at",
                    "reminder_count",
                    "suppression_reason",
                ],
                name="surveyinv_created",
            ),
            # The surveys page counts each survey's sent invitations from this index alone.
            models.Index(
                fields=["survey"], condition=Q(sent_at__isnull=False), name="surveyinv_sent_by_survey"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.survey} → {self.customer_id} ({self.status})"


class SurveyResponse(models.Model):
    """The answer to one invitation: the score counts as soon as it is submitted, the comment is optional."""

    invitation = models.OneToOneField(
        SurveyInvitation, verbose_name=_("invitation"), on_delete=models.PROTECT, related_name="response"
    )
    survey = models.ForeignKey(
        Survey, verbose_name=_("survey"), on_delete=models.PROTECT, related_name="responses"
    )
    customer = models.ForeignKey(
        Customer, verbose_name=_("customer"), on_delete=models.PROTECT, related_name="survey_responses"
    )
    # The account owner when the customer answered: satisfaction KPIs per owner use this, not today's owner.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # The agent assigned to the ticket the survey asked about, when the customer answered: CSAT and CES
    # per support agent use this (a ticket reassigned later does not move past answers).
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("support agent"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    score = models.SmallIntegerField(_("score"))
    # The survey's scale when the answer was given: lets the database itself refuse out-of-scale scores.
    scale_min = models.PositiveSmallIntegerField()
    scale_max = models.PositiveSmallIntegerField()
    comment = models.TextField(_("comment"), blank=True)
    score_submitted_at = models.DateTimeField(_("answered at"), validators=[validate_date_in_range])
    finished = models.BooleanField(_("finished"), default=False)
    finished_at = models.DateTimeField(
        _("finished at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    updated_at = models.DateTimeField(_("updated at"), validators=[validate_date_in_range])
    followup_task = models.OneToOneField(
        Activity,
        verbose_name=_("follow-up task"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="survey_response",
    )

    class Meta:
        ordering = ["-score_submitted_at", "-id"]
        verbose_name = _("survey response")
        verbose_name_plural = _("survey responses")
        constraints = [
            models.CheckConstraint(
                condition=Q(score__gte=F("scale_min"), score__lte=F("scale_max")),
                name="surveyresponse_score_in_scale",
            ),
            models.CheckConstraint(
                condition=Q(finished=False, finished_at__isnull=True)
                | Q(finished=True, finished_at__gte=F("score_submitted_at")),
                name="surveyresponse_finished_has_time",
            ),
            models.CheckConstraint(
                condition=LessThanOrEqual(Length("comment"), COMMENT_MAX_LENGTH),
                name="surveyresponse_comment_length",
            ),
        ]
        indexes = [
            models.Index(fields=["score_submitted_at"], name="surveyresp_submitted"),
            models.Index(fields=["customer", "-score_submitted_at"], name="surveyresp_customer"),
            models.Index(fields=["survey", "-score_submitted_at"], name="surveyresp_survey"),
        ]

    def __str__(self) -> str:
        return f"{self.survey}: {self.score} ({self.customer_id})"

    @property
    def bucket(self) -> str:
        return self.survey.bucket(self.score)


class SurveySuppression(models.Model):
    """A customer who must not get surveys any more (unsubscribed through a link, or a bounced address)."""

    class Reason(models.TextChoices):
        UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
        BOUNCED = "bounced", _("E-mail bounced")

    customer = models.OneToOneField(
        Customer, verbose_name=_("customer"), on_delete=models.CASCADE, related_name="survey_suppression"
    )
    reason = models.CharField(_("reason"), max_length=12, choices=Reason.choices)
    created_at = models.DateTimeField(_("since"), validators=[validate_date_in_range])
    invitation = models.ForeignKey(
        SurveyInvitation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("survey opt-out")
        verbose_name_plural = _("survey opt-outs")

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.reason}"
