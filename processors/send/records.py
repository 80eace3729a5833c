"""The records the send pipeline writes, built in one place.

Commands are ``wapipe.messages.send.SendCommand``s; results (``SendResult``) and ledger entries
(``DispatchEntry``) are built here so every stage fills them the same way. None of them carries
personal data: the recipient and the message stay inside the command's ``pii`` (Sealed).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from connectors.meta.messages import addressed
from wapipe.messages.send import TRANSACTIONAL, DispatchEntry, Outcome, SendCommand, SendResult
from wapipe.messages.times import to_ms

RESULT = "SendResult"
COMMAND = "SendCommand"
LEDGER = "DispatchEntry"
CONTROL = "CampaignControl"

# Outcomes after which nothing more happens to a command.
FINAL = frozenset({Outcome.ACCEPTED, Outcome.REJECTED, Outcome.FAILED, Outcome.UNKNOWN, Outcome.DEAD,
                   Outcome.EXPIRED, Outcome.CANCELLED})

_UTC = dt.timezone.utc


def now_utc() -> dt.datetime:
    return dt.datetime.now(_UTC)


def ms(t: dt.datetime | int | float | None) -> int | None:
    """Milliseconds since the epoch (Avro timestamp-millis arrive as aware datetimes)."""
    if t is None:
        return None
    if isinstance(t, dt.datetime):
        return to_ms(t)
    return int(t)


def graph_body(pii: dict, callback: str) -> dict[str, Any]:
    """The Graph request for a command's opened ``pii`` (``{"to"?, "recipient"?, "message"}``): the
    message object, its recipient — the number in ``to``, the BSUID in ``recipient``, both when
    the command has both (Meta then uses the number) — and our id in ``biz_opaque_callback_data``.
    ``ValueError`` when the command names no recipient."""
    return addressed({"messaging_product": "whatsapp", "recipient_type": "individual", **pii["message"],
                      "biz_opaque_callback_data": callback}, to=pii.get("to"), recipient=pii.get("recipient"))


def result(cmd: SendCommand | DispatchEntry, outcome: Outcome, *, reason: str | None = None,
           reason_code: str | None = None, wamid: str | None = None, message_status: str | None = None,
           error_code: int | None = None, error_subcode: int | None = None, attempts: int = 0,
           original_outcome: str | None = None, at: dt.datetime | None = None) -> SendResult:
    """A SendResult for ``cmd`` (a command, or the ledger entry of one: its lane is then CAMPAIGN
    when it names a campaign)."""
    lane = cmd.lane if isinstance(cmd, SendCommand) else ("CAMPAIGN" if cmd.campaign_id else TRANSACTIONAL)
    return SendResult(command_id=cmd.command_id, tenant_id=cmd.tenant_id, idempotency_key=cmd.idempotency_key,
                      phone_number_id=cmd.phone_number_id, subject_id=cmd.subject_id, lane=lane,
                      campaign_id=cmd.campaign_id, outcome=outcome, wamid=wamid, message_status=message_status,
                      error_code=error_code, error_subcode=error_subcode, reason=reason, reason_code=reason_code,
                      attempts=attempts, original_outcome=original_outcome, decided_at=at or now_utc())


def ledger_entry(cmd: SendCommand, state: str, *, attempts: int, outcome: str | None = None,
                 wamid: str | None = None, message_status: str | None = None, error_code: int | None = None,
                 error_subcode: int | None = None, not_before_ms: int | None = None,
                 at: dt.datetime | None = None) -> DispatchEntry:
    return DispatchEntry(
        tenant_id=cmd.tenant_id, idempotency_key=cmd.idempotency_key, command_id=cmd.command_id,
        phone_number_id=cmd.phone_number_id, subject_id=cmd.subject_id, campaign_id=cmd.campaign_id, state=state,
        attempts=attempts, outcome=outcome, wamid=wamid, message_status=message_status, error_code=error_code,
        error_subcode=error_subcode, template=cmd.is_template,
        not_before=dt.datetime.fromtimestamp(not_before_ms / 1000, _UTC) if not_before_ms else None,
        at=at or now_utc())
