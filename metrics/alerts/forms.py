"""The alert list's filters: parsing and validation only."""

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from accounts.models import User
from metrics.kpis import registry
from metrics.models import Granularity

from .models import Alert
from .selectors import STATES

STATE_LABELS = {
    "active": _("Active"),
    "resolved": _("No longer holding"),
    "dismissed": _("Dismissed"),
    "all": _("All"),
}


class AlertFilterForm(forms.Form):
    state = forms.ChoiceField(
        label=_("Show"), choices=[(s, STATE_LABELS[s]) for s in STATES], required=False, initial="active"
    )
    kind = forms.ChoiceField(label=_("Kind"), required=False)
    kpi = forms.ChoiceField(label=_("KPI"), required=False)
    granularity = forms.ChoiceField(label=_("Period"), required=False)
    who = forms.ChoiceField(
        label=_("About"),
        required=False,
        choices=[
            ("", _("Anyone")),
            ("company", _("The company")),
            ("teams", _("Teams")),
            ("people", _("People")),
        ],
    )

    def __init__(self, *args: Any, user: User, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not user.is_manager:  # their own numbers only
            del self.fields["who"]
        self.fields["kind"].choices = [("", _("Any kind")), *Alert.Kind.choices]
        self.fields["kpi"].choices = [("", _("Any KPI")), *((k.code, k.label) for k in registry().values())]
        self.fields["granularity"].choices = [("", _("Any period")), *Granularity.choices]

    def filters(self) -> dict[str, str]:
        """The filters to apply: every valid one (an invalid one is shown with its error and left out);
        active alerts unless another state is chosen."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        found = {name: data.get(name) or "" for name in ("kind", "kpi", "granularity", "who")}
        return {**found, "state": data.get("state") or "active"}
