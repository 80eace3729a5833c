"""Every Kafka topic, declared once, and applied idempotently through the admin client.

``apply_topics`` creates what is missing, raises partition counts that are too low, and
brings every declared config to its declared value (``incremental_alter_configs``): a changed
setting is applied, not ignored. It never deletes a topic or lowers a partition count (Kafka
cannot), and says so in its report instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
)

from wapipe.config import Settings

# Topic names: import these, never spell a topic name twice.
WEBHOOK_RAW = "wa.webhook.raw"
WEBHOOK_DEAD = "wa.webhook.dead"
SEND_REQUESTED = "wa.send.requested"
# Campaign-lane commands from the ERP SDK: a 100k campaign never sits in front of an OTP.
SEND_REQUESTED_BULK = "wa.send.requested.bulk"
SEND_ACCEPTED = "wa.send.accepted"
# The transactional lane's own topic: an OTP never waits behind a campaign's backlog.
SEND_ACCEPTED_TX = "wa.send.accepted.transactional"
# The dispatcher's durable memory: "dispatching <key>" before each Graph call, the outcome after.
SEND_LEDGER = "wa.send.ledger"
SEND_RESULTS = "wa.send.results"
SEND_RETRY = "wa.send.retry"
SEND_DEAD = "wa.send.dead"
STATUS_EVENTS = "wa.status.events"
INBOUND_MESSAGES = "wa.inbound.messages"
ACCOUNT_EVENTS = "wa.account.events"
AUDIT = "wa.audit"
SINK_DEAD = "wa.sink.dead"
CAMPAIGN_CONTROL = "wa.campaign.control"
SUBJECT_KEYS = "wa.subject.keys"
SUBJECT_LINKS = "wa.subject.links"  # a number's subject and its BSUID's are one person (pseudonyms)
TENANTS = "wa.tenants"
PRIVACY_REQUESTS = "wa.privacy.requests"
TEMPLATES = "wa.templates"
TENANTS_DEAD = "wa.tenants.dead"  # account events `wapipe tenants follow` could not read
PRIVACY_DEAD = "wa.privacy.dead"  # records of wa.privacy.requests the privacy processor could not read
MEDIA_DEAD = "wa.media.dead"  # inbound media `wapipe media fetch` could not fetch or store
# What the ERP receives (`wapipe erp inbound`): inbound messages and its commands' statuses, per tenant.
ERP_INBOUND = "wa.erp.inbound"
ERP_READS = "wa.erp.reads"  # the ERP's mark-as-read requests
ERP_DEAD = "wa.erp.dead"  # records `wapipe erp inbound` could not read or carry out, with why
# Marketing opt-outs per tenant and subject (user_preferences stop/resume, error 131050): the send
# worker refuses marketing templates to a suppressed subject (processors/send/suppression.py).
SUPPRESSIONS = "wa.suppressions"

Cleanup = Literal["delete", "compact"]

# What a webhook record adds to its body: the Avro envelope (ids, times, app id, the kept headers,
# each cut to 1 KiB by the ingress), the key (at most 128 characters: producers/ingress/envelope.py)
# and Kafka's record-batch framing. 64 KiB is far above the sum (~6 KiB).
WEBHOOK_ENVELOPE_BYTES = 64 * 1024
# The broker's default max.message.bytes. No topic goes below it: librdkafka packs small records
# into batches of up to batch.size (1,000,000 bytes), and the topic limit applies to a whole batch.
KAFKA_DEFAULT_MAX_MESSAGE_BYTES = 1_048_588


def webhook_record_max_bytes(s: Settings) -> int:
    """The largest ``wa.webhook.raw`` record: the ingress's largest body plus its envelope. The topic
    (``max.message.bytes``) and the ingress's producer (``message.max.bytes``) take this much, so
    every body the ingress accepts can be stored (docs/security.md, "HTTP boundaries")."""
    return max(KAFKA_DEFAULT_MAX_MESSAGE_BYTES, s.ingress_max_body_bytes + WEBHOOK_ENVELOPE_BYTES)


def webhook_dead_max_bytes(s: Settings) -> int:
    """The largest ``wa.webhook.dead`` record: a dead letter carries a raw body (the ingress's) or a
    whole raw record (the normaliser's), plus its own envelope."""
    return webhook_record_max_bytes(s) + WEBHOOK_ENVELOPE_BYTES


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str  # what the record key is, for the reader of this file and the docs
    value: str  # Avro record name of the value
    cleanup: Cleanup = "delete"
    partitions: int | None = None  # None: settings.topic_partitions
    # Delete topics: the Settings field that holds this topic's retention.ms.
    retention_from: str = "retention_ms"
    # Compact topics whose keys matter only for a window (a Settings field, seconds): they also
    # delete by retention, the window plus a day.
    window_from: str | None = None
    # Topics whose records can be larger than Kafka's default 1 MiB: their max.message.bytes.
    max_bytes_from: Callable[[Settings], int] | None = None
    extra: dict[str, str] = field(default_factory=dict)


# The declaration. Keys carry the design: every per-number limit lives in one partition
# because wa.send.accepted is keyed by phone_number_id.
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(WEBHOOK_RAW, "phone_number_id (or WABA id)", "RawWebhook", retention_from="raw_webhook_retention_ms",
              max_bytes_from=webhook_record_max_bytes),
    # Dead raw webhooks carry the same cleartext as wa.webhook.raw: same short retention (docs/privacy.md).
    TopicSpec(WEBHOOK_DEAD, "ingress id", "DeadLetter", retention_from="raw_webhook_retention_ms",
              max_bytes_from=webhook_dead_max_bytes),
    TopicSpec(SEND_REQUESTED, "phone_number_id", "SendCommand"),
    TopicSpec(SEND_REQUESTED_BULK, "phone_number_id", "SendCommand"),
    TopicSpec(SEND_ACCEPTED, "phone_number_id", "SendCommand"),
    TopicSpec(SEND_ACCEPTED_TX, "phone_number_id", "SendCommand"),
    # Written to the partition number of the command's wa.send.accepted partition (explicitly), so
    # the worker owning a number's partition reloads exactly that number's ledger.
    # Deletes by retention too: a key older than the dedup window is remembered nowhere else.
    TopicSpec(SEND_LEDGER, "tenant_id/idempotency_key", "DispatchEntry", cleanup="compact",
              window_from="send_dedup_window_s"),
    TopicSpec(SEND_RESULTS, "tenant_id", "SendResult"),
    TopicSpec(SEND_RETRY, "phone_number_id", "SendCommand"),
    TopicSpec(SEND_DEAD, "tenant_id", "DeadLetter"),
    TopicSpec(STATUS_EVENTS, "wamid ref (wref.…, never the wamid)", "StatusEvent"),
    TopicSpec(INBOUND_MESSAGES, "phone_number_id", "InboundMessage"),
    TopicSpec(ACCOUNT_EVENTS, "WABA id", "AccountEvent"),
    TopicSpec(AUDIT, "tenant_id", "AuditEvent"),
    TopicSpec(SINK_DEAD, "source topic", "DeadLetter"),
    TopicSpec(CAMPAIGN_CONTROL, "tenant_id/campaign_id", "CampaignControl", cleanup="compact", partitions=1),
    TopicSpec(SUBJECT_KEYS, "subject_id/key_id", "SubjectKey", cleanup="compact"),
    TopicSpec(SUBJECT_LINKS, "tenant_id/linked_subject_id", "SubjectLink", cleanup="compact"),
    TopicSpec(TENANTS, "tenant_id", "TenantSettings", cleanup="compact", partitions=1),
    TopicSpec(PRIVACY_REQUESTS, "request_id", "PrivacyRequest", cleanup="compact", partitions=1),
    TopicSpec(TEMPLATES, "waba_id/name/language", "TemplateInfo", cleanup="compact", partitions=1),
    TopicSpec(TENANTS_DEAD, "source topic", "DeadLetter", partitions=1),
    TopicSpec(PRIVACY_DEAD, "source topic", "DeadLetter", partitions=1),
    TopicSpec(MEDIA_DEAD, "tenant_id", "DeadLetter"),
    # Keyed by tenant: a tenant's events share one partition (in order) and an ERP reads that one.
    TopicSpec(ERP_INBOUND, "tenant_id", "ErpInbound"),
    TopicSpec(ERP_READS, "tenant_id", "ReadCommand"),
    TopicSpec(ERP_DEAD, "tenant_id", "DeadLetter"),
    # Kept while the person's preference holds (compacted, no retention): never a number in the key.
    TopicSpec(SUPPRESSIONS, "tenant_id/subject_id", "Suppression", cleanup="compact"),
)


def table_changelog(app_id: str, table: str, window_s: int, key: str) -> TopicSpec:
    """The changelog of a Faust table whose entries matter for ``window_s`` (a dedup window):
    compacted (one entry per key) and deleting by retention, so a key leaves the topic once it is
    older than the window (plus a day: the broker deletes whole segments; lookups check the age, so
    a late deletion is harmless). The name is Faust's default for the table, so Faust uses it."""
    return TopicSpec(f"{app_id}-{table}-changelog", key, "(faust table entry)",
                     extra={"cleanup.policy": "compact,delete", "retention.ms": str(window_retention_ms(window_s))})


def window_retention_ms(window_s: int) -> int:
    return (int(window_s) + 24 * 3600) * 1000


def spec(name: str) -> TopicSpec:
    for t in TOPICS:
        if t.name == name:
            return t
    raise KeyError(name)


def desired_configs(t: TopicSpec, s: Settings) -> dict[str, str]:
    if t.cleanup == "compact":
        cfg = {
            "cleanup.policy": "compact",
            # Erasure deadline: a tombstoned key is compacted away within this bound...
            "max.compaction.lag.ms": str(s.erasure_deadline_ms),
            # ...which needs segments to roll at least that often (the active one is never cleaned).
            "segment.ms": str(min(s.compacted_segment_ms, s.erasure_deadline_ms)),
            "min.cleanable.dirty.ratio": str(s.min_cleanable_dirty_ratio),
            "delete.retention.ms": str(s.tombstone_retention_ms),
        }
        if t.window_from is not None:
            cfg["cleanup.policy"] = "compact,delete"
            cfg["retention.ms"] = str(window_retention_ms(getattr(s, t.window_from)))
    else:
        cfg = {"cleanup.policy": "delete", "retention.ms": str(getattr(s, t.retention_from))}
        if t.retention_from == "raw_webhook_retention_ms":
            # Retention deletes whole segments: roll often enough that cleartext expires on time.
            cfg["segment.ms"] = str(min(s.raw_webhook_segment_ms, s.raw_webhook_retention_ms))
    if t.max_bytes_from is not None:
        cfg["max.message.bytes"] = str(t.max_bytes_from(s))
    cfg.update(t.extra)
    return cfg


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    altered: dict[str, dict[str, tuple[str | None, str]]] = field(default_factory=dict)
    partitions_raised: dict[str, tuple[int, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.altered or self.partitions_raised)


def apply_topics(admin: AdminClient, settings: Settings, topics: tuple[TopicSpec, ...] = TOPICS,
                 timeout: float = 30.0) -> ApplyReport:
    report = ApplyReport()
    existing = admin.list_topics(timeout=timeout).topics

    missing = [t for t in topics if t.name not in existing]
    if missing:
        futures = admin.create_topics([
            NewTopic(t.name, num_partitions=t.partitions or settings.topic_partitions,
                     replication_factor=settings.replication_factor, config=desired_configs(t, settings))
            for t in missing
        ], operation_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result()
                report.created.append(name)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):  # a concurrent creator won the race
                    raise

    present = [t for t in topics if t.name in existing]
    # Partition counts: only ever raised.
    raise_to = []
    for t in present:
        want = t.partitions or settings.topic_partitions
        have = len(existing[t.name].partitions)
        if have < want:
            raise_to.append(NewPartitions(t.name, want))
            report.partitions_raised[t.name] = (have, want)
        elif have > want:
            report.problems.append(f"{t.name} has {have} partitions, declared {want}: Kafka cannot lower it")
    if raise_to:
        for fut in admin.create_partitions(raise_to, operation_timeout=timeout).values():
            fut.result()

    # Configs: compare the declared keys with the broker's values, alter the differing ones.
    if present:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, t.name) for t in present]
        described = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
        to_alter = []
        for t in present:
            want = desired_configs(t, settings)
            have = {k: v.value for k, v in described[t.name].items()}
            diff = {k: (have.get(k), v) for k, v in want.items() if have.get(k) != v}
            if diff:
                report.altered[t.name] = diff
                to_alter.append(ConfigResource(
                    ConfigResource.Type.TOPIC, t.name,
                    incremental_configs=[ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                                         for k, (_, v) in diff.items()],
                ))
        if to_alter:
            for fut in admin.incremental_alter_configs(to_alter).values():
                fut.result()
            _await_configs(admin, {t.name: desired_configs(t, settings) for t in present if t.name in report.altered},
                           timeout)
    return report


def _await_configs(admin: AdminClient, want: dict[str, dict[str, str]], timeout: float) -> None:
    """KRaft applies an altered config asynchronously: return once describe_configs shows it,
    so the caller (and the next apply) never reads the old value."""

    deadline = time.monotonic() + timeout
    pending = dict(want)
    while pending:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in pending]
        for res, fut in admin.describe_configs(resources).items():
            have = {k: v.value for k, v in fut.result().items()}
            if all(have.get(k) == v for k, v in pending[res.name].items()):
                pending.pop(res.name)
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"topic configs not visible after {timeout}s: {sorted(pending)}")
        if pending:
            time.sleep(0.1)
