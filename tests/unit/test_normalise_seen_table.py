"""The normaliser's seen table: the changelog topic `wapipe normalise` creates with its retention
is the one faust writes and recovers from, and the table lives in RocksDB under the state dir."""

from processors.normalise.app import SEEN_TABLE, build_app, seen_changelog
from tests.harness import make_settings


def test_seen_table_uses_the_declared_changelog_and_a_persistent_store(tmp_path):
    s = make_settings(tmp_path / "state", normalise_app_id="normalise-unit", normalise_dedup_window_s=3600)
    app = build_app(s, "127.0.0.1:9", normaliser=None)
    table = app.tables[SEEN_TABLE]
    spec = seen_changelog(s)
    assert table.changelog_topic.get_topic_name() == spec.name
    assert spec.extra == {"cleanup.policy": "compact,delete", "retention.ms": str((3600 + 24 * 3600) * 1000)}
    assert str(app.conf.store).startswith("rocksdb:")
    assert str(app.conf.datadir).startswith(str(tmp_path / "state"))
