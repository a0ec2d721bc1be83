"""Does the health score beat the base rate? (KPIS.md §10.10)

Every customer active at each of the last 12 month starts whose next 90 days are over is scored as of that
day from the history (``scoring.score_as_of``); an observation is one customer at one month start, and it
*churned* when the status history turns the customer churned within the 90 days after it. The flagged
observations are those at risk or critical. Then:

- churn rate per band, and the base rate: churned ÷ observations;
- precision: churned among the flagged ÷ flagged; recall: churned among the flagged ÷ churned;
- lift: precision ÷ base rate (how many times more often a flagged customer churns than any customer);
- AUC: the chance that a customer who churned scored lower than one who stayed, ties counting half
  (the Mann–Whitney statistic ÷ its maximum, computed from the score histogram, so ties are exact).

The noise margin of the AUC is 1.96 standard errors of an AUC of 0.5 (a score that knows nothing), from the
Mann–Whitney null variance: ``1.96 × √((n₁ + n₂ + 1) / (12 n₁ n₂))`` with n₁ churned and n₂ stayed
observations. A customer appears once per month start, so the observations are not independent and the
margin is a guide, not an exact test. The verdict:

- *not enough data* below ``MIN_OUTCOMES`` churned (or stayed) observations;
- *does not beat the base rate* when nobody was flagged, the lift is ≤ 1, or the AUC is ≤ 0.5 + the margin;
- *beats the base rate* otherwise.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import date
from decimal import Decimal
from typing import Any, NamedTuple

from metrics.health.models import FLAGGED, Band, CustomerHealthRun
from metrics.kpis.base import MIN_EVENTS
from metrics.stats import Z95

# Fewer churned (or stayed) observations than this over the 12 month starts: not enough data to judge.
MIN_OUTCOMES = MIN_EVENTS
Verdict = CustomerHealthRun.Verdict


class Cell(NamedTuple):
    """``n`` observations of one month start (``k``) with the same band, score and outcome."""

    k: int
    band: str
    score: Decimal
    churned: bool
    n: int


def auc(histogram: Mapping[Decimal, tuple[int, int]]) -> float | None:
    """P(a churned observation scored lower than one that stayed) + ½ P(they scored the same), from
    ``score -> (churned, stayed)`` counts; None without both outcomes."""
    churned_total = sum(c for c, _s in histogram.values())
    stayed_total = sum(s for _c, s in histogram.values())
    if not churned_total or not stayed_total:
        return None
    wins = 0.0
    stayed_above = stayed_total
    for score in sorted(histogram):
        churned, stayed = histogram[score]
        stayed_above -= stayed
        wins += churned * stayed_above + churned * stayed / 2
    return wins / (churned_total * stayed_total)


def auc_noise_margin(churned: int, stayed: int) -> float | None:
    """1.96 standard errors of the AUC of a score that knows nothing (0.5), for these counts."""
    if not churned or not stayed:
        return None
    return Z95 * math.sqrt((churned + stayed + 1) / (12 * churned * stayed))


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _percent(share: float | None) -> float | None:
    return None if share is None else 100 * share


@dataclass(frozen=True)
class BandRow:
    band: str
    observations: int
    churned: int

    @property
    def rate(self) -> float | None:
        return _share(self.churned, self.observations)

    @property
    def rate_percent(self) -> float | None:
        return _percent(self.rate)

    @property
    def label(self) -> str:
        return str(Band(self.band).label)


@dataclass(frozen=True)
class MonthRow:
    day: date
    observations: int
    flagged: int
    churned: int
    churned_flagged: int

    @property
    def rate(self) -> float | None:
        return _share(self.churned, self.observations)

    @property
    def flagged_rate(self) -> float | None:
        return _share(self.churned_flagged, self.flagged)

    @property
    def others_rate(self) -> float | None:
        return _share(self.churned - self.churned_flagged, self.observations - self.flagged)

    @property
    def flagged_percent(self) -> float | None:
        return _percent(self.flagged_rate)

    @property
    def others_percent(self) -> float | None:
        return _percent(self.others_rate)


@dataclass(frozen=True)
class Backtest:
    """The backtest's figures; the months oldest first, the bands healthy, at risk, critical."""

    months: tuple[MonthRow, ...] = ()
    bands: tuple[BandRow, ...] = ()
    observations: int = 0
    churned: int = 0
    flagged: int = 0
    churned_flagged: int = 0
    auc: float | None = None
    auc_margin: float | None = None
    verdict: str = Verdict.TOO_FEW

    @property
    def base_rate(self) -> float | None:
        return _share(self.churned, self.observations)

    @property
    def precision(self) -> float | None:
        return _share(self.churned_flagged, self.flagged)

    @property
    def recall(self) -> float | None:
        return _share(self.churned_flagged, self.churned)

    @property
    def lift(self) -> float | None:
        base, precision = self.base_rate, self.precision
        return precision / base if precision is not None and base else None

    @property
    def base_percent(self) -> float | None:
        return _percent(self.base_rate)

    @property
    def precision_percent(self) -> float | None:
        return _percent(self.precision)

    @property
    def recall_percent(self) -> float | None:
        return _percent(self.recall)

    @property
    def stayed(self) -> int:
        return self.observations - self.churned

    def to_json(self) -> dict[str, Any]:
        return {
            "months": [{**asdict(m), "day": m.day.isoformat()} for m in self.months],
            "bands": [asdict(b) for b in self.bands],
            "observations": self.observations,
            "churned": self.churned,
            "flagged": self.flagged,
            "churned_flagged": self.churned_flagged,
            "auc": self.auc,
            "auc_margin": self.auc_margin,
            "verdict": self.verdict,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> "Backtest":
        data = data or {}
        return cls(
            months=tuple(
                MonthRow(**{**m, "day": date.fromisoformat(m["day"])}) for m in data.get("months", ())
            ),
            bands=tuple(BandRow(**b) for b in data.get("bands", ())),
            observations=data.get("observations", 0),
            churned=data.get("churned", 0),
            flagged=data.get("flagged", 0),
            churned_flagged=data.get("churned_flagged", 0),
            auc=data.get("auc"),
            auc_margin=data.get("auc_margin"),
            verdict=data.get("verdict", Verdict.TOO_FEW),
        )


def verdict_of(*, churned: int, stayed: int, flagged: int, lift: float | None, auc_value: float | None,
               margin: float | None) -> str:  # fmt: skip
    """Beats the base rate, does not, or not enough data to say (see the module's rules)."""
    if churned < MIN_OUTCOMES or stayed < MIN_OUTCOMES:
        return Verdict.TOO_FEW
    if not flagged or lift is None or lift <= 1 or auc_value is None or margin is None:
        return Verdict.FAILS
    return Verdict.BEATS if auc_value > 0.5 + margin else Verdict.FAILS


def evaluate(cells: Iterable[Cell], days: Sequence[date]) -> Backtest:
    """The backtest of the observations in ``cells``; ``days[k - 1]`` is month start ``k``."""
    months: dict[int, list[int]] = {k: [0, 0, 0, 0] for k in range(1, len(days) + 1)}
    bands: dict[str, list[int]] = {b: [0, 0] for b in Band.values}
    histogram: dict[Decimal, list[int]] = defaultdict(lambda: [0, 0])
    for cell in cells:
        was_flagged, churned_n = cell.band in FLAGGED, cell.n if cell.churned else 0
        month = months[cell.k]
        month[0] += cell.n
        month[1] += cell.n if was_flagged else 0
        month[2] += churned_n
        month[3] += churned_n if was_flagged else 0
        bands[cell.band][0] += cell.n
        bands[cell.band][1] += churned_n
        histogram[cell.score][0 if cell.churned else 1] += cell.n
    month_rows = tuple(MonthRow(days[k - 1], *counts) for k, counts in sorted(months.items()))
    observations = sum(m.observations for m in month_rows)
    churned = sum(m.churned for m in month_rows)
    flagged = sum(m.flagged for m in month_rows)
    churned_flagged = sum(m.churned_flagged for m in month_rows)
    auc_value = auc({score: (c, s) for score, (c, s) in histogram.items()})
    margin = auc_noise_margin(churned, observations - churned)
    result = Backtest(
        months=month_rows,
        bands=tuple(BandRow(b, *bands[b]) for b in Band.values),
        observations=observations,
        churned=churned,
        flagged=flagged,
        churned_flagged=churned_flagged,
        auc=auc_value,
        auc_margin=margin,
    )
    verdict = verdict_of(
        churned=churned,
        stayed=result.stayed,
        flagged=flagged,
        lift=result.lift,
        auc_value=auc_value,
        margin=margin,
    )
    return replace(result, verdict=verdict)
