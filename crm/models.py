from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import BrinIndex, GinIndex, OpClass
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, JSONField, Q, Value
from django.db.models.functions import Lower, Upper
from django.urls import reverse
from django.utils.translation import gettext, pgettext_lazy
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords

from accounts.dates import validate_date_in_range
from accounts.text import StorableJSONEncoder

MONEY = {"max_digits": 14, "decimal_places": 2}


class Source(models.TextChoices):
    """Acquisition channel of a customer or deal."""

    WEBSITE = "website", _("Website")
    REFERRAL = "referral", _("Referral")
    EVENT = "event", _("Event")
    OUTBOUND = "outbound", _("Outbound")
    PARTNER = "partner", _("Partner")
    ADS = "ads", _("Paid ads")
    OTHER = "other", _("Other")


class CompanySettings(models.Model):
    """The single row of company-wide inputs: name, go-live date and the CRM ROI assumptions."""

    company_name = models.CharField(_("company name"), max_length=200, default="Mini CRM")
    go_live_date = models.DateField(
        _("CRM go-live date"), null=True, blank=True, validators=[validate_date_in_range]
    )
    gross_margin_percent = models.DecimalField(
        _("gross margin %"),
        max_digits=5,
        decimal_places=2,
        default=Decimal("60"),
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )
    hours_saved_per_user_month = models.DecimalField(
        _("hours saved per user and month"), max_digits=6, decimal_places=2, default=Decimal("4")
    )
    loaded_hourly_rate = models.DecimalField(_("loaded hourly rate"), **MONEY, default=Decimal("45"))
    require_2fa_for_managers = models.BooleanField(
        _("require two-factor sign-in for managers and admins"), default=False
    )

    class Meta:
        verbose_name = _("company settings")
        verbose_name_plural = _("company settings")
        constraints = [
            models.CheckConstraint(condition=Q(pk=1), name="companysettings_singleton"),
            models.CheckConstraint(
                condition=Q(gross_margin_percent__gte=0, gross_margin_percent__lte=100),
                name="companysettings_margin_percent",
            ),
            models.CheckConstraint(
                condition=Q(hours_saved_per_user_month__gte=0, loaded_hourly_rate__gte=0),
                name="companysettings_benefits_nonneg",
            ),
        ]

    def __str__(self) -> str:
        return self.company_name

    @classmethod
    def load(cls) -> "CompanySettings":
        obj, _created = cls.objects.get_or_create(pk=1, defaults={"company_name": settings.CRM_COMPANY_NAME})
        return obj


