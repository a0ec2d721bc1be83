"""The health list's filters and the manager's settings form: parsing and validation only."""

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from metrics.health.components import COMPONENTS
from metrics.health.models import Band, HealthSettings
from metrics.health.selectors import DEFAULT_SORT


class HealthFilterForm(forms.Form):
    band = forms.ChoiceField(label=_("Band"), choices=[("", _("All bands")), *Band.choices], required=False)
    sort = forms.ChoiceField(
        label=_("Order"),
        choices=[
            ("score", _("Lowest score first")),
            ("-score", _("Highest score first")),
            ("name", _("Customer name")),
        ],
        required=False,
    )

    def cleaned(self) -> dict[str, Any]:
        """The cleaned values; one that is not valid (a band that does not exist) falls back to its default,
        so a bad link shows the whole list rather than an error."""
        self.is_valid()
        data = {"band": "", "sort": DEFAULT_SORT, **self.cleaned_data}
        return {"band": data["band"] or None, "sort": data["sort"] or DEFAULT_SORT}


class HealthSettingsForm(forms.ModelForm):
    """The weights (which must add up to 100) and the band thresholds; the model's ``clean`` checks both."""

    class Meta:
        model = HealthSettings
        fields = [*(c.weight_field for c in COMPONENTS), "critical_below", "at_risk_below"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for component in COMPONENTS:
            field = self.fields[component.weight_field]
            field.label = component.label
            field.help_text = component.rule
            field.widget.attrs.update({"min": 0, "max": 100, "inputmode": "numeric"})
        for name in ("critical_below", "at_risk_below"):
            self.fields[name].widget.attrs["inputmode"] = "numeric"
        self.fields["critical_below"].help_text = _("A score below this is critical.")
        self.fields["at_risk_below"].help_text = _("A score below this (and not critical) is at risk.")

    @property
    def settings_values(self) -> dict[str, Any]:
        """The cleaned values as ``health_settings_update`` takes them."""
        return {name: self.cleaned_data[name] for name in self.Meta.fields}
