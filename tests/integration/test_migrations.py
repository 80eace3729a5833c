"""ClickHouse migrations on the real (embedded) engine."""

import datetime as dt

import pytest

from wapipe.clickhouse import Migration, MigrationError, clickhouse_client, load_migrations, migrate

pytestmark = pytest.mark.integration


def test_apply_once_in_order_and_record(tmp_path):
    client = clickhouse_client(f"chdb://{tmp_path / 'ch'}")
    ms = [
        Migration(2, "add_col", "ALTER TABLE m_t ADD COLUMN b String DEFAULT 'x';"),
        Migration(1, "create", "-- first\nCREATE TABLE m_t (a UInt8) ENGINE = MergeTree ORDER BY a;\n"
                               "INSERT INTO m_t (a) VALUES (1);"),
    ]
    assert [m.version for m in migrate(client, ms)] == [1, 2]
    assert client.query("SELECT a, b FROM m_t").result_rows == [(1, "x")]
    rows = client.query("SELECT version, name FROM wapipe_migrations FINAL ORDER BY version").result_rows
    assert rows == [(1, "create"), (2, "add_col")]
    # A second run applies nothing: the INSERT did not run twice.
    assert migrate(client, ms) == []
    assert client.query("SELECT count() FROM m_t").result_rows == [(1,)]


def test_edited_applied_migration_is_an_error(tmp_path):
    client = clickhouse_client(f"chdb://{tmp_path / 'ch'}")
    migrate(client, [Migration(1, "create", "CREATE TABLE e_t (a UInt8) ENGINE = MergeTree ORDER BY a;")])
    with pytest.raises(MigrationError, match="different checksum"):
        migrate(client, [Migration(1, "create", "CREATE TABLE e_t (a UInt16) ENGINE = MergeTree ORDER BY a;")])


def test_failed_statement_is_reported_and_not_recorded(tmp_path):
    client = clickhouse_client(f"chdb://{tmp_path / 'ch'}")
    with pytest.raises(MigrationError, match="0001_bad failed"):
        migrate(client, [Migration(1, "bad", "CREATE TABLE nope (a NoSuchType) ENGINE = Memory;")])
    assert client.query("SELECT count() FROM wapipe_migrations").result_rows == [(0,)]


def test_project_migrations_apply_on_the_embedded_engine(clickhouse):
    applied = clickhouse.query("SELECT count() FROM wapipe_migrations FINAL").result_rows[0][0]
    assert applied == len(load_migrations())


def test_message_states_migration_carries_the_state_machine_of_existing_rows(tmp_path):
    """0012 replaces message_status (a grouping view) by message_states (simple aggregates): a
    database with status rows loaded under 0011 keeps every message's current state."""
    client = clickhouse_client(f"chdb://{tmp_path / 'ch'}")
    every = load_migrations()
    migrate(client, [m for m in every if m.version < 12])
    every = [m for m in every if m.version <= 12]  # 12 is under test here (13 and later: their own)
    cols = ("event_id", "tenant_id", "waba_id", "phone_number_id", "wamid", "status", "status_rank", "timestamp",
            "subject_id", "error_codes", "received_at", "extra", "retention_days")
    # Rows dated yesterday: a fixed date would fall out of the 30-day TTL (it did, on 2026-12-01).
    day = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    at = day + " 10:00:0{}"

    def row(eid, wamid, status, rank, sec, codes=()):
        return [eid, "t1", "w", "p", wamid, status, rank, at.format(sec), "s", list(codes), at.format(0), "{}", 30]

    old = [row("1", "m.a", "read", 3, 3), row("2", "m.a", "sent", 1, 1), row("3", "m.b", "sent", 1, 1),
           row("4", "m.b", "failed", 4, 2, [131026])]
    client.command(f"INSERT INTO status_events ({', '.join(cols)}) VALUES "
                   + ", ".join("(" + ", ".join(repr(v) for v in r) + ")" for r in old))
    assert [m.version for m in migrate(client, every)] == [12]
    # a status arriving after the migration folds into the same message
    client.command(f"INSERT INTO status_events ({', '.join(cols)}) VALUES "
                   + "(" + ", ".join(repr(v) for v in row("5", "m.a", "delivered", 2, 2)) + ")")
    got = client.query("SELECT wamid, status, toString(sent_at), toString(delivered_at), error_codes "
                       "FROM message_status_current ORDER BY wamid").result_rows
    assert got == [("m.a", "read", at.format(1) + ".000", at.format(2) + ".000", []),
                   ("m.b", "failed", at.format(1) + ".000", None, [131026])]
    tables = {r[0] for r in client.query("SHOW TABLES").result_rows}
    assert "message_states" in tables and "message_status" not in tables and "message_status_mv" not in tables
