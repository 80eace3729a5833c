"""docker-compose.yml, checked without a Docker engine: it parses; every wapipe command exists in
the CLI; every service has a healthcheck; secrets come from files only and reach Settings;
replication fits the three brokers; Prometheus scrapes every service; the dashboard's queries
name only metrics the code exports."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from wapipe.config import REPO_ROOT, Settings
from wapipe.app.cli import command_exists

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES: dict = COMPOSE["services"]
WAPIPE = {n: s for n, s in SERVICES.items() if s.get("build")}
BROKERS = {n: s for n, s in SERVICES.items() if str(s.get("image", "")).startswith("apache/kafka")}
SECRET_WORDS = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|API_KEY|META_APPS|CLICKHOUSE_URL|KEK|PEPPER")


def _cli_words(command: list[str]) -> tuple[str, ...]:
    return tuple(w for w in command[:2] if not w.startswith("-"))


def test_it_parses_and_names_the_pipeline():
    assert {"ingress", "worker", "normalise", "sink", "tenants-follow", "privacy", "privacy-serve", "admin", "init",
            "clickhouse", "prometheus", "grafana"} <= set(SERVICES)
    assert len(BROKERS) == 3


@pytest.mark.parametrize("name", sorted(WAPIPE))
def test_every_wapipe_command_exists(name):
    command = WAPIPE[name]["command"]
    words = _cli_words(command)
    assert command_exists(words[:2]) or command_exists(words[:1]), f"{name}: wapipe {' '.join(command)}"


def test_privacy_serve_is_there():
    assert SERVICES["privacy-serve"]["command"][:2] == ["privacy", "serve"]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_a_healthcheck(name):
    svc = SERVICES[name]
    hc = svc.get("healthcheck") or {}
    if hc.get("disable"):
        # only a one-shot job the others wait for to complete
        assert svc.get("restart") == "no"
        waiting = [s for s in SERVICES.values()
                   if (s.get("depends_on") or {}).get(name, {}).get("condition") == "service_completed_successfully"]
        assert waiting, f"{name} disables its healthcheck but nobody waits for it to complete"
        return
    assert hc.get("test"), f"{name} has no healthcheck"
    if name in WAPIPE:
        test = hc["test"]
        assert test[:3] == ["CMD", "wapipe", "health"] and command_exists(("health",))
        url = test[test.index("--url") + 1]
        port = int(url.rsplit(":", 1)[1])
        env = svc["environment"]
        assert port == int(env.get("WAPIPE_PROBE_PORT", 0)) or str(port) in " ".join(svc["command"])


def _env_items():
    for name, svc in SERVICES.items():
        env = svc.get("environment") or {}
        for k, v in (env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)):
            yield name, svc, k, v


def test_secrets_come_from_files_only():
    declared = COMPOSE["secrets"]
    assert all(set(spec) == {"file"} for spec in declared.values()), "every secret is a file"
    for name, svc, key, value in _env_items():
        if not SECRET_WORDS.search(key):
            continue
        assert key.endswith("_FILE") or key.endswith("__FILE"), f"{name}: {key} must be given as a file"
        m = re.fullmatch(r"/run/secrets/([\w-]+)", str(value))
        assert m and m.group(1) in declared and m.group(1) in svc.get("secrets", []), f"{name}: {key}={value}"
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"(?i)password[\"']?\s*[:=]\s*[\"']?\w", text.replace("PASSWORD_FILE", "")
                         .replace("PASSWORD__FILE", "")), "no password written in the file"


def test_the_file_settings_reach_settings(tmp_path, monkeypatch):
    """Each WAPIPE/CLICKHOUSE *_FILE of the compose environment is read by Settings."""
    env = WAPIPE["worker"]["environment"]
    files = {k: v for k, v in env.items() if k.endswith("_FILE")}
    values = {"CLICKHOUSE_URL_FILE": "http://default:pw@clickhouse:8123/default",
              "WAPIPE_META_APPS_FILE": '{"1": "app-secret"}', "WAPIPE_VERIFY_TOKEN_FILE": "vt",
              "WAPIPE_OPERATOR_API_KEY_FILE": "op", "WAPIPE_KEK_FILE": "k", "WAPIPE_SUBJECT_PEPPER_FILE": "p"}
    assert set(files) == set(values)
    for key, content in values.items():
        path = tmp_path / key
        path.write_text(content + "\n")
        monkeypatch.setenv(key, str(path))
    s = Settings()
    assert s.clickhouse_dsn == values["CLICKHOUSE_URL_FILE"]
    assert s.meta_apps["1"].get_secret_value() == "app-secret"
    assert s.verify_token.get_secret_value() == "vt" and s.operator_api_key.get_secret_value() == "op"
    assert s.kek_file == tmp_path / "WAPIPE_KEK_FILE" and s.subject_pepper_file == tmp_path / "WAPIPE_SUBJECT_PEPPER_FILE"


def test_replication_fits_three_brokers():
    envs = [{**s["environment"]} for s in BROKERS.values()]
    ids = sorted(int(e["KAFKA_NODE_ID"]) for e in envs)
    assert ids == [1, 2, 3]
    for e in envs:
        voters = e["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert sorted(int(v.split("@")[0]) for v in voters) == ids
        assert int(e["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        for k in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                  "KAFKA_DEFAULT_REPLICATION_FACTOR"):
            assert int(e[k]) == len(BROKERS)
        assert int(e["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"]) < len(BROKERS)
    rf = int(WAPIPE["worker"]["environment"]["WAPIPE_REPLICATION_FACTOR"])
    assert rf == len(BROKERS) and int(envs[0]["KAFKA_MIN_INSYNC_REPLICAS"]) < rf  # one broker may be down
    boot = WAPIPE["worker"]["environment"]["KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert sorted(b.split(":")[0] for b in boot) == sorted(BROKERS)


def test_prometheus_scrapes_every_long_running_service():
    conf = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in conf["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    for name, svc in WAPIPE.items():
        if (svc.get("healthcheck") or {}).get("disable"):
            continue
        port = 8080 if name == "ingress" else int(svc["environment"]["WAPIPE_PROBE_PORT"])
        assert f"{name}:{port}" in targets, name


def _exported_metric_names() -> set[str]:
    names = {"up"}
    for path in [*REPO_ROOT.glob("wapipe/**/*.py"), *REPO_ROOT.glob("producers/**/*.py"),
                 *REPO_ROOT.glob("processors/**/*.py"), *REPO_ROOT.glob("sinks/**/*.py")]:
        names |= set(re.findall(r"[\"'](wapipe_[a-z0-9_]+)[\"']", path.read_text()))
    # prometheus_client's ProcessCollector, registered by every probe
    names |= {"process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"}
    return names


def test_the_dashboard_queries_only_exported_metrics():
    dash = json.loads((REPO_ROOT / "deploy" / "grafana" / "dashboards" / "wapipe.json").read_text())
    exported = _exported_metric_names()
    assert dash["panels"]
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used = set(re.findall(r"\b((?:wapipe|process)_[a-z0-9_]+|up)\b(?=\s*[{\[(]|\s*\)|$)", target["expr"]))
            assert used, target["expr"]
            for metric in used:
                base = re.sub(r"_(total|bucket|sum|count)$", "", metric)
                assert base in exported or metric in exported, f"{panel['title']}: {metric} is not exported"


def test_the_dashboard_shows_dead_letters_by_service_and_reason_and_the_erasure_backlog():
    """Issue 21 #3: dead letters by reason on every service; the erasure backlog and deadline."""
    dash = json.loads((REPO_ROOT / "deploy" / "grafana" / "dashboards" / "wapipe.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    dead = [e for e in exprs if "wapipe_dead_letters_total" in e]
    assert dead and any(re.search(r"by \(service, reason\)", e) for e in dead), dead
    for metric in ("wapipe_erasure_open_requests", "wapipe_erasure_oldest_age_seconds",
                   "wapipe_erasure_deadline_seconds", "wapipe_erasure_overdue_requests"):
        assert any(metric in e for e in exprs), metric
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells = [(x, y) for p in dash["panels"] for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]
    assert len(cells) == len(set(cells)), "panels overlap"
