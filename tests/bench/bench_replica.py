"""The read replica against a real PostgreSQL streaming replica (a script, not collected by pytest).

    .venv/bin/python tests/bench/bench_replica.py [--size tiny] [--keep]

Starts a primary of its own (``initdb``, with a replication entry in its ``pg_hba.conf``: the shared server's
has none, and its configuration is not ours to change) and a streaming replica of it
(``pg_basebackup -R``), both logging every statement, from the PostgreSQL server binaries on the machine
(``pg_config --bindir``, else the newest ``/usr/lib/postgresql/*/bin``; run as the ``postgres`` user when
started as root). Then, in this process, with ``DATABASE_URL`` on the primary and ``DATABASE_REPLICA_URL`` on
the replica: migrates, seeds the demo, computes the KPIs, and shows from the two servers' statement logs

1. the manager's dashboard and a KPI page reading their snapshots on the replica (none on the primary);
2. a rep's write followed at once by a read (the list export) served by the primary, with the new row, and
   the same read from the replica once the pin has expired;
3. the lag fallback: replay paused on the replica, a write on the primary, and once the lag passes
   ``READ_REPLICA_MAX_LAG_SECONDS`` the dashboard reads from the primary; replay resumed, back to the
   replica.

Prints each step's statement counts per server and PASS or FAIL; exits 1 on a failure.
"""

import argparse
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.fault_kit import free_port  # noqa: E402


def bindir() -> Path:
    found = shutil.which("pg_config")
    if found:
        path = Path(subprocess.run([found, "--bindir"], capture_output=True, text=True).stdout.strip())
        if (path / "initdb").exists():
            return path
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]))
    if not candidates:
        sys.exit("no PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) found")
    return Path(candidates[-1])


class Servers:
    """A primary and its streaming replica in a temporary directory."""

    def __init__(self, root: Path) -> None:
        self.root, self.bin = root, bindir()
        self.primary_port, self.replica_port = free_port(), free_port()
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)

    def run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True)

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start(self) -> None:
        primary, replica = self.root / "primary", self.root / "replica"
        self.run("initdb", "-D", str(primary), "-U", "postgres", "-A", "trust", "--no-sync")
        with open(primary / "pg_hba.conf", "a") as hba:
            hba.write("host replication all 127.0.0.1/32 trust\n")
        settings = (
            f"-p {{port}} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c log_statement=all -c log_min_messages=warning -c fsync=off"
        )
        self.run(
            "pg_ctl",
            "-D",
            str(primary),
            "-l",
            str(self.log("primary")),
            "-w",
            "-o",
            settings.format(port=self.primary_port),
            "start",
        )
        self.run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary_port),
            "-U",
            "postgres",
            "-D",
            str(replica),
            "-R",
            "-X",
            "stream",
        )
        self.run(
            "pg_ctl",
            "-D",
            str(replica),
            "-l",
            str(self.log("replica")),
            "-w",
            "-o",
            settings.format(port=self.replica_port),
            "start",
        )

    def stop(self) -> None:
        for name in ("replica", "primary"):
            if (self.root / name / "postmaster.pid").exists():
                self.run("pg_ctl", "-D", str(self.root / name), "-m", "fast", "-w", "stop")


class Logs:
    """Counts what each server ran since the last mark."""

    def __init__(self, servers: Servers) -> None:
        self.paths = {name: servers.log(name) for name in ("primary", "replica")}
        self.mark()

    def mark(self) -> None:
        self.offsets = {name: path.stat().st_size for name, path in self.paths.items()}

    def since(self, name: str) -> str:
        with open(self.paths[name], encoding="utf-8", errors="replace") as f:
            f.seek(self.offsets[name])
            return f.read()

    def count(self, name: str, text: str) -> int:
        """Lines of the server's statement log since the mark that name ``text``."""
        return sum(text in line for line in self.since(name).splitlines())


