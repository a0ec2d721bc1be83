"""The definition of a custom field (its values live in each record's ``custom`` column)."""

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from accounts.dates import validate_date_in_range
from accounts.text import StorableJSONEncoder

KEY_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"


class CustomField(models.Model):
    class Entity(models.TextChoices):
        CUSTOMER = "customer", _("customers")
        DEAL = "deal", _("deals")
        TICKET = "ticket", _("tickets")
        ACTIVITY = "activity", _("activities")

    class Kind(models.TextChoices):
        TEXT = "text", _("text")
        LONG_TEXT = "long_text", _("long text")
        INTEGER = "integer", _("whole number")
        DECIMAL = "decimal", _("decimal number")
        MONEY = "money", _("money")
        DATE = "date", _("date")
        YES_NO = "yes_no", _("yes/no")
        CHOICE = "choice", _("single choice")
        MULTI_CHOICE = "multi_choice", _("multiple choice")
        USER = "user", _("user")
        URL = "url", _("URL")
        EMAIL = "email", _("e-mail")

    entity = models.CharField(_("record"), max_length=10, choices=Entity.choices)
    key = models.CharField(
        _("key"),
        max_length=40,
        validators=[
            RegexValidator(
                KEY_PATTERN,
                _("Use lower-case letters, digits and underscores, starting with a letter: lot_number."),
            )
        ],
        help_text=_("The field's stable name in imports, exports and the API; it cannot change."),
    )
    label_en = models.CharField(_("label (English)"), max_length=100)
    label_zh = models.CharField(_("label (Chinese)"), max_length=100, blank=True)
    kind = models.CharField(_("type"), max_length=12, choices=Kind.choices, default=Kind.TEXT)
    # [{"key": "house", "en": "House", "zh": "住宅"}, ...] for the two choice types.
    choices = models.JSONField(_("choices"), default=list, blank=True, encoder=StorableJSONEncoder)
    required = models.BooleanField(_("required"), default=False)
    required_from_stage = models.ForeignKey(
        "crm.PipelineStage",
        verbose_name=_("required from stage"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text=_("Deals only: required once a deal reaches this stage (empty: always, when required)."),
    )
    help_en = models.CharField(_("help text (English)"), max_length=300, blank=True)
    help_zh = models.CharField(_("help text (Chinese)"), max_length=300, blank=True)
    order = models.PositiveSmallIntegerField(_("order"), default=0)
    is_active = models.BooleanField(
        _("active"), default=True, help_text=_("Archived fields keep their values.")
    )
    created_at = models.DateTimeField(_("created"), validators=[validate_date_in_range])
    updated_at = models.DateTimeField(_("updated"), validators=[validate_date_in_range])

    # Set on the fields page by the selectors (field_groups), not a field.
    values_count: int

    class Meta:
        ordering = ["entity", "order", "id"]
        verbose_name = _("custom field")
        verbose_name_plural = _("custom fields")
        constraints = [
            models.UniqueConstraint(fields=["entity", "key"], name="custom_field_key_unique"),
            models.CheckConstraint(condition=Q(key__regex=KEY_PATTERN), name="custom_field_key_format"),
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        return _pick(self.label_en, self.label_zh)

    @property
    def help(self) -> str:
        return _pick(self.help_en, self.help_zh)

    @property
    def form_name(self) -> str:
        """The field's name in a record's form (apart from the built-in fields)."""
        return f"cf_{self.key}"

    def choice_labels(self) -> dict[str, str]:
        return {c["key"]: _pick(c.get("en", ""), c.get("zh", "")) or c["key"] for c in self.choices or []}

    @property
    def is_choice(self) -> bool:
        return self.kind in (self.Kind.CHOICE, self.Kind.MULTI_CHOICE)


def _pick(english: str, chinese: str) -> str:
    """The Chinese text on Chinese pages when there is one, else the English."""
    if chinese and (get_language() or "").startswith("zh"):
        return chinese
    return english
