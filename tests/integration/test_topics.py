"""Topics as code: idempotent creation, changed settings applied, partitions only raised."""

import pytest
from confluent_kafka.admin import ConfigResource

from wapipe.edge.clients import admin_client
from wapipe.topics import TOPICS, TopicSpec, apply_topics, desired_configs

pytestmark = pytest.mark.integration


def described(admin, name):
    res = ConfigResource(ConfigResource.Type.TOPIC, name)
    return {k: v.value for k, v in admin.describe_configs([res])[res].result().items()}


def test_apply_is_idempotent_and_applies_changes(kafka, settings, unique):
    specs = (
        TopicSpec(f"t.{unique}.events", "k", "StatusEvent"),
        TopicSpec(f"t.{unique}.keys", "k", "SubjectKey", cleanup="compact"),
    )
    admin = admin_client(kafka)
    first = apply_topics(admin, settings, specs)
    assert sorted(first.created) == sorted(t.name for t in specs)
    assert described(admin, specs[1].name)["cleanup.policy"] == "compact"
    assert described(admin, specs[1].name)["max.compaction.lag.ms"] == str(settings.erasure_deadline_ms)

    second = apply_topics(admin, settings, specs)
    assert not second.changed, second

    changed = settings.model_copy(update={"retention_ms": 3_600_000, "erasure_deadline_ms": 600_000,
                                          "topic_partitions": settings.topic_partitions + 2})
    third = apply_topics(admin, changed, specs)
    assert third.altered[specs[0].name]["retention.ms"][1] == "3600000"
    assert described(admin, specs[0].name)["retention.ms"] == "3600000"
    assert described(admin, specs[1].name)["max.compaction.lag.ms"] == "600000"
    assert third.partitions_raised[specs[0].name] == (settings.topic_partitions, settings.topic_partitions + 2)
    assert len(admin.list_topics(specs[0].name, timeout=10).topics[specs[0].name].partitions) == settings.topic_partitions + 2
    assert not apply_topics(admin, changed, specs).changed


def test_every_declared_topic_exists_with_its_policy(topics, settings):
    admin = admin_client(topics)
    names = admin.list_topics(timeout=10).topics
    for spec in TOPICS:
        assert spec.name in names
        cfg = described(admin, spec.name)
        assert cfg["cleanup.policy"] == (spec.cleanup if spec.window_from is None else "compact,delete")
        if spec.window_from is not None:  # compacted, and a key leaves once older than its window + 1 day
            assert int(cfg["retention.ms"]) == (getattr(settings, spec.window_from) + 24 * 3600) * 1000
        if spec.cleanup == "compact":
            assert int(cfg["max.compaction.lag.ms"]) <= settings.erasure_deadline_ms
            assert int(cfg["segment.ms"]) <= int(cfg["max.compaction.lag.ms"])


def test_compacted_topics_have_an_erasure_deadline(settings):
    for name in ("wa.subject.keys", "wa.tenants", "wa.privacy.requests"):
        spec = next(t for t in TOPICS if t.name == name)
        assert desired_configs(spec, settings)["cleanup.policy"] == "compact"
        assert "max.compaction.lag.ms" in desired_configs(spec, settings)
