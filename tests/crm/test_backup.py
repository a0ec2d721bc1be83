"""Backups: a pg_dump of the database restores into a fresh database with the same rows."""

import secrets
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from psycopg import sql

from crm.ops import backup
from tests.conftest import seed_defaults
from tests.factories import make_answer, make_closed_deal, make_customer, make_survey, make_ticket, make_user
from tests.fault_kit import child_database_url

MAIN_TABLES = [
    "accounts_user",
    "accounts_usageevent",
    "crm_customer",
    "crm_historicalcustomer",
    "crm_customerstatuschange",
    "crm_deal",
    "crm_dealstagechange",
    "crm_pipelinestage",
    "crm_ticket",
    "crm_activity",
    "surveys_surveyinvitation",
    "surveys_surveyresponse",
]


def url_for(name: str) -> str:
    """A libpq URL for database ``name`` on the test server."""
    return child_database_url(name)


def row_counts(url: str) -> dict[str, int]:
    counts = {}
    with psycopg.connect(url) as conn:
        for table in MAIN_TABLES:
            query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
            counts[table] = conn.execute(query).fetchone()[0]
    return counts


@pytest.mark.django_db(transaction=True)
def test_backup_restores_into_a_fresh_database_with_the_same_row_counts(tmp_path: Path):
    seed_defaults()  # transactional tests empty the tables
    rep = make_user()
    for n in range(3):
        customer = make_customer(rep, name=f"Backup customer {n}")
        make_closed_deal(customer)
        make_ticket(customer)
    make_answer(make_survey("nps"), customer, 9, customer.created_at)
    source = url_for(connection.settings_dict["NAME"])
    expected = row_counts(source)
    assert expected["crm_customer"] == 3 and expected["surveys_surveyresponse"] == 1

    dump = backup.backup(url=source, directory=tmp_path)
    assert dump.parent == tmp_path and dump.suffix == ".dump" and dump.stat().st_size > 0

    fresh = f"minicrm_sec_restore_{secrets.token_hex(4)}"
    with psycopg.connect(url_for("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(fresh)))
    try:
        backup.restore(url=url_for(fresh), file=dump)
        assert row_counts(url_for(fresh)) == expected
        backup.restore(url=url_for(fresh), file=dump)  # --clean: restoring again replaces, never doubles
        assert row_counts(url_for(fresh)) == expected
    finally:
        with psycopg.connect(url_for("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(fresh)))


def test_tools_match_the_server_version(monkeypatch, tmp_path: Path):
    found = {}
    for major in (15, 18):
        directory = tmp_path / str(major)
        directory.mkdir()
        (directory / "pg_dump").touch()
        found[directory / "pg_dump"] = major
    monkeypatch.setattr(backup, "_candidate_dirs", lambda: [tmp_path / "18", tmp_path / "15"])
    monkeypatch.setattr(backup, "tool_major", lambda binary: found[binary])
    assert backup.find_tool("pg_dump", 15) == tmp_path / "15" / "pg_dump"
    assert backup.find_tool("pg_dump", 18) == tmp_path / "18" / "pg_dump"
    assert backup.find_tool("pg_dump", 16) == tmp_path / "18" / "pg_dump"
    with pytest.raises(SystemExit, match="No pg_dump for PostgreSQL 19"):
        backup.find_tool("pg_dump", 19)
