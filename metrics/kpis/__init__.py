"""The KPI registry: one declarative :class:`~metrics.kpis.base.Kpi` per KPI, one module per family.

Each family module (``sales``, ``retention``, ``service``, ``economics``, ``adoption``,
``data_quality``) defines its KPIs and lists them in a module-level ``KPIS``. Shared base scans live in
``datasets``; the grouped-SQL builders in ``builders``.

Adding a family (e.g. ``satisfaction`` for NPS, CES, CSAT and survey response rate):

1. write ``metrics/kpis/satisfaction.py`` with ``KPIS = [Kpi(code=..., family=Family.SATISFACTION, ...)]``
   — most KPIs are a :class:`~metrics.kpis.builders.Dataset` (queryset, date, scopes, measures) plus
   ``compute=ratio(...)`` or ``compute=measure(...)`` — and ``DATASETS``, every dataset its KPIs read
   (see :func:`family_datasets`);
2. add ``"satisfaction"`` to ``FAMILY_MODULES`` below.

The snapshot service, tasks, command, selectors and drill-downs pick it up from the registry.
"""

from collections.abc import Iterable
from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

from metrics.kpis.base import Chart, Kpi, Plot

if TYPE_CHECKING:
    from metrics.kpis.base import Context
    from metrics.kpis.dataset import Dataset

# The order a full rebuild computes the families in. It keeps a dataset's periods in memory until the last
# family reading it is done, so the families reading the closed deals (sales, velocity, forecasting,
# retention, economics) come one after the other: with forecasting last, the closed deals stayed alive
# through every other family and the rebuild's peak at 1 M deals went from 438 to 613 MB (471 MB now).
# The dashboard orders families by ``Family``, not by this.
FAMILY_MODULES = (
    "sales",
    "velocity",
    "forecasting",
    "retention",
    "economics",
    "satisfaction",
    "service",
    "adoption",
    "data_quality",
    "campaigns",
    "revenue_retention",
    "health",
)


@cache
def registry() -> dict[str, Kpi]:
    """Every KPI by code, in family order."""
    kpis: dict[str, Kpi] = {}
    for name in FAMILY_MODULES:
        for kpi in import_module(f"metrics.kpis.{name}").KPIS:
            if kpi.code in kpis:
                raise ValueError(f"duplicate KPI code {kpi.code!r}")
            kpis[kpi.code] = kpi
    return kpis


@cache
def charts() -> list[tuple[Chart, list[tuple[Kpi, Plot]]]]:
    """Every dashboard chart, in its order on the dashboard, with the KPIs drawn on it and their places."""
    found: dict[str, tuple[Chart, list[tuple[Kpi, Plot]]]] = {}
    for kpi in registry().values():
        for plot in kpi.plots:
            found.setdefault(plot.chart.id, (plot.chart, []))[1].append((kpi, plot))
    return sorted(found.values(), key=lambda item: item[0].order)


def in_section(section: str) -> list[Kpi]:
    """The KPIs shown on one page or report beside the dashboard (``Section``), in registry order."""
    return [kpi for kpi in registry().values() if section in kpi.sections]


def get_kpi(code: str) -> Kpi:
    """The KPI with ``code``; KeyError if there is none."""
    return registry()[code]


def family_datasets(ctx: "Context", families: Iterable[str] = FAMILY_MODULES) -> list["Dataset"]:
    """Every dataset the KPIs of ``families`` read: each family module lists its own (``DATASETS``,
    and ``DATASET_FACTORIES`` for those built per run, e.g. the funnel of the current stages).

    An incremental run brings all of them up to date before computing any KPI; a full one releases a
    dataset's periods once no family still to compute reads it.
    """
    found: dict[str, Dataset] = {}
    for name in families:
        module = import_module(f"metrics.kpis.{name}")
        declared = [*module.DATASETS, *(factory(ctx) for factory in getattr(module, "DATASET_FACTORIES", ()))]
        for ds in declared:
            if found.setdefault(ds.name, ds) is not ds:
                raise ValueError(f"two datasets are named {ds.name!r}")
    return list(found.values())
