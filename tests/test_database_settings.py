"""How the database settings follow the environment: pooling, PgBouncer, the replica alias."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fault_kit import child_database_url

ROOT = Path(__file__).resolve().parents[1]
PRINT = (
    "import django, json; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({a: {k: s.DATABASES[a].get(k) for k in ('CONN_MAX_AGE', 'OPTIONS', "
    "'DISABLE_SERVER_SIDE_CURSORS', 'PORT', 'TEST')} for a in s.DATABASES} | {'read': s.READ_REPLICA}))"
)


def databases(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "DJANGO_CONN"))}
    result = subprocess.run(
        [sys.executable, "-c", PRINT],
        cwd=ROOT,
        env={
            **clean,
            "DJANGO_SETTINGS_MODULE": "crm.settings",
            "DATABASE_URL": child_database_url(),
            **env,
        },
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_by_default_a_process_keeps_its_connection_and_reads_the_primary():
    found = databases()
    assert found["default"]["CONN_MAX_AGE"] == 60 and not found["default"]["OPTIONS"]
    assert found["replica"]["TEST"]["MIRROR"] == "default" and found["read"] is False


def test_pool_pgbouncer_and_replica_from_the_environment():
    found = databases(
        DATABASE_POOL="4",
        DATABASE_PGBOUNCER="true",
        DATABASE_REPLICA_URL="postgres://u@replica.example:6543/crm",
    )
    default = found["default"]
    assert default["CONN_MAX_AGE"] == 0 and default["OPTIONS"]["pool"] == {"min_size": 1, "max_size": 4}
    assert default["DISABLE_SERVER_SIDE_CURSORS"] is True and default["OPTIONS"]["prepare_threshold"] is None
    assert found["replica"]["PORT"] == 6543 and found["read"] is True
