"""Celery across hosts: each kind of work on its own queue (crm/settings.py TASK_QUEUES, CELERY_TASK_ROUTES),
workers per queue group, and a worker lost with its host without losing or repeating work."""

import os
import signal
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from crm.celery import app
from crm.data import imports
from crm.models import Customer, ImportJob
from metrics.models import SnapshotRun
from tests.conftest import seed_defaults
from tests.factories import make_import_job, make_user
from tests.fault_kit import celery_broker, child_database_url, redis_server
from tests.test_faults import celery_worker, pool_children, wait_until

# A task whose worker died goes back to its queue after this long (the production default is 2 hours).
VISIBILITY_TIMEOUT = 30


def queue_of(task: str) -> str:
    return app.amqp.router.route({}, task)["queue"].name


def test_each_kind_of_work_has_its_queue_and_every_task_a_declared_one():
    app.loader.import_default_modules()
    ours = [name for name in app.tasks if name.split(".")[0] in ("accounts", "crm", "metrics", "surveys")]
    assert len(ours) >= 25
    assert {queue_of(name) for name in ours} == set(settings.TASK_QUEUES)
    assert queue_of("metrics.tasks.rebuild_all_kpi_snapshots") == "kpis"
    assert queue_of("metrics.tasks.refresh_customer_health") == "kpis"
    assert queue_of("metrics.tasks.send_weekly_reports") == "mail"
    assert queue_of("crm.tasks.run_import") == "imports"
    assert queue_of("crm.tasks.scan_duplicates") == "imports"
    assert queue_of("crm.tasks.deliver_webhook") == "webhooks"
    assert queue_of("surveys.tasks.send_ticket_surveys") == "surveys"
    assert queue_of("crm.tasks.run_automation") == "celery"
    # A worker started without -Q (the demo's, the tests') consumes every queue.
    assert [q.name for q in app.conf.task_queues] == list(settings.TASK_QUEUES)


def worker(redis_url: str, name: str, queues: list[str], log_dir: Path):
    """A named worker consuming only ``queues``, whose lost tasks come back after ``VISIBILITY_TIMEOUT``."""
    env = {"CRM_CACHE_PREFIX": "queues-worker", "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT)}
    return celery_worker(redis_url, log_dir / f"{name}.log", name=name, queues=queues, env=env)


def waiting_on_a_lock() -> list[tuple[int]]:
    """Backends of other sessions waiting for a lock to write customers in the test database."""
    with psycopg.connect(child_database_url(), autocommit=True) as conn:
        return conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            " AND pid <> pg_backend_pid() AND query ILIKE '%crm_customer%'"
        ).fetchall()


def received(log_dir: Path, name: str, task: str) -> int:
    """How many times the worker's log says it received ``task``."""
    lines = (log_dir / f"{name}.log").read_text(errors="replace").splitlines()
    return sum(f"Task {task}[" in line and line.endswith("] received") for line in lines)


@pytest.mark.django_db(transaction=True)
def test_three_workers_on_their_queues_one_lost_mid_import_and_nothing_is_lost_or_done_twice(tmp_path):
    seed_defaults()
    rep = make_user()
    rows = "name,email\n" + "".join(f"Queue Kunde {i},kunde{i}@queues.example\n" for i in range(40))
    job = make_import_job(rep, rows, name="kunden.csv")
    messages = ["celery", "mail", "surveys", "webhooks"]
    with (
        redis_server() as (redis_url, _redis),
        celery_broker(redis_url),
        worker(redis_url, "kpis", ["kpis"], tmp_path),
        worker(redis_url, "imports", ["imports"], tmp_path) as importer,
        worker(redis_url, "messages", messages, tmp_path),
    ):
        with psycopg.connect(child_database_url(), autocommit=False) as lock:
            # The import's writes wait behind this lock: the worker is lost in the middle of its run.
            lock.execute("LOCK TABLE crm_customer IN SHARE MODE")
            imports.import_job_start(job=job, actor=rep, mode="create", all_or_nothing=True)
            app.send_task("metrics.tasks.recompute_recent_kpi_snapshots")
            app.send_task("accounts.tasks.clear_expired_sessions")
            blocked = wait_until(waiting_on_a_lock, timeout=90, what="the import's writes")
            # The host goes: the worker and its pool process die at once, nothing is acknowledged.
            for pid in [*pool_children(importer.pid), importer.pid]:
                os.kill(pid, signal.SIGKILL)
            importer.wait(timeout=10)
            # PostgreSQL ends the lost client's session (here at once; on a real host loss at its keepalive).
            for (pid,) in blocked:
                lock.execute("SELECT pg_terminate_backend(%s)", [pid])
            lock.rollback()

        # The other queues' workers carry on meanwhile.
        kpi_runs = SnapshotRun.objects.filter(
            status=SnapshotRun.Status.OK
        )  # the first one rebuilds everything
        wait_until(kpi_runs.exists, timeout=90, what="the KPI run on the kpis worker")
        wait_until(
            lambda: "succeeded" in (tmp_path / "messages.log").read_text(),
            timeout=60,
            what="the housekeeping task on the messages worker",
        )
        job.refresh_from_db()
        assert job.status == ImportJob.Status.QUEUED  # the lost run left nothing behind
        assert not Customer.objects.filter(name__startswith="Queue Kunde").exists()

        # Another host's imports worker takes the task once its visibility timeout has passed.
        with worker(redis_url, "imports-2", ["imports"], tmp_path):
            wait_until(
                lambda: ImportJob.objects.filter(pk=job.pk, status=ImportJob.Status.DONE).exists(),
                timeout=VISIBILITY_TIMEOUT + 90,
                what="the redelivered import",
            )

    job.refresh_from_db()
    assert job.created_count == 40
    created = Customer.objects.filter(name__startswith="Queue Kunde")
    assert created.count() == 40 and created.values("email").distinct().count() == 40
    assert kpi_runs.count() == 1
    # Each task went to its queue's worker only.
    assert received(tmp_path, "imports", "crm.tasks.run_import") == 1
    assert received(tmp_path, "imports-2", "crm.tasks.run_import") == 1
    assert received(tmp_path, "kpis", "metrics.tasks.recompute_recent_kpi_snapshots") == 1
    assert received(tmp_path, "messages", "accounts.tasks.clear_expired_sessions") == 1
    for name in ("kpis", "messages"):
        assert received(tmp_path, name, "crm.tasks.run_import") == 0
