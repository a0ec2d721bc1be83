"""The campaign picker of the customer and deal forms (and of the touch and filter forms)."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils.translation import gettext_lazy as _

from crm.models import Campaign


def campaign_choices(current: Any = None) -> QuerySet[Campaign]:
    """The campaigns a picker offers: those not archived, and the one already chosen (even archived)."""
    pk = getattr(current, "pk", current)
    keep = Q(is_archived=False) | (Q(pk=pk) if isinstance(pk, int) else Q(pk__in=[]))
    return Campaign.objects.filter(keep).order_by("-start", "name", "id")


class CampaignChoiceField(forms.ModelChoiceField):
    """A campaign picked from a list (a company runs dozens, not thousands). Any campaign is accepted, an
    archived one too (a record keeps the campaign it had); ``offer`` limits what the list shows. A value
    that is no campaign's number is "not one of the choices", never a server error."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("queryset", Campaign.objects.order_by("-start", "name", "id"))
        kwargs.setdefault("required", False)
        kwargs.setdefault("empty_label", "—")
        kwargs.setdefault("error_messages", {"invalid_choice": _("Choose one of the campaigns in the list.")})
        super().__init__(**kwargs)

    def offer(self, current: Any = None) -> None:
        """List the campaigns not archived, and ``current`` (the record's); one query."""
        self.widget.choices = [
            ("", self.empty_label),
            *((c.pk, self.label_from_instance(c)) for c in campaign_choices(current)),
        ]

    def to_python(self, value: Any) -> Any:
        if isinstance(value, Campaign):  # a record's stored campaign, as the API passes it
            return value
        text = "" if value is None else str(value).strip()
        if text and not (text.isascii() and text.isdigit() and len(text) <= 18):
            raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
        return super().to_python(value)

    def label_from_instance(self, obj: Campaign) -> str:
        return f"{obj.name} ({obj.start:%Y-%m})"
