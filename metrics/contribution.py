"""Why did a KPI change? Its change split over the segments of a breakdown (KPIS.md §10.4).

- Sums and counts: a segment contributes its own change; the contributions add up to the total change.
- Ratios r = Σnᵢ / Σdᵢ, with denominator shares wᵢ = dᵢ / Σd: the **rate effect** wᵢ(before) × (rᵢ(now) −
  rᵢ(before)) and the **mix effect** (wᵢ(now) − wᵢ(before)) × rᵢ(now); over all segments rate + mix is the
  change of r exactly. A segment present in one period only has no rate of its own in the other: it is
  given the rate it has, so its whole contribution is mix.

Pure functions over snapshot values (per segment: numerator, denominator, value, sample size).
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

ZERO = Decimal(0)


@dataclass(frozen=True)
class Segment:
    """One segment's numbers in one period."""

    value: Decimal | None
    numerator: Decimal | None = None
    denominator: Decimal | None = None
    n: int | None = None


@dataclass(frozen=True)
class Contribution:
    key: str
    # Sums and counts: the segment's own change. Ratios: rate + mix.
    total: Decimal
    rate: Decimal | None = None
    mix: Decimal | None = None
    # The segment's sample now (its denominator for a ratio): a ranking leaves out segments below the
    # KPI's minimum sample (they stay in the table).
    n: int | None = None

    @property
    def ranked_by(self) -> Decimal:
        return self.rate if self.rate is not None else self.total


def of_sums(now: dict[str, Segment], before: dict[str, Segment]) -> list[Contribution]:
    """Each segment's change of a sum or count (a segment missing in a period counts 0 there)."""
    found = []
    for key in now.keys() | before.keys():
        a, b = now.get(key), before.get(key)
        change = (a.value if a and a.value is not None else ZERO) - (
            b.value if b and b.value is not None else ZERO
        )
        found.append(Contribution(key, change, n=a.n if a else None))
    return found


def of_ratio(
    now: dict[str, Segment], before: dict[str, Segment], scale: Decimal
) -> list[Contribution] | None:
    """Rate and mix effects of each segment on a ratio (× ``scale``: 100 for a percentage); None when a
    period has no denominator at all (no ratio to explain)."""
    total_now = sum((s.denominator or ZERO) for s in now.values())
    total_before = sum((s.denominator or ZERO) for s in before.values())
    if not total_now or not total_before:
        return None

    def rate(s: Segment | None) -> Decimal | None:
        return (s.numerator or ZERO) * scale / s.denominator if s and s.denominator else None

    found = []
    for key in now.keys() | before.keys():
        a, b = now.get(key), before.get(key)
        w_now = (a.denominator or ZERO) / total_now if a else ZERO
        w_before = (b.denominator or ZERO) / total_before if b else ZERO
        r_now, r_before = rate(a), rate(b)
        r_now = r_before if r_now is None else r_now
        r_before = r_now if r_before is None else r_before
        if r_now is None:  # no denominator on either side: nothing to contribute
            continue
        rate_effect, mix_effect = w_before * (r_now - r_before), (w_now - w_before) * r_now
        n = int(a.denominator) if a and a.denominator is not None else 0
        found.append(Contribution(key, rate_effect + mix_effect, rate_effect, mix_effect, n))
    return found


class Snapshot(Protocol):
    """What a contribution reads of a segment's snapshot (a row or its values)."""

    value: Decimal | None
    numerator: Decimal | None
    denominator: Decimal | None
    sample_size: int | None


def segment(s: Snapshot) -> Segment:
    return Segment(s.value, s.numerator, s.denominator, s.sample_size)


def top(contributions: list[Contribution], *, minimum: int, count: int = 3) -> tuple[list, list]:
    """The ``count`` segments that pushed the KPI up most and down most (by rate effect for a ratio),
    leaving out segments whose sample is below ``minimum``."""
    ranked = [c for c in contributions if c.n is None or c.n >= minimum]
    up = sorted((c for c in ranked if c.ranked_by > 0), key=lambda c: c.ranked_by, reverse=True)[:count]
    down = sorted((c for c in ranked if c.ranked_by < 0), key=lambda c: c.ranked_by)[:count]
    return up, down


def biggest(contributions: list[Contribution], *, minimum: int) -> Contribution | None:
    """The segment that moved the KPI most in the direction it moved (by rate effect for a ratio): the
    one a one-sentence summary names. None when no segment with enough sample moved it that way."""
    change = sum((c.total for c in contributions), ZERO)
    if not change:
        return None
    up, down = top(contributions, minimum=minimum, count=1)
    found = up if change > 0 else down
    return found[0] if found else None
