"""The campaigns report (KPIS.md §10.11): per campaign, its cost and, first touch and last touch side by
side, leads, cost per lead, customers won, CAC, revenue won and ROI for one period, with the ROI of both
models as a chart. Read from snapshot rows only: one query for every campaign's figures, one for the
campaigns' names and runs, whatever the number of customers and deals."""

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.utils.translation import gettext as _

from crm.models import Campaign
from metrics import dashboard
from metrics.charts import PALETTE, _layout, _num
from metrics.kpis.base import Kpi, Unit
from metrics.kpis.campaigns import BY_MODEL, COST, FIRST, LAST
from metrics.periods import Period
from metrics.selectors import campaign_kpi_values

KPIS: tuple[Kpi, ...] = (COST, *BY_MODEL[FIRST], *BY_MODEL[LAST])
LOSS = ("#c8362f", "#e8837d")  # first touch, last touch: a campaign that loses money


@dataclass
class Cell:
    """One figure of one campaign: its value as shown, and the KPI page it links to."""

    kpi: Kpi
    value: Decimal | None
    display: str

    @property
    def negative(self) -> bool:
        return self.value is not None and self.value < 0


def _display(kpi: Kpi, value: Decimal | None) -> str:
    """A figure as the table shows it: amounts without the currency (the table names it once)."""
    if value is not None and kpi.unit == Unit.CURRENCY:
        return dashboard.number_format(value, 0, force_grouping=True)
    return dashboard.format_value(kpi, value)


def _cells(values: dict[str, Decimal | None], kpis: tuple[Kpi, ...]) -> list[Cell]:
    return [Cell(kpi, values.get(kpi.code), _display(kpi, values.get(kpi.code))) for kpi in kpis]


def report(*, period: Period, campaign: Campaign | None = None) -> dict[str, Any]:
    """The table's rows (campaigns with figures in the period, the latest run first), the total row and the
    ROI chart."""
    found = campaign_kpi_values(
        kpis=[kpi.code for kpi in KPIS], period=period, campaign_id=None if campaign is None else campaign.pk
    )
    ids = [int(pk) for pk in found if pk.isdigit()]
    campaigns = Campaign.objects.filter(pk__in=ids).order_by("-start", "name", "id")
    rows = [
        {
            "campaign": c,
            "cost": _cells(found[str(c.pk)], (COST,))[0],
            "first": _cells(found[str(c.pk)], BY_MODEL[FIRST]),
            "last": _cells(found[str(c.pk)], BY_MODEL[LAST]),
        }
        for c in campaigns
    ]
    total = found.get("")
    return {
        "rows": rows,
        "total": None
        if total is None
        else {
            "cost": _cells(total, (COST,))[0],
            "first": _cells(total, BY_MODEL[FIRST]),
            "last": _cells(total, BY_MODEL[LAST]),
        },
        "models": (FIRST, LAST),
        "chart": roi_chart(rows),
    }


def roi_chart(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """ROI per campaign under both models as grouped bars: a campaign that loses money reaches below zero,
    in red."""
    names = [row["campaign"].name for row in rows]
    data = []
    for i, (model, label) in enumerate(((FIRST, _("First touch")), (LAST, _("Last touch")))):
        roi = [row[model][-1].value for row in rows]
        data.append(
            {
                "type": "bar",
                "name": label,
                "x": names,
                "y": [_num(v) for v in roi],
                "marker": {"color": [LOSS[i] if v is not None and v < 0 else PALETTE[i] for v in roi]},
                "text": [row[model][-1].display for row in rows],
                "textposition": "outside",
                "cliponaxis": False,
                "hovertemplate": "%{x}: %{text}<extra>" + label + "</extra>",
            }
        )
    layout = _layout(_("ROI per campaign"), y_title="%", hovermode="closest")
    layout["barmode"] = "group"
    layout["height"] = 440  # room for the campaigns' names under the bars on a phone
    layout["xaxis"] = {"type": "category", "tickangle": -35, "automargin": True}
    layout["yaxis"] |= {"zeroline": True, "zerolinecolor": "#1d2433", "zerolinewidth": 2, "automargin": True}
    if not names:
        layout["annotations"] = [
            {
                "text": _("No campaign ran or brought anything in this period"),
                "showarrow": False,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "font": {"size": 14, "color": "#667085"},
            }
        ]
        layout["xaxis"]["visible"] = layout["yaxis"]["visible"] = False
    return {"data": data, "layout": layout}
