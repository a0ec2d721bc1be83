"""``manage.py recompute_kpis``."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from metrics.models import KpiSnapshot, SnapshotRun
from tests.factories import make_closed_deal, make_customer
from tests.metrics.kit import local

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command("recompute_kpis", *args, "--no-progress", stdout=out)
    return out.getvalue()


def test_recompute_kpis_for_a_range_granularity_and_kpis():
    make_closed_deal(make_customer(at=local(2025, 1, 1)), created=local(2026, 3, 2), closed=local(2026, 3, 3))
    output = run(
        "--start",
        "2026-03-01",
        "--end",
        "2026-04-01",
        "--granularity",
        "month",
        "--kpi",
        "win_rate",
        "--kpi",
        "deals_won",
    )
    assert "Finished" in output
    assert set(KpiSnapshot.objects.values_list("kpi", "granularity").distinct()) == {
        ("win_rate", "month"),
        ("deals_won", "month"),
    }
    assert KpiSnapshot.objects.get(kpi="deals_won", scope="company").value == 1
    # The run explains where its time went: per dataset, its milliseconds and grouped rows.
    spent = SnapshotRun.objects.get().datasets["closed_deals"]
    assert spent["scan_ms"] >= 0 and spent["rows"] >= 1
    assert "closed_deals: " in output and " grouped rows" in output
    # Quiet (make demo): the one summary line.
    quiet = run("--start", "2026-03-01", "--end", "2026-04-01", "--kpi", "win_rate", "-v", "0")
    assert quiet.startswith("Finished") and len(quiet.strip().splitlines()) == 1


def test_recompute_kpis_defaults_to_the_whole_history():
    make_closed_deal(
        make_customer(at=local(2025, 11, 5)), created=local(2025, 11, 6), closed=local(2026, 1, 3)
    )
    run("--kpi", "deals_won")
    run_row = SnapshotRun.objects.get()
    assert run_row.range_start == local(2025, 1, 1)  # the year of the first customer: its longest period
    assert set(KpiSnapshot.objects.values_list("granularity", flat=True)) == {
        "week",
        "month",
        "quarter",
        "year",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "2026-04-01", "--end", "2026-03-01"], "must be after"),
        (["--granularity", "fortnight"], "unknown granularity"),
        (["--kpi", "happiness"], "unknown KPI"),
        (["--start", "yesterday"], "is not a date"),
    ],
)
def test_recompute_kpis_refuses_nonsense(args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
