"""The dimensions a KPI is broken down by on its page: one per non-company scope it declares, and one per
single-choice custom field of the KPI's record type (``custom_dimensions``).

A dimension says how its rows are headed, who may see them and what the ids of its snapshot rows are
called. The KPI page's breakdowns are a loop over ``kpi.scopes`` through this table, then over the custom
dimensions, whose rows are read live from the records (``metrics.kpis.custom``).
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.db.models import Choices
from django.utils.functional import Promise
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from accounts.models import Team, User
from crm.custom_fields.models import CustomField
from crm.models import Campaign, Customer, Source
from metrics.kpis import custom
from metrics.kpis.base import Kpi
from metrics.models import Scope
from surveys.models import Survey


def _team_names(ids: Iterable[str]) -> dict[str, str]:
    return {str(pk): name for pk, name in Team.objects.filter(pk__in=list(ids)).values_list("pk", "name")}


def _user_names(ids: Iterable[str]) -> dict[str, str]:
    return {str(u.pk): str(u) for u in User.objects.filter(pk__in=list(ids))}


def _campaign_names(ids: Iterable[str]) -> dict[str, str]:
    wanted = [int(pk) for pk in ids if pk.isdigit()]
    return {str(pk): name for pk, name in Campaign.objects.filter(pk__in=wanted).values_list("pk", "name")}


def _choice_names(choices: type[Choices]) -> Callable[[Iterable[str]], dict[str, str]]:
    return lambda _ids: {value: str(label) for value, label in choices.choices}


@dataclass(frozen=True)
class Dimension:
    scope: str
    label: Promise | str
    # The names of the rows' scope ids (one query at most).
    names: Callable[[Iterable[str]], dict[str, str]]
    # A rep or an agent sees their own row of a per-person breakdown; the others are for managers.
    own_row: bool = False
    # A custom choice field: rows read live from the records the user may see, not from snapshots.
    field: CustomField | None = None


DIMENSIONS = {
    d.scope: d
    for d in (
        Dimension(Scope.TEAM, _("By team"), _team_names),
        Dimension(Scope.USER, _("By person"), _user_names, own_row=True),
        Dimension(Scope.SOURCE, _("By channel"), _choice_names(Source)),
        Dimension(Scope.SURVEY, _("By survey kind"), _choice_names(Survey.Kind)),
        Dimension(Scope.TRIGGER, _("By trigger"), _choice_names(Survey.Trigger)),
        Dimension(Scope.AGENT, _("By support agent"), _user_names, own_row=True),
        Dimension(Scope.SEGMENT, _("By customer segment"), _choice_names(Customer.Segment)),
        Dimension(Scope.CAMPAIGN, _("By campaign"), _campaign_names),
    )
}


def breakdown_dimensions(scopes: Iterable[str]) -> list[Dimension]:
    """The dimensions of a KPI's scopes, in its declared order (the company is the headline, not a row)."""
    return [DIMENSIONS[scope] for scope in scopes if scope != Scope.COMPANY]


def _option_names(field: CustomField) -> Callable[[Iterable[str]], dict[str, str]]:
    return lambda _ids: {**field.choice_labels(), custom.EMPTY: gettext("(empty)")}


def custom_dimensions(kpi: Kpi) -> list[Dimension]:
    """A dimension per active single-choice custom field of the KPI's record type, in the fields' order
    (one query; none for a KPI that is not one dataset's ratio or measure)."""
    return [
        Dimension(
            f"cf-{field.key}",
            gettext("By %(field)s") % {"field": field.label},
            _option_names(field),
            field=field,
        )
        for field in custom.breakdown_fields(kpi)
    ]
