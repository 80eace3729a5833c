"""Secrets from files: `<NAME>_FILE` for any setting (Docker/Kubernetes secrets)."""

import pytest

from wapipe.config import Settings


def test_any_setting_can_come_from_a_file(tmp_path, monkeypatch):
    apps, key, url = tmp_path / "apps", tmp_path / "key", tmp_path / "url"
    apps.write_text('{"1234": "app-secret"}\n')
    key.write_text("operator-key\n")
    url.write_text("http://default:pw@clickhouse:8123/default")
    monkeypatch.setenv("WAPIPE_META_APPS_FILE", str(apps))  # a JSON setting
    monkeypatch.setenv("WAPIPE_OPERATOR_API_KEY_FILE", str(key))
    monkeypatch.setenv("CLICKHOUSE_URL_FILE", str(url))  # a setting with a conventional name
    s = Settings()
    assert {k: v.get_secret_value() for k, v in s.meta_apps.items()} == {"1234": "app-secret"}
    assert s.operator_api_key.get_secret_value() == "operator-key"  # the trailing newline dropped
    assert s.clickhouse_dsn == "http://default:pw@clickhouse:8123/default"


def test_the_environment_wins_and_a_missing_file_is_a_clear_error(tmp_path, monkeypatch):
    key = tmp_path / "key"
    key.write_text("from-file")
    monkeypatch.setenv("WAPIPE_OPERATOR_API_KEY_FILE", str(key))
    monkeypatch.setenv("WAPIPE_OPERATOR_API_KEY", "from-env")
    assert Settings().operator_api_key.get_secret_value() == "from-env"
    monkeypatch.delenv("WAPIPE_OPERATOR_API_KEY")
    monkeypatch.setenv("WAPIPE_OPERATOR_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="WAPIPE_OPERATOR_API_KEY_FILE=.*missing: cannot read it"):
        Settings()


def test_kek_file_keeps_its_own_meaning(tmp_path, monkeypatch):
    """WAPIPE_KEK_FILE is the kek_file setting (a path), not the KEK's value read by this source."""
    kek = tmp_path / "kek"
    kek.write_text("not read here")
    monkeypatch.setenv("WAPIPE_KEK_FILE", str(kek))
    monkeypatch.delenv("WAPIPE_KEK", raising=False)
    monkeypatch.delenv("KEK", raising=False)
    s = Settings()
    assert s.kek_file == kek and s.kek is None
