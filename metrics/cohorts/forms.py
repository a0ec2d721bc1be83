"""The cohorts page's filters: parsing and validation only."""

from typing import cast

from django import forms
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from accounts.models import User
from crm.text import interpolate_lazy
from metrics.forms import DashboardFilterForm
from metrics.models import Granularity

# How many cohorts (months) the heatmap shows.
COHORT_COUNTS = (12, 24, 36, 60)
DEFAULT_COHORTS = 24


class CohortFilterForm(DashboardFilterForm):
    """The dashboard's filters, less what has no meaning here: revenue retention is read over 12-month
    windows by month, quarter or year (not week), and there is no campaign scope. ``cohorts``: how many
    months of cohorts the heatmap shows."""

    cohorts = forms.TypedChoiceField(
        label=_("Cohorts"),
        coerce=int,
        required=False,
        choices=[("", _("default"))]
        + [(n, interpolate_lazy(gettext_noop("last %(n)s months"), {"n": n})) for n in COHORT_COUNTS],
    )

    def __init__(self, *args, user: User, **kwargs) -> None:
        super().__init__(*args, user=user, **kwargs)
        granularity = cast(forms.ChoiceField, self.fields["granularity"])
        granularity.choices = [c for c in Granularity.choices if c[0] != Granularity.WEEK]
        self.fields.pop("campaign", None)
        self.fields.pop("count", None)

    def cleaned(self) -> dict:
        """As the dashboard's: a value that is not valid falls back to its default (the form says why)."""
        data = super().cleaned()
        return {
            **data,
            "granularity": data["granularity"] or Granularity.MONTH,
            "cohorts": data.get("cohorts"),
        }
