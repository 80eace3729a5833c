"""ClickHouse migrations on the real (embedded) engine."""

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
