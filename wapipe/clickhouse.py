"""ClickHouse clients from one URL, and the migration runner.

``CLICKHOUSE_URL`` unset → the embedded engine (chDB) on ``<state>/chdb`` through
clickhouse-connect's ``chdb://`` DSN; ``http(s)://user:pass@host:port/db`` → a server. Same SQL.
chDB lets one process at a time open a data folder: with the embedded default, the process
that owns ClickHouse (the sink) answers everyone else's queries (see docs/architecture.md).

Migrations are ``sinks/migrations/NNNN_<name>.sql``: statements separated by ``;`` at a line end.
Each is applied once, in order, and recorded in ``wapipe_migrations`` with its checksum; an
applied migration whose file changed is an error, never silently re-run or skipped.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from wapipe.config import REPO_ROOT

MIGRATIONS_DIR = REPO_ROOT / "sinks" / "migrations"
_NAME_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


def clickhouse_client(dsn: str) -> Client:
    if dsn.startswith("chdb://"):
        Path(dsn.removeprefix("chdb://")).mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=dsn)


def embedded_held(dsn: str) -> bool:
    """Whether another process holds the embedded engine's folder (chDB, like clickhouse-server,
    takes an exclusive flock on ``<folder>/status``; its error text does not always say so)."""
    if not dsn.startswith("chdb://"):
        return False
    status = Path(dsn.removeprefix("chdb://")) / "status"
    if not status.exists():
        return False
    with open(status, "rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    def statements(self) -> list[str]:
        return [s.strip() for s in re.split(r";\s*$", self.sql, flags=re.M) if _has_sql(s)]


def _has_sql(chunk: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in chunk.splitlines())


class MigrationError(RuntimeError):
    pass


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    out = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME_RE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migrations are named NNNN_lower_snake.sql")
        out.append(Migration(int(m["version"]), m["name"], path.read_text()))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version in {directory}")
    return out


def applied_migrations(client: Client) -> dict[int, tuple[str, str]]:
    client.command(
        "CREATE TABLE IF NOT EXISTS wapipe_migrations (version UInt32, name String, checksum String,"
        " applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    rows = client.query("SELECT version, name, checksum FROM wapipe_migrations FINAL ORDER BY version").result_rows
    return {int(v): (n, c) for v, n, c in rows}


def migrate(client: Client, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply what is pending, in order. Returns the migrations applied by this call."""
    migrations = load_migrations() if migrations is None else migrations
    done = applied_migrations(client)
    for m in migrations:
        if m.version in done and done[m.version][1] != m.checksum:
            raise MigrationError(
                f"migration {m.version:04d}_{m.name} was applied with a different checksum: "
                "add a new migration instead of editing an applied one"
            )
    applied = []
    for m in sorted(migrations, key=lambda m: m.version):
        if m.version in done:
            continue
        for stmt in m.statements():
            try:
                client.command(stmt)
            except Exception as exc:
                raise MigrationError(f"{m.version:04d}_{m.name} failed on:\n{stmt}\n{exc}") from exc
        client.insert("wapipe_migrations", [[m.version, m.name, m.checksum]], column_names=["version", "name", "checksum"])
        applied.append(m)
    return applied
