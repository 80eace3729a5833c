"""``wapipe db``: ClickHouse migrations."""

from __future__ import annotations

import typer

from wapipe.app.commands.output import console, fail
from wapipe.config import Settings

app = typer.Typer(no_args_is_help=True, help="ClickHouse: migrations.")


@app.command("migrate")
def db_migrate() -> None:
    """Apply pending ClickHouse migrations (each once, in order)."""
    from wapipe.clickhouse import MigrationError, clickhouse_client, migrate

    s = Settings()
    try:
        applied = migrate(clickhouse_client(s.clickhouse_dsn))
    except MigrationError as exc:
        fail(str(exc))
    console.print("\n".join(f"applied {m.version:04d}_{m.name}" for m in applied) or "nothing to apply")
