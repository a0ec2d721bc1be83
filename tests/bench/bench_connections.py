"""How many PostgreSQL connections 5 web processes and 4 workers hold, and what each way of holding them
costs a page (a script, not collected by pytest).

    DATABASE_URL=postgres://…/minicrm_bench .venv/bin/python tests/bench/bench_connections.py [--requests 300]

For each variant it starts what docker-compose runs, on this machine: gunicorn with 5 processes of one
thread, and a Celery worker with 4 pool processes (on its own Redis database); signs a rep in; sends
``--requests`` page requests from 5 client threads (the workspace and the deal list, alternately) while
the worker runs 40 short tasks and 8 duplicate scans; and counts the database's client connections while
that load runs and after it:

- ``persistent``: each process keeps one connection (``DJANGO_CONN_MAX_AGE=60``, the default);
- ``per_request``: a new connection per request and task (``DJANGO_CONN_MAX_AGE=0``);
- ``pool``: Django's psycopg pool, 1 to 4 connections per process (``DATABASE_POOL=4``; needs
  psycopg-pool, which the project does not install: ``uv pip install psycopg-pool`` for this run);
- ``pgbouncer``: every process keeps its connection to a PgBouncer in transaction mode with 4 server
  connections (``DATABASE_PGBOUNCER=true``; the script starts ``pgbouncer`` from PATH or /usr/sbin, as the
  ``postgres`` user when run as root).

Prints the CPU check, then per variant the page latency (median, p95) and the connections (most seen
during the load, and after it).
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
os.environ["DJANGO_SECURE"] = "false"
os.environ["DJANGO_ALLOWED_HOSTS"] = "127.0.0.1,localhost,testserver"

from tests.bench.machine import cpu_check  # noqa: E402
from tests.fault_kit import free_port, stop, wait_for_port  # noqa: E402

VARIANTS = {
    "persistent": {"DJANGO_CONN_MAX_AGE": "60"},
    "per_request": {"DJANGO_CONN_MAX_AGE": "0"},
    "pool": {"DATABASE_POOL": "4"},
    "pgbouncer": {"DJANGO_CONN_MAX_AGE": "60", "DATABASE_PGBOUNCER": "true"},
}
PAGES = ("/crm/", "/crm/deals/")


def connections_now(database: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
            " AND pid <> pg_backend_pid()",
            [database],
        )
        return cursor.fetchone()[0]


@contextmanager
def pgbouncer(database_url: str) -> Iterator[str]:
    """A PgBouncer in transaction mode in front of ``database_url``'s server; yields the URL through it."""
    parts = urlsplit(database_url)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="crm-pgbouncer-") as workdir:
        root = Path(workdir)
        (root / "userlist.txt").write_text(f'"{parts.username}" ""\n')
        (root / "pgbouncer.ini").write_text(
            f"[databases]\n* = host={parts.hostname} port={parts.port or 5432}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {root / 'userlist.txt'}\npool_mode = transaction\n"
            "default_pool_size = 4\nmax_client_conn = 200\nignore_startup_parameters = extra_float_digits\n"
            f"logfile = {root / 'pgbouncer.log'}\npidfile = {root / 'pgbouncer.pid'}\n"
        )
        command = [shutil.which("pgbouncer") or "/usr/sbin/pgbouncer", str(root / "pgbouncer.ini")]
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            for child in root.iterdir():
                shutil.chown(child, "postgres")
            command = ["runuser", "-u", "postgres", "--", *command]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port)
            yield urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))
        finally:
            stop(process)


def run_variant(name: str, extra: dict[str, str], cookie: str, requests: int, database: str) -> dict:
    if name == "pgbouncer":
        with pgbouncer(os.environ["DATABASE_URL"]) as url:
            return serve(name, {**extra, "DATABASE_URL": url}, cookie, requests, database)
    return serve(name, extra, cookie, requests, database)


def serve(name: str, extra: dict[str, str], cookie: str, requests: int, database: str) -> dict:
    port = free_port()
    env = {**os.environ, **extra, "CRM_CACHE_PREFIX": f"conn-{name}"}
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "crm.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "5",
         "--threads", "1", "--worker-class", "gthread", "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "crm", "worker", "--concurrency", "4", "--loglevel", "warning",
         "-n", f"conn-{name}@%h", "--without-heartbeat", "--without-gossip", "--without-mingle"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port, timeout=60)
        from crm.celery import app

        timings: list[float] = []
        seen: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                seen.append(connections_now(database))
                time.sleep(0.2)

        def fetch(i: int) -> None:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{PAGES[i % 2]}")
            request.add_header("Cookie", cookie)
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (our own server)
                assert response.status == 200, response.status
                response.read()
            timings.append((time.perf_counter() - started) * 1000)

        for i in range(10):  # warm-up: every process has served and connected
            fetch(i)
        timings.clear()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for _ in range(40):
            app.send_task("accounts.tasks.clear_expired_sessions")
        for _ in range(8):  # a few seconds each: every pool process gets work
            app.send_task("crm.tasks.scan_duplicates")
        with ThreadPoolExecutor(5) as pool:
            list(pool.map(fetch, range(requests)))
        time.sleep(2)
        done.set()
        sampler.join()
        timings.sort()
        return {
            "median_ms": statistics.median(timings),
            "p95_ms": timings[int(len(timings) * 0.95) - 1],
            "connections_most": max(seen),
            "connections_after": connections_now(database),
        }
    finally:
        stop(web, timeout=20)
        stop(worker, timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    os.environ["REDIS_URL"] = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/10")

    import django

    django.setup()
    from django.conf import settings
    from django.db import connection
    from django.test import Client

    from accounts.models import User

    database = connection.settings_dict["NAME"]
    rep = User.objects.filter(role=User.Role.REP, is_active=True).first()
    client = Client()
    client.force_login(rep)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    print(
        f"CPU check (10 M Python additions): {cpu_check():.2f} s; database {database}; {args.requests} pages"
    )
    for name in args.variants.split(","):
        found = run_variant(name, VARIANTS[name], cookie, args.requests, database)
        print(
            f"{name:12} page median {found['median_ms']:.1f} ms, p95 {found['p95_ms']:.1f} ms; connections "
            f"during the load at most {found['connections_most']}, after it {found['connections_after']}"
        )


if __name__ == "__main__":
    main()
