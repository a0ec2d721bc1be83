"""Dashboard filters and the target form: parsing and validation only."""

from decimal import Decimal
from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from accounts import dates
from accounts.models import Team, User
from accounts.pickers import StaffChoiceField
from crm.campaigns.fields import CampaignChoiceField
from crm.models import PipelineStage
from crm.text import interpolate_lazy
from metrics.dashboard import RANGES
from metrics.models import OWNER_SCOPES, Granularity, Scope
from metrics.periods import period_of


class DashboardFilterForm(forms.Form):
    granularity = forms.ChoiceField(
        label=_("Period"), choices=Granularity.choices, required=False, initial="month"
    )
    count = forms.TypedChoiceField(
        label=_("Show"),
        coerce=int,
        required=False,
        choices=[("", _("default"))]
        + [(n, interpolate_lazy(gettext_noop("last %(n)s periods"), {"n": n})) for n in RANGES],
    )
    period = dates.DateField(label=_("Up to"), required=False, widget=forms.DateInput(attrs={"type": "date"}))
    team = forms.ModelChoiceField(
        label=_("Team"), queryset=Team.objects.none(), required=False, empty_label=_("All teams")
    )
    rep = StaffChoiceField("person", label=_("Person"), required=False)
    # One campaign's figures (KPIS.md §10.11): the campaign KPIs' pages and the campaigns report.
    campaign = CampaignChoiceField(label=_("Campaign"), empty_label=_("All campaigns"))

    def __init__(self, *args, user: User, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if user.is_manager:
            self.fields["team"].queryset = Team.objects.order_by("name")
        else:
            del self.fields["team"]
            del self.fields["rep"]
            del self.fields["campaign"]

    def cleaned(self) -> dict:
        """The cleaned values; a value that is not valid (``period=0001-01-01``) falls back to its default,
        and the others stay (a bad link never fails)."""
        defaults = {
            "granularity": "",
            "count": None,
            "period": None,
            "team": None,
            "rep": None,
            "campaign": None,
        }
        self.is_valid()
        return {**defaults, **self.cleaned_data}


class TargetForm(forms.Form):
    value = forms.DecimalField(
        label=_("Target"),
        max_digits=18,
        decimal_places=4,
        min_value=Decimal("-1000000000000"),
        max_value=Decimal("1000000000000"),
    )
    granularity = forms.ChoiceField(label=_("Period"), choices=Granularity.choices)
    period = dates.DateField(label=_("Period containing"), widget=forms.DateInput(attrs={"type": "date"}))
    scope = forms.ChoiceField(label=_("For"), choices=[c for c in Scope.choices if c[0] in OWNER_SCOPES])
    team = forms.ModelChoiceField(label=_("Team"), queryset=Team.objects.all(), required=False)
    rep = StaffChoiceField("staff", label=_("Person"), required=False)

    def __init__(self, *args, scopes: tuple[str, ...], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["scope"].choices = [c for c in self.fields["scope"].choices if c[0] in scopes]

    def clean(self) -> dict:
        data = super().clean()
        scope = data.get("scope")
        if scope == Scope.TEAM and not data.get("team"):
            self.add_error("team", _("Choose the team."))
        if scope == Scope.USER and not data.get("rep"):
            self.add_error("rep", _("Choose the person."))
        return data

    @property
    def scope_id(self) -> str:
        scope = self.cleaned_data["scope"]
        if scope == Scope.TEAM:
            return str(self.cleaned_data["team"].pk)
        if scope == Scope.USER:
            return str(self.cleaned_data["rep"].pk)
        return ""

    def target(self) -> dict[str, Any]:
        """The valid target as ``kpi_target_set`` takes it: for the period containing the date chosen."""
        period = period_of(self.cleaned_data["period"], self.cleaned_data["granularity"])
        return {
            "granularity": period.granularity,
            "period_start": period.start,
            "value": self.cleaned_data["value"],
            "scope": self.cleaned_data["scope"],
            "scope_id": self.scope_id,
        }

    def errors_text(self) -> str:
        """Every error on one line, a field's after its label (for a message)."""
        return " ".join(
            f"{self.fields[f].label}: {' '.join(e)}" if f in self.fields else " ".join(e)
            for f, e in self.errors.items()
        )


# Forecast calibration (metrics.forecasts)
# ---------------------------------------------------------------------------------------------------------

FROZEN_GRANULARITY_CHOICES = [c for c in Granularity.choices if c[0] != Granularity.YEAR]


class ForecastFilterForm(forms.Form):
    """The calibration page's period length and how many periods its trends show."""

    granularity = forms.ChoiceField(
        label=_("Period"), choices=FROZEN_GRANULARITY_CHOICES, required=False, initial="month"
    )
    count = forms.TypedChoiceField(
        label=_("Show"),
        coerce=int,
        required=False,
        choices=[("", _("default"))]
        + [(n, interpolate_lazy(gettext_noop("last %(n)s periods"), {"n": n})) for n in RANGES],
    )

    def cleaned(self) -> dict:
        """The cleaned values; one that is not valid falls back to its default (a bad link never fails)."""
        self.is_valid()
        data = {"granularity": "month", "count": 12, **{k: v for k, v in self.cleaned_data.items() if v}}
        return data


class StageProbabilityApplyForm(forms.Form):
    """One click on a suggested stage probability: the stage, the probability the page showed (refused
    if it changed meanwhile) and the suggested one."""

    stage = forms.ModelChoiceField(label=_("Stage"), queryset=PipelineStage.objects.none())
    expected = forms.IntegerField(label=_("Probability shown"), min_value=0, max_value=100)
    probability = forms.IntegerField(label=_("New probability %"), min_value=0, max_value=100)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["stage"].queryset = PipelineStage.objects.filter(kind=PipelineStage.Kind.OPEN)

    def errors_text(self) -> str:
        """Every error on one line, a field's after its label (for a message)."""
        return " ".join(
            f"{self.fields[f].label}: {' '.join(e)}" if f in self.fields else " ".join(e)
            for f, e in self.errors.items()
        )
