"""Kafka records → ClickHouse rows: one converter per topic, in one table.

A converter takes the decoded Avro record and the retention lookup and returns one row (a
list in the order of ``columns``). Anything it cannot convert raises ``Unconvertible`` with a
reason, which sends that record (not the batch) to ``wa.sink.dead``.
"""

from __future__ import annotations

import dataclasses

from collections.abc import Callable
from dataclasses import dataclass

from connectors.meta.statuses import rank
from wapipe.topics import (
    ACCOUNT_EVENTS,
    AUDIT,
    INBOUND_MESSAGES,
    SEND_ACCEPTED,
    SEND_ACCEPTED_TX,
    SEND_REQUESTED,
    SEND_REQUESTED_BULK,
    SEND_RESULTS,
    SEND_RETRY,
    STATUS_EVENTS,
)

Retention = Callable[[str | None, str], int]  # (tenant_id, data type) -> days


def insert_settings(token: str) -> dict[str, object]:
    """Settings of every sink insert. The token makes a retried identical batch a no-op.
    ``optimize_on_insert=0``: ClickHouse does not collapse rows of equal sorting key inside the
    block at insert time. The tables' engines do that at merge time anyway, and every view and
    documented query is correct with or without it (FINAL, or idempotent aggregates). It halves the
    time of a 100k-row insert with the grouping state-machine view of before migration 0012."""
    return {"insert_deduplication_token": token, "optimize_on_insert": 0}


class Unconvertible(ValueError):
    """One record that cannot become a row; ``reason`` goes to its dead-letter record."""


@dataclass(frozen=True)
class Converter:
    topic: str
    record: str  # Avro record name
    table: str
    columns: tuple[str, ...]
    row: Callable[[dict, Retention], list]


def _s(v) -> str:
    return "" if v is None else str(v)


def _status_row(r: dict, days: Retention) -> list:
    errors = r.get("errors") or []
    return [
        r["event_id"], _s(r.get("tenant_id")), r["waba_id"], r["phone_number_id"], r["wamid"], r["status"],
        rank(r["status"]), r["timestamp"], _s(r.get("subject_id")), r.get("biz_opaque_callback_data"),
        r.get("conversation_id"), r.get("conversation_origin"), r.get("conversation_expires_at"),
        r.get("pricing_billable"), r.get("pricing_model"), r.get("pricing_category"), r.get("pricing_type"),
        [int(e["code"]) for e in errors], [_s(e.get("title")) for e in errors],
        [_s(e.get("message")) for e in errors], [_s(e.get("details")) for e in errors],
        r["received_at"], r.get("extra") or "{}", days(r.get("tenant_id"), "metadata"),
        (r.get("recipient_type") or "").lower()[:32],
    ]


def _request_row(r: dict, days: Retention) -> list:
    t = r.get("template") or {}
    return [
        r["command_id"], r["tenant_id"], r["idempotency_key"], r["phone_number_id"], r["subject_id"], r["lane"],
        r.get("campaign_id"), r["kind"], t.get("name"), t.get("language"), r["requested_at"], r.get("valid_until"),
        days(r["tenant_id"], "metadata"),
    ]


def _result_row(r: dict, days: Retention) -> list:
    return [
        r["command_id"], r["tenant_id"], r["idempotency_key"], r["phone_number_id"], r["subject_id"], r["lane"],
        r.get("campaign_id"), r["outcome"], r.get("wamid"), r.get("message_status"), r.get("error_code"),
        r.get("error_subcode"), r.get("reason"), int(r.get("attempts") or 0), r.get("original_outcome"),
        r["decided_at"], days(r["tenant_id"], "metadata"),
    ]


def _inbound_row(r: dict, days: Retention) -> list:
    pii = r.get("pii") or {}
    if pii and not pii.get("key_id"):
        raise Unconvertible("inbound content is not sealed (empty key_id): refusing to store it in clear")
    return [
        r["event_id"], _s(r.get("tenant_id")), r["waba_id"], r["phone_number_id"], r["message_id"], r["type"],
        r["timestamp"], r["subject_id"], r.get("context_message_id"), _s(pii.get("key_id")),
        bytes(pii.get("nonce") or b""), bytes(pii.get("ciphertext") or b""), r["received_at"], r.get("extra") or "{}",
        days(r.get("tenant_id"), "content"), days(r.get("tenant_id"), "metadata"),
    ]