class Customer(models.Model):
    class Kind(models.TextChoices):
        COMPANY = "company", _("Company")
        PERSON = "person", _("Person")

    class Status(models.TextChoices):
        LEAD = "lead", _("Lead")
        ACTIVE = "active", _("Active customer")
        CHURNED = "churned", _("Churned")

    class Segment(models.TextChoices):
        SMB = "smb", _("Small business")
        MID = "mid", _("Mid-market")
        ENTERPRISE = "enterprise", _("Enterprise")

    name = models.CharField(_("name"), max_length=200)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.COMPANY)
    email = models.EmailField(_("e-mail"), blank=True)
    phone = models.CharField(_("phone"), max_length=40, blank=True)
    industry = models.CharField(_("industry"), max_length=100, blank=True)
    city = models.CharField(_("city"), max_length=100, blank=True)
    segment = models.CharField(_("segment"), max_length=12, choices=Segment.choices, blank=True)
    language = models.CharField(
        _("language"),
        max_length=10,
        choices=settings.LANGUAGES,
        default="en",
        help_text=_("For surveys and e-mail."),
    )
    source = models.CharField(_("source"), max_length=12, choices=Source.choices, default=Source.OTHER)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("owner"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="customers",
    )
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.LEAD)
    created_at = models.DateTimeField(_("created at"), validators=[validate_date_in_range])
    updated_at = models.DateTimeField(_("updated at"), validators=[validate_date_in_range])
    # Optimistic locking: every write adds one; a form or API client sends the version it read. The
    # database default lets bulk writers (COPY in the demo) leave it out.
    version = models.PositiveIntegerField(default=1, db_default=1, editable=False)
    became_customer_at = models.DateTimeField(
        _("became a customer at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    churned_at = models.DateTimeField(
        _("churned at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    churn_reason = models.CharField(_("churn reason"), max_length=200, blank=True)
    is_internal = models.BooleanField(_("internal or test"), default=False)
    # First touch (KPIS.md §10.11): the campaign the customer came from; set on creation, editable.
    campaign = models.ForeignKey(
        "Campaign",
        verbose_name=pgettext_lazy("marketing", "campaign"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="customers",
        db_index=False,
    )
    # The company's own fields (crm.custom_fields): key → value, validated by custom_fields.services.
    custom = models.JSONField(
        _("custom fields"),
        default=dict,
        db_default=Value({}, JSONField()),
        blank=True,
        encoder=StorableJSONEncoder,
    )
    # Normalised match keys for duplicate detection, maintained by the services.
    email_key = models.CharField(max_length=254, blank=True, editable=False)
    phone_key = models.CharField(max_length=20, blank=True, editable=False)
    name_key = models.CharField(max_length=200, blank=True, editable=False)
    merged_into = models.ForeignKey(
        "self",
        verbose_name=_("merged into"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="merged_duplicates",
    )

    history = HistoricalRecords(excluded_fields=["email_key", "phone_key", "name_key", "updated_at"])

    class Meta:
        ordering = ["name", "id"]
        verbose_name = _("customer")
        verbose_name_plural = _("customers")
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="active") | Q(became_customer_at__isnull=False, churned_at__isnull=True),
                name="customer_active_has_start",
            ),
            models.CheckConstraint(
                condition=~Q(status="churned")
                | Q(became_customer_at__isnull=False, churned_at__isnull=False),
                name="customer_churned_has_dates",
            ),
            models.CheckConstraint(
                condition=Q(churned_at__isnull=True) | Q(churned_at__gte=F("became_customer_at")),
                name="customer_churn_after_start",
            ),
            models.CheckConstraint(
                condition=Q(became_customer_at__isnull=True) | Q(became_customer_at__gte=F("created_at")),
                name="customer_became_after_created",
            ),
            models.CheckConstraint(condition=~Q(merged_into=F("pk")), name="customer_not_merged_into_self"),
        ]
        indexes = [
            models.Index(fields=["owner", "name"], name="customer_owner_name"),
            models.Index(fields=["status"], name="customer_status"),
            models.Index(fields=["became_customer_at"], name="customer_became_at"),
            models.Index(fields=["churned_at"], name="customer_churned_at"),
            BrinIndex(fields=["created_at"], name="customer_created_brin"),
            models.Index(fields=["email_key"], condition=~Q(email_key=""), name="customer_email_key"),
            models.Index(fields=["phone_key"], condition=~Q(phone_key=""), name="customer_phone_key"),
            models.Index(fields=["name_key"], name="customer_name_key"),
            GinIndex(OpClass("name_key", "gin_trgm_ops"), name="customer_name_key_trgm"),
            GinIndex(OpClass(Upper("name"), "gin_trgm_ops"), name="customer_name_upper_trgm"),
            models.Index(fields=["name", "id"], name="customer_name_id"),
            # The duplicate rate's shared keys among live customers (metrics.kpis.data_quality).
            models.Index(
                fields=["email_key"],
                condition=~Q(email_key="") & Q(merged_into__isnull=True, is_internal=False),
                name="customer_live_email_key",
            ),
            models.Index(
                fields=["phone_key"],
                condition=~Q(phone_key="") & Q(merged_into__isnull=True, is_internal=False),
                name="customer_live_phone_key",
            ),
            # The few customers every KPI leaves out (metrics.kpis.shared.live).
            models.Index(
                fields=["id"],
                condition=Q(merged_into__isnull=False) | Q(is_internal=True),
                name="customer_excluded",
            ),
            models.Index(fields=["-updated_at"], name="customer_updated"),
            GinIndex(fields=["custom"], name="customer_custom"),
            # The few customers a campaign brought (attribution, the campaign filter).
            models.Index(fields=["campaign"], condition=Q(campaign__isnull=False), name="customer_campaign"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("crm:customer_detail", args=[self.pk])


class CustomerStatusChange(models.Model):
    """Every status change of a customer: the history behind as-of counts, churn and retention."""

    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=10, choices=Customer.Status.choices, blank=True)
    to_status = models.CharField(max_length=10, choices=Customer.Status.choices)
    at = models.DateTimeField(validators=[validate_date_in_range])
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["customer", "at", "id"]
        verbose_name = _("customer status change")
        verbose_name_plural = _("customer status changes")
        constraints = [
            models.CheckConstraint(
                condition=~Q(from_status=F("to_status")), name="customerstatus_changes_status"
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "at"], name="customerstatus_customer_at"),
            models.Index(fields=["to_status", "at"], name="customerstatus_to_at"),
            models.Index(fields=["at"], name="customerstatus_at"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_id}: {self.from_status or '∅'} → {self.to_status} @ {self.at:%Y-%m-%d}"


class Pipeline(models.Model):
    name = models.CharField(_("name"), max_length=100, unique=True)
    is_default = models.BooleanField(_("default"), default=False)

    class Meta:
        ordering = ["-is_default", "name"]
        verbose_name = _("pipeline")
        verbose_name_plural = _("pipelines")
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=Q(is_default=True), name="pipeline_one_default"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class ForecastCategory(models.TextChoices):
    """Where a deal stands in the forecast (KPIS.md §4, §10.6): commit and best case are the rep's call,
    pipeline the rest, omitted left out of the category sums."""

    COMMIT = "commit", _("Commit")
    BEST_CASE = "best_case", _("Best case")
    PIPELINE = "pipeline", _("Pipeline")
    OMITTED = "omitted", _("Omitted")


class PipelineStage(models.Model):
    class Kind(models.TextChoices):
        OPEN = "open", _("Open")
        WON = "won", _("Won")
        LOST = "lost", _("Lost")

    pipeline = models.ForeignKey(
        Pipeline, verbose_name=_("pipeline"), on_delete=models.PROTECT, related_name="stages"
    )
    name = models.CharField(_("name"), max_length=100)
    order = models.PositiveSmallIntegerField(_("order"))
    probability = models.PositiveSmallIntegerField(
        _("probability %"), validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    kind = models.CharField(_("kind"), max_length=5, choices=Kind.choices, default=Kind.OPEN)
    rotting_days = models.PositiveSmallIntegerField(
        _("rotting after (days)"),
        default=14,
        db_default=14,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text=_(
            "An open deal in this stage with no activity, stage move or edit for longer than this is rotting."
        ),
    )
    forecast_category = models.CharField(
        _("forecast category"),
        max_length=10,
        choices=ForecastCategory.choices,
        default=ForecastCategory.PIPELINE,
        db_default=ForecastCategory.PIPELINE,
        help_text=_("The forecast category of the stage's deals, unless a deal sets its own."),
    )

    class Meta:
        ordering = ["pipeline", "order"]
        verbose_name = _("pipeline stage")
        verbose_name_plural = _("pipeline stages")
        constraints = [
            models.UniqueConstraint(fields=["pipeline", "order"], name="stage_unique_order"),
            models.UniqueConstraint(fields=["pipeline", "name"], name="stage_unique_name"),
            models.UniqueConstraint(
                fields=["pipeline"], condition=Q(kind="won"), name="stage_one_won_per_pipeline"
            ),
            models.UniqueConstraint(
                fields=["pipeline"], condition=Q(kind="lost"), name="stage_one_lost_per_pipeline"
            ),
            models.CheckConstraint(
                condition=Q(probability__gte=0, probability__lte=100), name="stage_probability_0_100"
            ),
            models.CheckConstraint(
                condition=~Q(kind="won") | Q(probability=100), name="stage_won_probability_100"
            ),
            models.CheckConstraint(
                condition=~Q(kind="lost") | Q(probability=0), name="stage_lost_probability_0"
            ),
            models.CheckConstraint(
                condition=Q(forecast_category__in=ForecastCategory.values), name="stage_forecast_category"
            ),
        ]

    def __str__(self) -> str:
        # The seeded default stage names are in the translation catalogue; custom names come back unchanged.
        return gettext(self.name)


class Deal(models.Model):
    class Kind(models.TextChoices):
        NEW = "new", _("New business")
        RENEWAL = "renewal", _("Renewal")
        UPSELL = "upsell", _("Upsell")

    class Status(models.TextChoices):
        """Denormalised from the stage kind so KPI scans and partial indexes need no join."""

        OPEN = "open", _("Open")
        WON = "won", _("Won")
        LOST = "lost", _("Lost")

    customer = models.ForeignKey(
        Customer, verbose_name=_("customer"), on_delete=models.PROTECT, related_name="deals"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("owner"), on_delete=models.PROTECT, related_name="deals"
    )
    title = models.CharField(_("title"), max_length=200)
    amount = models.DecimalField(
        _("amount"), **MONEY, null=True, blank=True, validators=[MinValueValidator(0)]
    )
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices, default=Kind.NEW)
    stage = models.ForeignKey(
        PipelineStage, verbose_name=_("stage"), on_delete=models.PROTECT, related_name="deals"
    )
    status = models.CharField(
        _("status"), max_length=5, choices=Status.choices, default=Status.OPEN, editable=False
    )
    probability = models.PositiveSmallIntegerField(
        _("probability override %"),
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
    )
    source = models.CharField(_("source"), max_length=12, choices=Source.choices, default=Source.OTHER)
    # Last touch (KPIS.md §10.11): the campaign that last touched the customer before the deal was created,
    # taken from the customer's touches then; editable.
    campaign = models.ForeignKey(
        "Campaign",
        verbose_name=pgettext_lazy("marketing", "campaign"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="deals",
        db_index=False,
    )
    expected_close_date = models.DateField(
        _("expected close date"), null=True, blank=True, validators=[validate_date_in_range]
    )
    created_at = models.DateTimeField(_("created at"), validators=[validate_date_in_range])
    updated_at = models.DateTimeField(_("updated at"), validators=[validate_date_in_range])
    closed_at = models.DateTimeField(
        _("closed at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    lost_reason = models.CharField(_("lost reason"), max_length=200, blank=True)
    # Empty: the stage's category (``effective_forecast_category``). The database default lets bulk
    # writers (COPY in the demo) leave it out.
    forecast_category = models.CharField(
        _("forecast category"),
        max_length=10,
        choices=ForecastCategory.choices,
        blank=True,
        default="",
        db_default="",
        help_text=_("Leave empty to use the stage's category."),
    )
    # The company's own fields (crm.custom_fields): key → value, validated by custom_fields.services.
    custom = models.JSONField(
        _("custom fields"),
        default=dict,
        db_default=Value({}, JSONField()),
        blank=True,
        encoder=StorableJSONEncoder,
    )
    # Subscription term bought by a won deal; a renewal deal points at the deal it renews.
    term_start = models.DateField(_("term start"), null=True, blank=True, validators=[validate_date_in_range])
    term_end = models.DateField(_("term end"), null=True, blank=True, validators=[validate_date_in_range])
    renewal_of = models.ForeignKey(
        "self",
        verbose_name=_("renews"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="renewals",
    )
    version = models.PositiveIntegerField(default=1, editable=False)
    # The latest stage move or activity logged on the deal (services keep it): staleness at a glance.
    last_activity_at = models.DateTimeField(
        _("last activity"), null=True, blank=True, editable=False, validators=[validate_date_in_range]
    )

    history = HistoricalRecords(excluded_fields=["updated_at", "last_activity_at"])

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("deal")
        verbose_name_plural = _("deals")
        constraints = [
            models.CheckConstraint(
                condition=Q(amount__isnull=True) | Q(amount__gte=0), name="deal_amount_nonneg"
            ),
            models.CheckConstraint(
                condition=Q(probability__isnull=True) | Q(probability__gte=0, probability__lte=100),
                name="deal_probability_0_100",
            ),
            models.CheckConstraint(
                condition=Q(closed_at__isnull=True) | Q(closed_at__gte=F("created_at")),
                name="deal_close_after_open",
            ),
            models.CheckConstraint(
                condition=Q(status="open", closed_at__isnull=True)
                | (~Q(status="open") & Q(closed_at__isnull=False)),
                name="deal_closed_iff_has_date",
            ),
            models.CheckConstraint(
                condition=~Q(status="lost") | ~Q(lost_reason=""), name="deal_lost_has_reason"
            ),
            models.CheckConstraint(
                condition=Q(term_start__isnull=True)
                | Q(term_end__isnull=True)
                | Q(term_end__gt=F("term_start")),
                name="deal_term_ends_after_start",
            ),
            models.CheckConstraint(condition=Q(version__gte=1), name="deal_version_positive"),
            models.CheckConstraint(
                condition=Q(forecast_category__in=["", *ForecastCategory.values]),
                name="deal_forecast_category",
            ),
        ]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="deal_owner_created"),
            GinIndex(fields=["custom"], name="deal_custom"),
            # The data-quality rules that almost nothing breaks (crm.data.quality, same conditions: a test
            # compares them): their lists and counts read a tiny index instead of every deal.
            models.Index(
                fields=["id"],
                condition=Q(status="open") & Q(expected_close_date__isnull=True),
                name="dq_deal_open_close_date",
            ),
            models.Index(
                fields=["id"],
                condition=Q(status="won") & Q(closed_at__isnull=True),
                name="dq_deal_won_close_date",
            ),
            models.Index(fields=["id"], condition=Q(amount__lt=0), name="dq_deal_amount_nonneg"),
            models.Index(
                fields=["id"], condition=Q(closed_at__lt=F("created_at")), name="dq_deal_closed_after_created"
            ),
            models.Index(
                fields=["id"], condition=Q(term_end__lte=F("term_start")), name="dq_deal_term_order"
            ),
            # A rep's open deals by stage; what the KPI engine reads of every open deal on each run (the
            # pipeline, forecast, staleness and rotting of the current period: rotting reads when the deal
            # was last touched, updated_at among them) rides along for index-only scans.
            models.Index(
                fields=["owner", "stage"],
                include=[
                    "customer",
                    "amount",
                    "probability",
                    "expected_close_date",
                    "created_at",
                    "last_activity_at",
                    "updated_at",
                ],
                condition=Q(status="open"),
                name="deal_open_owner",
            ),
            # The board: per-stage sums read from the index alone, and each stage's largest deals.
            models.Index(
                fields=["stage"], include=["amount"], condition=Q(status="open"), name="deal_open_stage"
            ),
            models.Index(
                F("stage"),
                F("amount").desc(nulls_last=True),
                F("id"),
                condition=Q(status="open"),
                name="deal_open_stage_amount",
            ),
            # A rep's open deals are found through their customers: stage and amount ride along so the
            # board's sums are an index-only scan.
            models.Index(
                fields=["customer"],
                include=["stage", "amount"],
                condition=Q(status="open"),
                name="deal_open_customer",
            ),
            models.Index(fields=["-created_at", "-id"], name="deal_created_id"),
            models.Index(fields=["status", "closed_at"], name="deal_status_closed"),
            models.Index(fields=["term_end"], condition=Q(status="won"), name="deal_won_term_end"),
            # Revenue won per owner over a span of time, read from the index alone.
            models.Index(
                fields=["closed_at"],
                include=["owner", "amount", "customer"],
                condition=Q(status="won"),
                name="deal_won_closed",
            ),
            # Deals changed since the last KPI run (metrics.kpis.facts).
            models.Index(fields=["updated_at"], name="deal_updated_at"),
            # The few deals a campaign touched: their list, and revenue won per campaign from the index alone.
            models.Index(fields=["campaign"], condition=Q(campaign__isnull=False), name="deal_campaign"),
            models.Index(
                fields=["closed_at"],
                include=["campaign", "amount"],
                condition=Q(status="won") & Q(campaign__isnull=False),
                name="deal_won_campaign",
            ),
            # No BRIN on created_at: deals are not stored in creation order (correlation 0.52 at 1 M deals),
            # so it removed 941 008 of 1 004 489 rows by recheck for a month's 63 481; deal_created_id serves.
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("crm:deal_detail", args=[self.pk])

    @property
    def effective_probability(self) -> int:
        if self.status == self.Status.WON:
            return 100
        if self.status == self.Status.LOST:
            return 0
        return self.probability if self.probability is not None else self.stage.probability

    @property
    def effective_forecast_category(self) -> str:
        """The deal's own forecast category, else its stage's."""
        return self.forecast_category or self.stage.forecast_category

    def get_effective_forecast_category_display(self) -> str:
        return str(ForecastCategory(self.effective_forecast_category).label)


class DealStageChange(models.Model):
    deal = models.ForeignKey(Deal, on_delete=models.CASCADE, related_name="stage_changes")
    from_stage = models.ForeignKey(
        PipelineStage, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    to_stage = models.ForeignKey(PipelineStage, on_delete=models.PROTECT, related_name="+")
    at = models.DateTimeField(validators=[validate_date_in_range])
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["deal", "at", "id"]
        verbose_name = _("deal stage change")
        verbose_name_plural = _("deal stage changes")
        indexes = [
            models.Index(fields=["deal", "at"], name="dealstage_deal_at"),
            models.Index(fields=["at"], name="dealstage_at"),
        ]

    def __str__(self) -> str:
        return f"{self.deal_id}: {self.from_stage_id} → {self.to_stage_id} @ {self.at:%Y-%m-%d}"


class SlaPolicy(models.Model):
    """Service-level targets for one ticket priority, in calendar hours."""

    priority = models.CharField(_("priority"), max_length=10, unique=True)
    first_response_hours = models.PositiveIntegerField(_("first response within (hours)"))
    resolution_hours = models.PositiveIntegerField(_("resolution within (hours)"))

    class Meta:
        ordering = ["first_response_hours"]
        verbose_name = _("SLA policy")
        verbose_name_plural = _("SLA policies")
        constraints = [
            models.CheckConstraint(
                condition=Q(first_response_hours__gt=0, resolution_hours__gte=F("first_response_hours")),
                name="sla_hours_sensible",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.priority}: {self.first_response_hours} h / {self.resolution_hours} h"


class Ticket(models.Model):
    class Priority(models.TextChoices):
        LOW = "low", _("Low")
        NORMAL = "normal", _("Normal")
        HIGH = "high", _("High")
        URGENT = "urgent", _("Urgent")

    class Status(models.TextChoices):
        NEW = "new", _("New")
        OPEN = "open", _("Open")
        PENDING = "pending", _("Pending")
        SOLVED = "solved", _("Solved")
        CLOSED = "closed", _("Closed")

    class Category(models.TextChoices):
        QUESTION = "question", _("Question")
        PROBLEM = "problem", _("Problem")
        COMPLAINT = "complaint", _("Complaint")
        REQUEST = "request", _("Request")

    class Channel(models.TextChoices):
        EMAIL = "email", _("E-mail")
        PHONE = "phone", _("Phone")
        WEB = "web", _("Web form")
        CHAT = "chat", _("Chat")

    UNSOLVED = (Status.NEW, Status.OPEN, Status.PENDING)

    customer = models.ForeignKey(
        Customer, verbose_name=_("customer"), on_delete=models.PROTECT, related_name="tickets"
    )
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("assignee"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="assigned_tickets",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    subject = models.CharField(_("subject"), max_length=200)
    description = models.TextField(_("description"), blank=True)
    priority = models.CharField(
        _("priority"), max_length=10, choices=Priority.choices, default=Priority.NORMAL
    )
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.NEW)
    category = models.CharField(
        _("category"), max_length=10, choices=Category.choices, default=Category.QUESTION
    )
    channel = models.CharField(_("channel"), max_length=10, choices=Channel.choices, default=Channel.EMAIL)
    is_spam = models.BooleanField(_("spam"), default=False)
    # The company's own fields (crm.custom_fields): key → value, validated by custom_fields.services.
    custom = models.JSONField(
        _("custom fields"),
        default=dict,
        db_default=Value({}, JSONField()),
        blank=True,
        encoder=StorableJSONEncoder,
    )
    created_at = models.DateTimeField(_("created at"), validators=[validate_date_in_range])
    updated_at = models.DateTimeField(_("updated at"), validators=[validate_date_in_range])
    first_response_at = models.DateTimeField(
        _("first response at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    first_solved_at = models.DateTimeField(
        _("first solved at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    solved_at = models.DateTimeField(
        _("solved at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    closed_at = models.DateTimeField(
        _("closed at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    reopen_count = models.PositiveSmallIntegerField(_("reopened"), default=0)
    first_response_due_at = models.DateTimeField(
        _("first response due"), null=True, blank=True, validators=[validate_date_in_range]
    )
    resolution_due_at = models.DateTimeField(
        _("resolution due"), null=True, blank=True, validators=[validate_date_in_range]
    )

    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("ticket")
        verbose_name_plural = _("tickets")
        constraints = [
            models.CheckConstraint(
                condition=Q(first_response_at__isnull=True) | Q(first_response_at__gte=F("created_at")),
                name="ticket_response_after_created",
            ),
            models.CheckConstraint(
                condition=Q(first_solved_at__isnull=True) | Q(first_solved_at__gte=F("created_at")),
                name="ticket_first_solved_after_created",
            ),
            models.CheckConstraint(
                condition=Q(solved_at__isnull=True) | Q(solved_at__gte=F("first_solved_at")),
                name="ticket_solved_after_first_solved",
            ),
            models.CheckConstraint(
                condition=Q(closed_at__isnull=True) | Q(closed_at__gte=F("created_at")),
                name="ticket_closed_after_created",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["solved", "closed"]) | Q(solved_at__isnull=False) | Q(is_spam=True),
                name="ticket_solved_has_time",
            ),
            models.CheckConstraint(
                condition=~Q(status="closed") | Q(closed_at__isnull=False), name="ticket_closed_has_time"
            ),
            models.CheckConstraint(
                condition=Q(solved_at__isnull=True) | Q(first_solved_at__isnull=False),
                name="ticket_solved_implies_first_solved",
            ),
        ]
        indexes = [
            models.Index(fields=["assignee", "status"], name="ticket_assignee_status"),
            GinIndex(fields=["custom"], name="ticket_custom"),
            # Data-quality rules almost nothing breaks (as for deals).
            models.Index(
                fields=["id"],
                condition=Q(status__in=["solved", "closed"]) & Q(solved_at__isnull=True),
                name="dq_ticket_solved_time",
            ),
            models.Index(
                fields=["id"],
                condition=Q(closed_at__lt=F("created_at")),
                name="dq_ticket_closed_after_created",
            ),
            models.Index(
                fields=["id"],
                condition=Q(solved_at__lt=F("created_at")),
                name="dq_ticket_solved_after_created",
            ),
            models.Index(
                fields=["status"], condition=Q(status__in=["new", "open", "pending"]), name="ticket_unsolved"
            ),
            # The backlog's records at a period's end: those not closed yet, or closed after it.
            models.Index(fields=["id"], condition=~Q(status="closed"), name="ticket_not_closed"),
            models.Index(fields=["closed_at"], name="ticket_closed_at"),
            # The open-tickets queue, soonest due first: without it the plan walks every ticket ever by
            # due time to find the few unsolved ones (150 ms at 370 000 tickets).
            models.Index(
                F("resolution_due_at"),
                F("id").desc(),
                condition=Q(status__in=["new", "open", "pending"]),
                name="ticket_unsolved_due",
            ),
            models.Index(fields=["customer"], name="ticket_customer"),
            models.Index(fields=["solved_at"], name="ticket_solved_at"),
            models.Index(fields=["first_response_at"], name="ticket_first_response_at"),
            # The KPI facts re-read tickets by each of their times (metrics.kpis.facts).
            models.Index(fields=["created_at"], name="ticket_created_at"),
            models.Index(fields=["updated_at"], name="ticket_updated_at"),
            models.Index(fields=["first_solved_at"], name="ticket_first_solved_at"),
            models.Index(fields=["first_response_due_at"], name="ticket_first_response_due"),
            models.Index(fields=["resolution_due_at"], name="ticket_resolution_due"),
        ]

    def __str__(self) -> str:
        return self.subject

    def get_absolute_url(self) -> str:
        return reverse("crm:ticket_detail", args=[self.pk])


class TicketStatusChange(models.Model):
    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=10, choices=Ticket.Status.choices, blank=True)
    to_status = models.CharField(max_length=10, choices=Ticket.Status.choices)
    at = models.DateTimeField(validators=[validate_date_in_range])
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["ticket", "at", "id"]
        verbose_name = _("ticket status change")
        verbose_name_plural = _("ticket status changes")
        constraints = [
            models.CheckConstraint(
                condition=~Q(from_status=F("to_status")), name="ticketstatus_changes_status"
            ),
        ]
        indexes = [
            models.Index(fields=["ticket", "at"], name="ticketstatus_ticket_at"),
            models.Index(fields=["at"], name="ticketstatus_at"),
        ]

    def __str__(self) -> str:
        return f"{self.ticket_id}: {self.from_status or '∅'} → {self.to_status} @ {self.at:%Y-%m-%d}"


class TicketMessage(models.Model):
    """A reply on a ticket: public replies reach the customer, internal notes do not."""

    ticket = models.ForeignKey(Ticket, on_delete=models.CASCADE, related_name="messages")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField(_("message"))
    is_public = models.BooleanField(_("public reply"), default=True)
    created_at = models.DateTimeField(_("created at"), validators=[validate_date_in_range])

    class Meta:
        ordering = ["ticket", "created_at", "id"]
        verbose_name = _("ticket message")
        verbose_name_plural = _("ticket messages")
        indexes = [models.Index(fields=["ticket", "created_at"], name="ticketmessage_ticket_at")]

    def __str__(self) -> str:
        return f"{self.ticket_id} @ {self.created_at:%Y-%m-%d %H:%M}"


class Activity(models.Model):
    class Kind(models.TextChoices):
        CALL = "call", _("Call")
        EMAIL = "email", _("E-mail")
        MEETING = "meeting", _("Meeting")
        NOTE = "note", _("Note")
        TASK = "task", _("Task")

    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    subject = models.CharField(_("subject"), max_length=200)
    notes = models.TextField(_("notes"), blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.PROTECT, related_name="activities"
    )
    customer = models.ForeignKey(
        Customer, verbose_name=_("customer"), on_delete=models.CASCADE, related_name="activities"
    )
    deal = models.ForeignKey(
        Deal,
        verbose_name=_("deal"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="activities",
    )
    ticket = models.ForeignKey(
        Ticket,
        verbose_name=_("ticket"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="activities",
    )
    created_at = models.DateTimeField(_("created at"), validators=[validate_date_in_range])
    due_at = models.DateTimeField(_("due at"), null=True, blank=True, validators=[validate_date_in_range])
    done_at = models.DateTimeField(_("done at"), null=True, blank=True, validators=[validate_date_in_range])
    # The company's own fields (crm.custom_fields): key → value, validated by custom_fields.services.
    custom = models.JSONField(
        _("custom fields"),
        default=dict,
        db_default=Value({}, JSONField()),
        blank=True,
        encoder=StorableJSONEncoder,
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("activity")
        verbose_name_plural = _("activities")
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="task") | Q(due_at__isnull=True), name="activity_only_tasks_due"
            ),
            models.CheckConstraint(
                condition=Q(done_at__isnull=True) | Q(done_at__gte=F("created_at")),
                name="activity_done_after_created",
            ),
        ]
        indexes = [
            models.Index(fields=["customer", "-created_at"], name="activity_customer_created"),
            # The API's activity list, newest first, a keyset page at a time.
            models.Index(fields=["-created_at", "-id"], name="activity_created"),
            models.Index(fields=["user", "-created_at"], name="activity_user_created"),
            models.Index(
                fields=["user", "due_at"],
                condition=Q(kind="task", done_at__isnull=True),
                name="activity_open_tasks",
            ),
            # Every open task by due date: the open survey follow-ups (a few percent of them) in due order,
            # and their count, without reading the table.
            models.Index(
                fields=["due_at", "id"],
                condition=Q(kind="task", done_at__isnull=True),
                name="activity_open_tasks_due",
            ),
            # No BRIN on created_at either (correlation 0.51): activity_created serves ranges.
            GinIndex(fields=["custom"], name="activity_custom"),
        ]

    def __str__(self) -> str:
        return self.subject


class SpendEntry(models.Model):
    """Money spent in one month, by category and channel: the input to CAC and retention cost."""

    class Category(models.TextChoices):
        MARKETING = "marketing", _("Marketing")
        SALES = "sales", _("Sales")
        RETENTION = "retention", _("Retention")
        CRM = "crm", _("CRM (licences, hosting, admin)")

    month = models.DateField(
        _("month"), help_text=_("First day of the month."), validators=[validate_date_in_range]
    )
    category = models.CharField(_("category"), max_length=10, choices=Category.choices)
    channel = models.CharField(_("channel"), max_length=12, choices=Source.choices, blank=True)
    amount = models.DecimalField(_("amount"), **MONEY, validators=[MinValueValidator(0)])
    note = models.CharField(_("note"), max_length=200, blank=True)

    class Meta:
        ordering = ["-month", "category", "channel"]
        verbose_name = _("spend entry")
        verbose_name_plural = _("spend entries")
        constraints = [
            models.UniqueConstraint(
                fields=["month", "category", "channel"], name="spend_unique_month_category_channel"
            ),
            models.CheckConstraint(condition=Q(amount__gte=0), name="spend_amount_nonneg"),
            models.CheckConstraint(condition=Q(month__day=1), name="spend_month_first_day"),
        ]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} {self.category} {self.channel} {self.amount}"


class CrmCostItem(models.Model):
    """A cost of running the CRM (implementation, training, licences): the cost side of CRM ROI."""

    class Kind(models.TextChoices):
        ONE_OFF = "one_off", _("One-off")
        MONTHLY = "monthly", _("Monthly")

    name = models.CharField(_("name"), max_length=200)
    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    amount = models.DecimalField(_("amount"), **MONEY, validators=[MinValueValidator(0)])
    start_month = models.DateField(_("from month"), validators=[validate_date_in_range])
    end_month = models.DateField(_("until month"), null=True, blank=True, validators=[validate_date_in_range])

    class Meta:
        ordering = ["start_month", "name"]
        verbose_name = _("CRM cost item")
        verbose_name_plural = _("CRM cost items")
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="crmcost_amount_nonneg"),
            models.CheckConstraint(
                condition=Q(end_month__isnull=True) | Q(end_month__gte=F("start_month")),
                name="crmcost_end_after_start",
            ),
        ]

    def __str__(self) -> str:
        return self.name


# Campaigns and attribution (KPIS.md §10.11)
# ---------------------------------------------------------------------------------------------------------


class Campaign(models.Model):
    """A marketing campaign: its channel, the days it runs (both included) and what it cost.

    The cost is spread evenly over the days it runs (``metrics.kpis.campaigns``). Archived campaigns leave
    the pickers but keep their customers, deals and figures.
    """

    name = models.CharField(_("name"), max_length=200)
    channel = models.CharField(_("channel"), max_length=12, choices=Source.choices, default=Source.OTHER)
    start = models.DateField(_("first day"), validators=[validate_date_in_range])
    end = models.DateField(_("last day"), validators=[validate_date_in_range])
    cost = models.DecimalField(_("cost"), **MONEY, default=Decimal(0), validators=[MinValueValidator(0)])
    note = models.CharField(_("note"), max_length=500, blank=True)
    is_archived = models.BooleanField(_("archived"), default=False)
    created_at = models.DateTimeField(_("created at"), validators=[validate_date_in_range])
    updated_at = models.DateTimeField(_("updated at"), validators=[validate_date_in_range])
    # Optimistic locking, as for customers and deals: every write adds one.
    version = models.PositiveIntegerField(default=1, editable=False)

    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        ordering = ["-start", "name", "id"]
        verbose_name = pgettext_lazy("marketing", "campaign")
        verbose_name_plural = pgettext_lazy("marketing", "campaigns")
        constraints = [
            # Imports and the customer and deal columns find a campaign by its name, whatever its case.
            models.UniqueConstraint(Lower("name"), name="campaign_unique_name"),
            models.CheckConstraint(condition=Q(end__gte=F("start")), name="campaign_end_after_start"),
            models.CheckConstraint(condition=Q(cost__gte=0), name="campaign_cost_nonneg"),
            models.CheckConstraint(condition=Q(version__gte=1), name="campaign_version_positive"),
        ]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("crm:campaign_detail", args=[self.pk])

    @property
    def days(self) -> int:
        """The days it runs, the first and the last included."""
        return (self.end - self.start).days + 1


class CampaignTouch(models.Model):
    """A campaign reached a customer at ``at``: written when a customer is associated with a campaign (the
    form, an import, the API; a new customer's at its creation time). A deal's last-touch campaign is the
    customer's latest touch at or before the deal's creation. A touch that repeats the customer's latest
    campaign is not written again: each touch is a campaign taking over as the customer's latest."""

    class Via(models.TextChoices):
        WEB = "web", _("web")
        IMPORT = "import", _("import")
        API = "api", _("API")
        SYSTEM = "system", _("system")

    customer = models.ForeignKey(
        Customer, verbose_name=_("customer"), on_delete=models.CASCADE, related_name="campaign_touches"
    )
    campaign = models.ForeignKey(
        Campaign,
        verbose_name=pgettext_lazy("marketing", "campaign"),
        on_delete=models.PROTECT,
        related_name="touches",
    )
    at = models.DateTimeField(_("at"), validators=[validate_date_in_range])
    via = models.CharField(_("via"), max_length=6, choices=Via.choices, default=Via.WEB)
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["customer", "at", "id"]
        verbose_name = _("campaign touch")
        verbose_name_plural = _("campaign touches")
        indexes = [
            # A customer's latest touch before an instant (a new deal's last-touch campaign).
            models.Index(fields=["customer", "at"], name="campaigntouch_customer_at"),
            models.Index(fields=["campaign", "at"], name="campaigntouch_campaign_at"),
            models.Index(fields=["at"], name="campaigntouch_at"),
        ]

    def __str__(self) -> str:
        return f"{self.customer} ← {self.campaign} ({self.at:%Y-%m-%d})"

    def get_absolute_url(self) -> str:
        return reverse("crm:customer_detail", args=[self.customer_id])


# Data quality: imports, duplicates and merges (issue 7)
# ---------------------------------------------------------------------------------------------------------


class ImportJobQuerySet(models.QuerySet):
    def without_content(self) -> "ImportJobQuerySet":
        return self.defer("content")


class ImportJob(models.Model):
    """One uploaded CSV/XLSX file on its way into the CRM: mapping, preview, run and report.

    The file itself is kept in the database (``content``), so a Celery worker on another host can read
    it; it is emptied once the job has finished. Pages load jobs ``without_content()``.
    """

    class Kind(models.TextChoices):
        CUSTOMERS = "customers", _("Customers")
        DEALS = "deals", _("Deals")
        TICKETS = "tickets", _("Tickets")
        CAMPAIGNS = "campaigns", pgettext_lazy("marketing", "Campaigns")

    class Mode(models.TextChoices):
        CREATE = "create", _("Create new records only")
        UPDATE = "update", _("Update existing records only")
        BOTH = "both", _("Create new and update existing records")

    class Status(models.TextChoices):
        UPLOADED = "uploaded", _("Uploaded")
        QUEUED = "queued", _("Queued")
        DONE = "done", _("Finished")
        FAILED = "failed", _("Failed")

    class DateOrder(models.TextChoices):
        DMY = "dmy", _("Day before month (31.12.2026, 31/12/2026)")
        MDY = "mdy", _("Month before day (12/31/2026)")

    kind = models.CharField(_("kind"), max_length=10, choices=Kind.choices)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("uploaded by"), on_delete=models.CASCADE, related_name="+"
    )
    created_at = models.DateTimeField(_("uploaded at"), validators=[validate_date_in_range])
    file_name = models.CharField(_("file name"), max_length=255)
    file_format = models.CharField(_("format"), max_length=5)
    file_size = models.PositiveBigIntegerField(_("size in bytes"), default=0)
    encoding = models.CharField(_("encoding"), max_length=20, blank=True)
    delimiter = models.CharField(_("delimiter"), max_length=1, blank=True)
    content = models.BinaryField(editable=False)
    headers = models.JSONField(_("columns"), default=list, encoder=StorableJSONEncoder)
    row_count = models.PositiveIntegerField(_("rows"), default=0)
    mapping = models.JSONField(_("column mapping"), default=dict, blank=True, encoder=StorableJSONEncoder)
    # What the preview found: counts, the first rows and the first problems (see crm.data.imports).
    preview = models.JSONField(_("preview"), default=dict, blank=True, encoder=StorableJSONEncoder)
    date_order = models.CharField(
        _("date order"), max_length=3, choices=DateOrder.choices, default=DateOrder.DMY
    )
    mode = models.CharField(_("mode"), max_length=6, choices=Mode.choices, default=Mode.BOTH)
    all_or_nothing = models.BooleanField(_("all or nothing"), default=True)
    status = models.CharField(_("status"), max_length=8, choices=Status.choices, default=Status.UPLOADED)
    processed_rows = models.PositiveIntegerField(_("processed rows"), default=0)
    created_count = models.PositiveIntegerField(_("created"), default=0)
    updated_count = models.PositiveIntegerField(_("updated"), default=0)
    skipped_count = models.PositiveIntegerField(_("skipped"), default=0)
    failed_count = models.PositiveIntegerField(_("failed"), default=0)
    # [{"row": 7, "outcome": "failed" | "skipped", "messages": ["…"]}, …] in row order.
    report = models.JSONField(_("report"), default=list, blank=True, encoder=StorableJSONEncoder)
    error = models.TextField(_("error"), blank=True)
    queued_at = models.DateTimeField(
        _("queued at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    finished_at = models.DateTimeField(
        _("finished at"), null=True, blank=True, validators=[validate_date_in_range]
    )

    objects = ImportJobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("import")
        verbose_name_plural = _("imports")
        constraints = [
            models.CheckConstraint(
                condition=Q(finished_at__isnull=True) | Q(status__in=["done", "failed"]),
                name="importjob_finished_has_outcome",
            ),
        ]
        indexes = [models.Index(fields=["created_by", "-created_at"], name="importjob_user_created")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.file_name}"

    def get_absolute_url(self) -> str:
        return reverse("crm:import_detail", args=[self.pk])

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.DONE, self.Status.FAILED)

    @property
    def is_checked(self) -> bool:
        """Every row has been checked against a mapping (the preview step)."""
        return "counts" in self.preview


class ImportMapping(models.Model):
    """The column mapping a user chose last time for one kind of import, keyed by normalised header."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=10, choices=ImportJob.Kind.choices)
    mapping = models.JSONField(default=dict, encoder=StorableJSONEncoder)
    updated_at = models.DateTimeField(validators=[validate_date_in_range])

    class Meta:
        verbose_name = _("import mapping")
        verbose_name_plural = _("import mappings")
        constraints = [models.UniqueConstraint(fields=["user", "kind"], name="importmapping_one_per_kind")]

    def __str__(self) -> str:
        return f"{self.user_id} {self.kind}"


class DuplicateCandidate(models.Model):
    """Two live customers that look like the same one, found by the duplicate scan.

    The pair is stored once, lower id first (``customer_a_id < customer_b_id``), so the unordered pair is
    unique. A "not a duplicate" decision stays, and the scan never proposes that pair again.
    """

    class Status(models.TextChoices):
        OPEN = "open", _("Open")
        MERGED = "merged", _("Merged")
        NOT_DUPLICATE = "not_duplicate", _("Not a duplicate")

    class Reason(models.TextChoices):
        EMAIL = "email", _("same e-mail")
        PHONE = "phone", _("same phone")
        NAME = "name", _("same name")
        SIMILAR_NAME = "similar_name", _("similar name")
        DOMAIN = "domain", _("same e-mail domain")

    customer_a = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    customer_b = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    score = models.DecimalField(_("score"), max_digits=4, decimal_places=3)
    # Comma-separated Reason values, strongest first.
    reason = models.CharField(_("reason"), max_length=100)
    name_similarity = models.DecimalField(max_digits=4, decimal_places=3, null=True, blank=True)
    status = models.CharField(_("status"), max_length=14, choices=Status.choices, default=Status.OPEN)
    found_at = models.DateTimeField(_("found at"), validators=[validate_date_in_range])
    decided_at = models.DateTimeField(
        _("decided at"), null=True, blank=True, validators=[validate_date_in_range]
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-score", "id"]
        verbose_name = _("duplicate candidate")
        verbose_name_plural = _("duplicate candidates")
        constraints = [
            models.CheckConstraint(
                condition=Q(customer_a__lt=F("customer_b")), name="duplicate_pair_ordered"
            ),
            models.UniqueConstraint(fields=["customer_a", "customer_b"], name="duplicate_pair_unique"),
            models.CheckConstraint(condition=Q(score__gte=0, score__lte=1), name="duplicate_score_0_1"),
        ]
        indexes = [
            models.Index(fields=["-score", "id"], condition=Q(status="open"), name="duplicate_open_score"),
            models.Index(fields=["customer_b"], name="duplicate_customer_b"),
        ]

    def __str__(self) -> str:
        return f"{self.customer_a_id} ~ {self.customer_b_id} ({self.score})"

    def get_absolute_url(self) -> str:
        return reverse("crm:duplicate_detail", args=[self.pk])

    @property
    def reasons(self) -> list[str]:
        return [r for r in self.reason.split(",") if r]

    def get_reason_display(self) -> str:
        """E.g. "similar name 0.87 + same e-mail domain"."""
        parts = []
        for code in self.reasons:
            label = str(self.Reason(code).label) if code in self.Reason.values else code
            if code == self.Reason.SIMILAR_NAME and self.name_similarity is not None:
                label = f"{label} {self.name_similarity:.2f}"
            parts.append(label)
        return " + ".join(parts)


class CustomerMerge(models.Model):
    """The record of one merge, for explaining it later: who merged which customer into which, when,
    which values were kept, and how many related rows moved to the survivor."""

    survivor = models.ForeignKey(
        Customer, verbose_name=_("survivor"), on_delete=models.PROTECT, related_name="merges"
    )
    merged = models.ForeignKey(
        Customer, verbose_name=_("merged customer"), on_delete=models.PROTECT, related_name="merged_by"
    )
    candidate = models.ForeignKey(
        DuplicateCandidate, null=True, blank=True, on_delete=models.SET_NULL, related_name="merges"
    )
    by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("merged by"),
        null=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    at = models.DateTimeField(_("merged at"), validators=[validate_date_in_range])
    # {field: {"kept": "survivor" | "merged", "value": …, "survivor": …, "merged": …}} as display strings.
    chosen = models.JSONField(_("chosen values"), default=dict, encoder=StorableJSONEncoder)
    # {"deal": 3, "ticket": 1, …}: rows per related model moved to the survivor.
    moved = models.JSONField(_("moved records"), default=dict, encoder=StorableJSONEncoder)
    # The merged customer's values at the time of the merge.
    merged_snapshot = models.JSONField(default=dict, encoder=StorableJSONEncoder)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name = _("customer merge")
        verbose_name_plural = _("customer merges")
        constraints = [
            models.CheckConstraint(condition=~Q(survivor=F("merged")), name="merge_two_customers"),
            models.UniqueConstraint(fields=["merged"], name="merge_once_per_customer"),
        ]

    def __str__(self) -> str:
        return f"{self.merged_id} → {self.survivor_id} @ {self.at:%Y-%m-%d}"


# Webhooks
# ---------------------------------------------------------------------------------------------------------


class WebhookSubscription(models.Model):
    """Where to send which events, signed with the subscription's secret (Standard Webhooks)."""

    class Event(models.TextChoices):
        CUSTOMER_CREATED = "customer.created", _("A customer is created")
        CUSTOMER_UPDATED = "customer.updated", _("A customer is changed")
        CUSTOMER_MERGED = "customer.merged", _("Two customers are merged")
        CUSTOMER_CHURNED = "customer.churned", _("A customer churns")
        DEAL_CREATED = "deal.created", _("A deal is created")
        DEAL_UPDATED = "deal.updated", _("A deal is changed")
        DEAL_STAGE_CHANGED = "deal.stage_changed", _("A deal moves to another stage")
        DEAL_WON = "deal.won", _("A deal is won")
        DEAL_LOST = "deal.lost", _("A deal is lost")
        TICKET_CREATED = "ticket.created", _("A ticket is created")
        TICKET_UPDATED = "ticket.updated", _("A ticket is changed or answered")
        TICKET_SOLVED = "ticket.solved", _("A ticket is solved")
        SURVEY_RESPONSE_CREATED = "survey_response.created", _("A survey is answered")
        AUTOMATION_RULE_FIRED = "automation.rule_fired", _("An automation rule sends a webhook")
        KPI_ALERT = "kpi.alert", _("A KPI alert is raised")

    name = models.CharField(_("name"), max_length=100)
    url = models.URLField(_("URL"), max_length=500)
    events = ArrayField(models.CharField(max_length=40, choices=Event.choices), verbose_name=_("events"))
    secret = models.CharField(max_length=80)
    # After a rotation the old secret still signs (a second signature) until this moment.
    previous_secret = models.CharField(max_length=80, blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True, validators=[validate_date_in_range])
    is_active = models.BooleanField(_("active"), default=True)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("owner"), on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(_("created"), validators=[validate_date_in_range])
    # Deliveries that gave up in a row; at WEBHOOK_DISABLE_AFTER the subscription is switched off.
    failures_in_a_row = models.PositiveIntegerField(default=0)
    disabled_reason = models.CharField(_("why it was switched off"), max_length=200, blank=True)

    class Meta:
        ordering = ["name", "id"]
        verbose_name = _("webhook")
        verbose_name_plural = _("webhooks")
        indexes = [GinIndex(fields=["events"], name="webhook_events", condition=Q(is_active=True))]

    def __str__(self) -> str:
        return self.name


class WebhookDelivery(models.Model):
    """One event for one subscription: the outbox row, written in the transaction of the change, then
    delivered (and retried) by a worker. Its ``message_id`` is the ``webhook-id`` of every attempt, so a
    receiver that saw it once can ignore a repeat."""

    class Status(models.TextChoices):
        PENDING = "pending", _("waiting")
        DELIVERED = "delivered", _("delivered")
        FAILED = "failed", _("gave up")

    subscription = models.ForeignKey(WebhookSubscription, on_delete=models.CASCADE, related_name="deliveries")
    message_id = models.CharField(max_length=40, unique=True)
    event = models.CharField(_("event"), max_length=40)
    payload = models.JSONField(encoder=StorableJSONEncoder)
    created_at = models.DateTimeField(_("created"), validators=[validate_date_in_range])
    status = models.CharField(_("status"), max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, validators=[validate_date_in_range])
    delivered_at = models.DateTimeField(
        _("delivered"), null=True, blank=True, validators=[validate_date_in_range]
    )
    last_status_code = models.PositiveSmallIntegerField(_("answer"), null=True, blank=True)
    last_error = models.CharField(_("error"), max_length=300, blank=True)
    last_duration_ms = models.PositiveIntegerField(_("time (ms)"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("webhook delivery")
        verbose_name_plural = _("webhook deliveries")
        indexes = [
            models.Index(fields=["next_attempt_at"], name="webhook_due", condition=Q(status="pending")),
            models.Index(fields=["subscription", "-created_at"], name="webhook_log"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.subscription_id} ({self.status})"


# Models kept in their own modules, registered with the crm app here.
from crm.automation.models import AutomationRule, AutomationRun  # noqa: E402
from crm.custom_fields.models import CustomField  # noqa: E402
from crm.forecasting.models import StageProbabilityVersion  # noqa: E402

__all__ = ["AutomationRule", "AutomationRun", "CustomField", "StageProbabilityVersion"]
