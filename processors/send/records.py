"""The records the send pipeline writes, built in one place.

Commands travel as the Avro dicts the ERP wrote (``SendCommand``); results, dead letters and
ledger entries are built here so every stage fills them the same way. None of them carries
personal data: the recipient and the message stay inside the command's ``pii`` (Sealed).
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from connectors.meta.messages import addressed

RESULT = "SendResult"
COMMAND = "SendCommand"
DEAD_LETTER = "DeadLetter"
LEDGER = "DispatchEntry"
CONTROL = "CampaignControl"


class Outcome(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"
    RETRYING = "RETRYING"
    DEAD = "DEAD"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    DUPLICATE = "DUPLICATE"


# Outcomes after which nothing more happens to a command.
FINAL = frozenset({Outcome.ACCEPTED, Outcome.REJECTED, Outcome.FAILED, Outcome.UNKNOWN, Outcome.DEAD,
                   Outcome.EXPIRED, Outcome.CANCELLED})


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def ms(t: dt.datetime | int | float | None) -> int | None:
    """Milliseconds since the epoch (Avro timestamp-millis arrive as aware datetimes)."""
    if t is None:
        return None
    if isinstance(t, dt.datetime):
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        return int(t.timestamp() * 1000)
    return int(t)


def dedup_key(tenant_id: str, idempotency_key: str) -> str:
    return f"{tenant_id}/{idempotency_key}"


def command_key(cmd: dict) -> str:
    return dedup_key(cmd["tenant_id"], cmd["idempotency_key"])


def is_template(cmd: dict) -> bool:
    return cmd.get("kind") == "TEMPLATE" or cmd.get("template") is not None


def graph_body(pii: dict, callback: str) -> dict[str, Any]:
    """The Graph request for a command's opened ``pii`` (``{"to"?, "recipient"?, "message"}``): the
    message object, its recipient — the number in ``to``, the BSUID in ``recipient``, both when
    the command has both (Meta then uses the number) — and our id in ``biz_opaque_callback_data``.
    ``ValueError`` when the command names no recipient."""
    return addressed({"messaging_product": "whatsapp", "recipient_type": "individual", **pii["message"],
                      "biz_opaque_callback_data": callback}, to=pii.get("to"), recipient=pii.get("recipient"))


def user_subjects(cmd: dict) -> tuple[str, ...]:
    """The recipient's subjects: its number's (or only BSUID's) ``subject_id``, and its BSUID's when
    the command has both (SendCommand v3 ``user_subject_id``; v1/v2 commands have none)."""
    other = cmd.get("user_subject_id")
    return (cmd["subject_id"], other) if other and other != cmd["subject_id"] else (cmd["subject_id"],)


def result(cmd: dict, outcome: Outcome, *, reason: str | None = None, reason_code: str | None = None,
           wamid: str | None = None,
           message_status: str | None = None, error_code: int | None = None, error_subcode: int | None = None,
           attempts: int = 0, original_outcome: str | None = None, at: dt.datetime | None = None) -> dict[str, Any]:
    """A SendResult for ``cmd`` (a decoded SendCommand, or the fields of one)."""
    return {
        "command_id": cmd.get("command_id") or "",
        "tenant_id": cmd.get("tenant_id") or "",
        "idempotency_key": cmd.get("idempotency_key") or "",
        "phone_number_id": cmd.get("phone_number_id") or "",
        "subject_id": cmd.get("subject_id") or "",
        "lane": cmd.get("lane") or "TRANSACTIONAL",
        "campaign_id": cmd.get("campaign_id"),
        "outcome": str(outcome),
        "wamid": wamid,
        "message_status": message_status,
        "error_code": error_code,
        "error_subcode": error_subcode,
        "reason": reason,
        "reason_code": reason_code,
        "attempts": attempts,
        "original_outcome": original_outcome,
        "decided_at": at or now_utc(),
    }


def dead_letter(*, source_topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                reason: str, error_type: str, tenant_id: str | None = None, subject_id: str | None = None,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "source_topic": source_topic, "partition": partition, "offset": offset, "key": key, "value": value,
        "reason": reason, "error_type": error_type, "tenant_id": tenant_id, "subject_id": subject_id,
        "headers": headers or {}, "failed_at": now_utc(),
    }


def ledger_entry(cmd: dict, state: str, *, attempts: int, outcome: str | None = None, wamid: str | None = None,
                 message_status: str | None = None, error_code: int | None = None, error_subcode: int | None = None,
                 not_before_ms: int | None = None, at: dt.datetime | None = None) -> dict[str, Any]:
    return {
        "tenant_id": cmd["tenant_id"], "idempotency_key": cmd["idempotency_key"], "command_id": cmd["command_id"],
        "phone_number_id": cmd["phone_number_id"], "subject_id": cmd.get("subject_id") or "",
        "campaign_id": cmd.get("campaign_id"), "state": state, "attempts": attempts, "outcome": outcome,
        "wamid": wamid, "message_status": message_status, "error_code": error_code, "error_subcode": error_subcode,
        "template": is_template(cmd),
        "not_before": dt.datetime.fromtimestamp(not_before_ms / 1000, dt.timezone.utc) if not_before_ms else None,
        "at": at or now_utc(),
    }