def _account_row(r: dict, days: Retention) -> list:
    pii = r.get("pii") or {}
    if pii and not pii.get("key_id"):
        raise Unconvertible("an account event's personal part is not sealed (empty key_id): refusing to store it in clear")
    return [
        r["event_id"], _s(r.get("tenant_id")), r["waba_id"], r.get("phone_number_id"), r["field"], r.get("event"),
        r["value"], r.get("timestamp") or r["received_at"], r["received_at"], days(r.get("tenant_id"), "metadata"),
        _s(r.get("subject_id")), _s(pii.get("key_id")), bytes(pii.get("nonce") or b""), bytes(pii.get("ciphertext") or b""),
    ]


def _audit_row(r: dict, days: Retention) -> list:
    return [
        r["event_id"], r["occurred_at"], r["actor"], _s(r.get("tenant_id")), _s(r.get("subject_id")), r["action"],
        r.get("target"), r.get("outcome") or "ok", dict(r.get("details") or {}), days(r.get("tenant_id"), "audit"),
    ]


CONVERTERS: dict[str, Converter] = {c.topic: c for c in (
    Converter(STATUS_EVENTS, "StatusEvent", "status_events", (
        "event_id", "tenant_id", "waba_id", "phone_number_id", "wamid", "status", "status_rank", "timestamp",
        "subject_id", "biz_opaque_callback_data", "conversation_id", "conversation_origin", "conversation_expires_at",
        "pricing_billable", "pricing_model", "pricing_category", "pricing_type", "error_codes", "error_titles",
        "error_messages", "error_details", "received_at", "extra", "retention_days", "recipient_type"), _status_row),
    Converter(SEND_REQUESTED, "SendCommand", "send_requests", (
        "command_id", "tenant_id", "idempotency_key", "phone_number_id", "subject_id", "lane", "campaign_id", "kind",
        "template_name", "template_lang", "requested_at", "valid_until", "retention_days"), _request_row),
    Converter(SEND_RESULTS, "SendResult", "send_results", (
        "command_id", "tenant_id", "idempotency_key", "phone_number_id", "subject_id", "lane", "campaign_id", "outcome",
        "wamid", "message_status", "error_code", "error_subcode", "reason", "attempts", "original_outcome",
        "decided_at", "retention_days"), _result_row),
    Converter(INBOUND_MESSAGES, "InboundMessage", "inbound_messages", (
        "event_id", "tenant_id", "waba_id", "phone_number_id", "message_id", "type", "timestamp", "subject_id",
        "context_message_id", "pii_key_id", "pii_nonce", "pii_ciphertext", "received_at", "extra",
        "content_retention_days", "retention_days"), _inbound_row),
    Converter(ACCOUNT_EVENTS, "AccountEvent", "account_events", (
        "event_id", "tenant_id", "waba_id", "phone_number_id", "field", "event", "value", "occurred_at", "received_at",
        "retention_days", "subject_id", "pii_key_id", "pii_nonce", "pii_ciphertext"), _account_row),
    Converter(AUDIT, "AuditEvent", "audit_log", (
        "event_id", "occurred_at", "actor", "tenant_id", "subject_id", "action", "target", "outcome", "details",
        "retention_days"), _audit_row),
)}

# The campaign lane's commands land in the same table as the transactional ones (the ERP SDK writes
# them to their own topic so that a campaign never sits in front of an OTP).
CONVERTERS[SEND_REQUESTED_BULK] = dataclasses.replace(CONVERTERS[SEND_REQUESTED], topic=SEND_REQUESTED_BULK)

# Topics that carry the same records as a loaded topic but only as the pipeline's internal copies
# (re-keyed to the number's partition, or delayed for a retry): loading them would count a command
# twice. Every other topic of a loaded record type is loaded (tests/unit/test_sink_rows.py).
INTERNAL_COPIES: frozenset[str] = frozenset({SEND_ACCEPTED, SEND_ACCEPTED_TX, SEND_RETRY})

SINK_TOPICS: tuple[str, ...] = tuple(CONVERTERS)


def convert(converter: Converter, record: dict, days: Retention) -> list:
    try:
        return converter.row(record, days)
    except Unconvertible:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise Unconvertible(f"{converter.record} → {converter.table}: {type(exc).__name__}: {exc}") from exc
