"""The KPI registry: one declarative :class:`~metrics.kpis.base.Kpi` per KPI, one module per family.

Each family module (``sales``, ``retention``, ``service``, ``economics``, ``adoption``,
``data_quality``) defines its KPIs and lists them in a module-level ``KPIS``. Shared base scans live in
``datasets``; the grouped-SQL builders in ``builders``.

Adding a family (e.g. ``satisfaction`` for NPS, CES, CSAT and survey response rate):

1. write ``metrics/kpis/satisfaction.py`` with ``KPIS = [Kpi(code=..., family=Family.SATISFACTION, ...)]``
   — most KPIs are a :class:`~metrics.kpis.builders.Dataset` (queryset, date, scopes, measures) plus
   ``compute=ratio(...)`` or ``compute=measure(...)``;
2. add ``"satisfaction"`` to ``FAMILY_MODULES`` below.

The snapshot service, tasks, command, selectors and drill-downs pick it up from the registry.
"""

from functools import cache
from importlib import import_module
from typing import TYPE_CHECKING

from metrics.kpis.base import Kpi

if TYPE_CHECKING:
    from metrics.kpis.base import Context
    from metrics.kpis.dataset import Dataset

FAMILY_MODULES = ("sales", "retention", "satisfaction", "service", "economics", "adoption", "data_quality")


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


def get_kpi(code: str) -> Kpi:
    """The KPI with ``code``; KeyError if there is none."""
    return registry()[code]


def datasets(ctx: "Context") -> list["Dataset"]:
    """Every dataset the KPIs read: those defined in the family modules and ``datasets``, and those a
    module builds per run (``DATASET_FACTORIES``, e.g. the funnel of the current pipeline stages).

    An incremental run brings all of them up to date before computing any KPI.
    """
    from metrics.kpis.dataset import Dataset

    found: dict[str, Dataset] = {}
    for name in ("datasets", *FAMILY_MODULES):
        module = import_module(f"metrics.kpis.{name}")
        candidates = []
        for value in vars(module).values():
            if isinstance(value, Dataset):
                candidates.append(value)
            elif isinstance(value, tuple | list) and value and all(isinstance(v, Dataset) for v in value):
                candidates.extend(value)
        candidates += [factory(ctx) for factory in getattr(module, "DATASET_FACTORIES", ())]
        for ds in candidates:
            if found.setdefault(ds.name, ds) is not ds:
                raise ValueError(f"two datasets are named {ds.name!r}")
    return list(found.values())