def check(results: list[bool], label: str, ok: bool, detail: str) -> None:
    results.append(ok)
    print(f"  {'PASS' if ok else 'FAIL'}  {label}: {detail}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="tiny", help="seed_demo --size (default tiny)")
    parser.add_argument("--keep", action="store_true", help="leave the servers' directory behind")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="minicrm-replica-"))
    servers = Servers(root)
    started = time.monotonic()
    servers.start()
    print(
        f"primary on 127.0.0.1:{servers.primary_port}, streaming replica on 127.0.0.1:{servers.replica_port}"
        f" ({servers.bin}), started in {time.monotonic() - started:.1f} s"
    )
    try:
        return exercise(servers, args.size)
    finally:
        servers.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def exercise(servers: Servers, size: str) -> int:
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-p",
            str(servers.primary_port),
            "-U",
            "postgres",
            "-qc",
            "CREATE DATABASE minicrm",
        ],
        check=True,
    )
    base = "postgres://postgres@127.0.0.1:{}/minicrm"
    os.environ["DATABASE_URL"] = base.format(servers.primary_port)
    os.environ["DATABASE_REPLICA_URL"] = base.format(servers.replica_port)
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/10")
    os.environ.setdefault("CRM_CACHE_PREFIX", "replicacheck")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crm.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections
    from django.test import Client
    from django.urls import reverse

    from accounts.models import User
    from crm.models import Customer
    from crm.ops import replica
    from metrics.services import bump_generation

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    settings.SECURE_SSL_REDIRECT = False
    clock = time.monotonic()
    call_command("migrate", verbosity=0)
    call_command("seed_demo", "--size", size, "--reset", verbosity=0)
    call_command("recompute_kpis", "--no-progress", verbosity=0)
    print(
        f"migrated, seeded ({size}) and computed the KPIs on the primary in {time.monotonic() - clock:.1f} s"
    )

    def caught_up(timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while (lag := replica.replica_lag()) != 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        replica.forget_lag()
        return lag if lag is not None else float("inf")

    print(
        f"replica caught up (lag {caught_up():.1f} s); READ_REPLICA={settings.READ_REPLICA}, "
        f"pin {settings.READ_REPLICA_PIN_SECONDS} s, max lag {settings.READ_REPLICA_MAX_LAG_SECONDS} s"
    )
    logs = Logs(servers)
    results: list[bool] = []
    snapshot = '"metrics_kpisnapshot"'

    print("1. the dashboard and a KPI page read from the replica")
    manager = Client()
    manager.force_login(User.objects.filter(role=User.Role.MANAGER, is_active=True).first())
    bump_generation()
    logs.mark()
    for url in (reverse("metrics:dashboard"), reverse("metrics:kpi_detail", args=["win_rate"])):
        assert manager.get(url).status_code == 200, url
    on_replica, on_primary = logs.count("replica", snapshot), logs.count("primary", snapshot)
    check(
        results,
        "snapshot reads",
        on_replica > 0 and on_primary == 0,
        f"{on_replica} log lines on the replica, {on_primary} on the primary; the session on the primary: "
        f"{logs.count('primary', 'django_session')} lines",
    )

    print("2. a write, then a read at once: the primary; after the pin: the replica")
    rep_user = User.objects.filter(role=User.Role.REP, is_active=True).first()
    rep = Client()
    rep.force_login(rep_user)
    logs.mark()
    payload = {"name": "Replica Check GmbH", "kind": "company", "source": "referral", "language": "en"}
    response = rep.post(reverse("crm:customer_create"), payload)
    assert response.status_code == 302, response.status_code
    export = rep.get(reverse("crm:customer_export"))
    body = b"".join(export.streaming_content).decode()
    customers = '"crm_customer"'
    check(
        results,
        "read after write",
        "Replica Check GmbH" in body and logs.count("replica", customers) == 0,
        f"the export has the new customer: {'Replica Check GmbH' in body}; customer reads on the primary "
        f"{logs.count('primary', customers)}, on the replica {logs.count('replica', customers)}; "
        f"pin cookie max-age {response.cookies['crm_primary']['max-age']} s",
    )
    time.sleep(settings.READ_REPLICA_PIN_SECONDS + 0.5)
    rep.cookies.pop("crm_primary", None)  # the test client keeps expired cookies; a browser drops them
    logs.mark()
    body = b"".join(rep.get(reverse("crm:customer_export")).streaming_content).decode()
    check(
        results,
        "after the pin",
        "Replica Check GmbH" in body and logs.count("replica", customers) > 0,
        f"customer reads on the replica {logs.count('replica', customers)}, on the primary "
        f"{logs.count('primary', customers)}",
    )

    print("3. the lag fallback")
    with connections["replica"].cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_pause()")
    Customer.objects.filter(pk=Customer.objects.order_by("pk").values("pk")[:1]).update(city="Lag Check")
    time.sleep(settings.READ_REPLICA_MAX_LAG_SECONDS + 1.5)
    lag = replica.replica_lag()
    replica.forget_lag()
    bump_generation()
    logs.mark()
    assert manager.get(reverse("metrics:dashboard")).status_code == 200
    check(
        results,
        "lagging replica left",
        logs.count("replica", snapshot) == 0 and logs.count("primary", snapshot) > 0,
        f"replay paused, lag {lag:.1f} s > {settings.READ_REPLICA_MAX_LAG_SECONDS} s: snapshot reads on the "
        f"primary {logs.count('primary', snapshot)}, on the replica {logs.count('replica', snapshot)}",
    )
    with connections["replica"].cursor() as cursor:
        cursor.execute("SELECT pg_wal_replay_resume()")
    lag = caught_up()
    bump_generation()
    logs.mark()
    assert manager.get(reverse("metrics:dashboard")).status_code == 200
    check(
        results,
        "caught up again",
        logs.count("replica", snapshot) > 0 and logs.count("primary", snapshot) == 0,
        f"replay resumed, lag {lag:.1f} s: snapshot reads on the replica "
        f"{logs.count('replica', snapshot)}, on the primary {logs.count('primary', snapshot)}",
    )
    connections.close_all()
    print(f"{sum(results)} of {len(results)} checks passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
