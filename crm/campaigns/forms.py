"""Campaign forms: the campaign itself (managers), a touch recorded by hand on a customer's page, and the
campaign list's filters. Parsing and validation only."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from accounts import dates
from crm.campaigns.fields import CampaignChoiceField
from crm.forms import amount_field
from crm.models import Source


class CampaignForm(forms.Form):
    """A campaign's fields; ``version`` is the one the edit page was loaded at (optimistic locking)."""

    name = forms.CharField(label=_("Name"), max_length=200)
    channel = forms.ChoiceField(label=_("Channel"), choices=Source.choices, initial=Source.ADS)
    start = dates.DateField(label=_("First day"), widget=forms.DateInput(attrs={"type": "date"}))
    end = dates.DateField(
        label=_("Last day"),
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("The cost is spread evenly over the days from the first to the last, both included."),
    )
    cost = amount_field(help_text=_("What the campaign cost in all, in the company's currency."))
    note = forms.CharField(
        label=_("Note"), max_length=500, required=False, widget=forms.Textarea(attrs={"rows": 2})
    )
    version = forms.IntegerField(widget=forms.HiddenInput, required=False, min_value=1, max_value=2**31 - 1)

    def __init__(self, *args: Any, editing: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["cost"].label = _("Cost")
        if editing:
            self.fields["version"].required = True

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise ValidationError(_("Give the campaign a name."))
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            self.add_error("end", _("The last day cannot be before the first day."))
        return data

    def campaign_fields(self) -> dict[str, Any]:
        """The campaign's fields as the services take them (the version goes apart)."""
        return {name: value for name, value in self.cleaned_data.items() if name != "version"}

    def rebase(self, *, version: int) -> None:
        """After a conflicting edit: the input stays, now based on the stored ``version``."""
        self.data = self.data.copy()
        self.data["version"] = version


class TouchForm(forms.Form):
    """A campaign that reached a customer now (recorded on the customer's page)."""

    campaign = CampaignChoiceField(label=_("Campaign"), required=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["campaign"].offer()


class CampaignFilterForm(forms.Form):
    STATES = (("active", _("Active")), ("archived", _("Archived")), ("all", _("All")))

    q = forms.CharField(label=_("Search"), required=False, max_length=100)
    channel = forms.ChoiceField(
        label=_("Channel"), choices=[("", _("All channels")), *Source.choices], required=False
    )
    state = forms.ChoiceField(label=_("Status"), choices=STATES, required=False)
