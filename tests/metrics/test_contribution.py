"""Why a KPI changed: contributions by segment (KPIS.md §10.4), worked by hand."""

from decimal import Decimal as D

from metrics.contribution import Segment, of_ratio, of_sums, top


def test_rate_and_mix_effects_add_up_to_the_change_of_a_ratio():
    # Team A: 10 of 20 (50 %) -> 12 of 20 (60 %); team B: 5 of 20 (25 %) -> 3 of 10 (30 %).
    # The whole: 15 of 40 (37.5 %) -> 15 of 30 (50 %), +12.5 pp.
    before = {"a": Segment(D(50), D(10), D(20)), "b": Segment(D(25), D(5), D(20))}
    now = {"a": Segment(D(60), D(12), D(20)), "b": Segment(D(30), D(3), D(10))}
    found = {c.key: c for c in of_ratio(now, before, D(100))}
    # A: rate ½ × (60 − 50) = 5, mix (⅔ − ½) × 60 = 10; B: rate ½ × (30 − 25) = 2.5, mix (⅓ − ½) × 30 = −5.
    assert round(found["a"].rate, 6) == D(5) and round(found["a"].mix, 6) == D(10)
    assert round(found["b"].rate, 6) == D("2.5") and round(found["b"].mix, 6) == D(-5)
    assert round(sum(c.total for c in found.values()), 6) == D("12.5")


def test_a_segment_in_one_period_only_contributes_mix():
    before = {"a": Segment(D(50), D(5), D(10)), "gone": Segment(D(100), D(10), D(10))}
    now = {"a": Segment(D(50), D(5), D(10)), "new": Segment(D(0), D(0), D(10))}
    found = {c.key: c for c in of_ratio(now, before, D(100))}
    assert found["gone"].rate == 0 and found["new"].rate == 0
    # 75 % (15 of 20) -> 25 % (5 of 20): −50 pp, all of it from who is in the denominator.
    assert round(sum(c.total for c in found.values()), 6) == D(-50)
    assert of_ratio(now, {}, D(100)) is None


def test_sums_and_the_top_three_each_way_without_small_segments():
    before = {k: Segment(D(v), n=20) for k, v in {"a": 10, "b": 10, "c": 10, "d": 10, "e": 10}.items()}
    now = {k: Segment(D(v), n=20) for k, v in {"a": 15, "b": 12, "c": 11, "d": 14, "e": 4}.items()}
    now["tiny"] = Segment(D(30), n=2)
    found = of_sums(now, before)
    assert sum(c.total for c in found) == D(30 + 56 - 50)
    up, down = top(found, minimum=10)
    assert [c.key for c in up] == ["a", "d", "b"] and [c.key for c in down] == ["e"]
