"""Deal moves by several people at once, in real processes: no deadlock, no error, no move lost."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import connection

from crm.models import Deal, DealStageChange, PipelineStage
from tests.conftest import seed_defaults
from tests.factories import make_customer, make_deal, make_user

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _run_movers(specs: list[dict]) -> list[list[dict]]:
    """Start one process per spec at the same moment; each returns the result of each of its moves."""
    start_at = time.time() + 4  # each process needs about a second to set Django up and sign in
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.deal_mover", json.dumps({**spec, "start_at": start_at})],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for spec in specs
    ]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-3000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return outputs


def _deadlocks() -> int:
    """Deadlocks PostgreSQL has detected in the test database so far (the processes flush their counts
    when they exit)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return cursor.fetchone()[0]


def test_opposite_moves_between_the_same_two_stages_never_deadlock_or_get_lost():
    """Two people per direction drag their deals between the same two stages at the same moment, back and
    forth: every move answers without an error and every one is recorded."""
    seed_defaults()  # an earlier transactional test may have emptied the tables
    first, second = PipelineStage.objects.filter(pipeline__is_default=True, kind="open").order_by("order")[:2]
    specs = []
    for n in range(4):
        rep = make_user()
        customer = make_customer(rep)
        start, other = (first, second) if n % 2 == 0 else (second, first)
        deals = [make_deal(customer, stage=start) for _ in range(10)]
        # There and back, twice: 40 moves per process, 160 in all.
        route = [other.pk, start.pk, other.pk, start.pk]
        specs.append({"database": connection.settings_dict["NAME"], "user": rep.pk,
                      "deals": [d.pk for d in deals], "stages": route})  # fmt: skip
    deadlocks_before = _deadlocks()
    outputs = _run_movers(specs)

    moves = [move for output in outputs for move in output]
    assert len(moves) == 160
    failed = [m for m in moves if m["status"] != 200 or not any("moved to" in t for t in m["messages"])]
    assert failed == []
    # Not one deadlock, not even one that a retry then hid.
    assert _deadlocks() == deadlocks_before
    for spec in specs:
        for pk in spec["deals"]:
            deal = Deal.objects.get(pk=pk)
            assert deal.stage_id == spec["stages"][-1]
            assert deal.version == 1 + len(spec["stages"])
            # Its creation plus one stage change per move, in order.
            changes = list(DealStageChange.objects.filter(deal=deal).order_by("at", "pk"))
            assert [c.to_stage_id for c in changes[1:]] == spec["stages"]
