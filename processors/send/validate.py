"""Validation of a decoded SendCommand: the reasons a command is refused before any Graph call.

Pure function over lookups (the tenant registry, the customer-service-window view, the
restriction check) so the same rules run in the intake agent and again at dispatch time
(a template can be paused or a window can close while a command waits in a queue).

A recipient addressed by number and BSUID (SendCommand v3) is one person with two subjects: its
service window is open when it wrote under either, and a restriction under either holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from processors.send.records import ms
from wapipe.messages.send import Outcome, SendCommand

_SUBJECT = re.compile(r"[0-9a-f]{32}")  # wapipe.privacy.subjects.subject_id

# Number states in which Meta refuses to send (the registry keeps Meta's words).
_DEAD_NUMBER_STATES = frozenset({"DISCONNECTED", "BANNED", "DELETED", "RESTRICTED", "BLOCKED"})


class Registry(Protocol):
    def tenant(self, tenant_id: str) -> Any: ...

    def template(self, waba_id: str, name: str, language: str) -> Any: ...


@dataclass(frozen=True)
class Refusal:
    outcome: Outcome  # REJECTED or EXPIRED
    reason: str


WindowLookup = Callable[[str, str], "int | None"]  # (phone_number_id, subject_id) -> last inbound ms


def validate(cmd: SendCommand, registry: Registry, *, now_ms: int, last_inbound: WindowLookup,
             window_s: int = 24 * 3600, is_restricted: Callable[[str], bool] | None = None) -> Refusal | None:
    """``None`` when ``cmd`` may be sent now, else why not."""
    for field in ("tenant_id", "idempotency_key", "phone_number_id", "subject_id", "command_id"):
        if not getattr(cmd, field):
            return Refusal(Outcome.REJECTED, f"{field} is empty")
    other = cmd.user_subject_id
    if other is not None and not _SUBJECT.fullmatch(other):
        return Refusal(Outcome.REJECTED, "user_subject_id is not a subject id (32 hex digits from the SDK)")
    valid_until = ms(cmd.valid_until)
    if valid_until is not None and now_ms > valid_until:
        return Refusal(Outcome.EXPIRED, f"valid_until passed {(now_ms - valid_until) / 1000:.1f}s ago")

    tenant = registry.tenant(cmd.tenant_id)
    if tenant is None:
        return Refusal(Outcome.REJECTED, f"unknown tenant {cmd.tenant_id!r}")
    status = str(getattr(tenant, "status", ""))
    if status != "ACTIVE":
        return Refusal(Outcome.REJECTED, f"tenant {cmd.tenant_id!r} is {status or 'not active'}, not ACTIVE")
    number = tenant.number(cmd.phone_number_id)
    if number is None:
        return Refusal(Outcome.REJECTED,
                       f"phone number {cmd.phone_number_id!r} does not belong to tenant {cmd.tenant_id!r}")
    if str(getattr(number, "status", "")).upper() in _DEAD_NUMBER_STATES:
        return Refusal(Outcome.REJECTED, f"phone number {cmd.phone_number_id!r} is {number.status}")
    if getattr(tenant, "token", True) is None:
        return Refusal(Outcome.REJECTED, f"tenant {cmd.tenant_id!r} has no Graph API token")

    if cmd.is_template:
        ref = cmd.template
        if ref is None:
            return Refusal(Outcome.REJECTED, "a TEMPLATE command without a template reference")
        tpl = registry.template(tenant.waba_id or "", ref.name, ref.language)
        if tpl is None:
            return Refusal(Outcome.REJECTED, f"template {ref.name!r} ({ref.language}) is not known for this account")
        if tpl.status != "APPROVED":
            return Refusal(Outcome.REJECTED, f"template {ref.name!r} ({ref.language}) is {tpl.status}, not APPROVED")
        have = ref.parameter_count
        if have != tpl.body_parameter_count:
            return Refusal(Outcome.REJECTED, f"template {ref.name!r} takes {tpl.body_parameter_count} body "
                                             f"parameter(s), the command has {have}")
    else:
        seen = [t for t in (last_inbound(cmd.phone_number_id, s) for s in cmd.subjects) if t is not None]
        last = max(seen) if seen else None
        if last is None:
            return Refusal(Outcome.REJECTED, "session message but the recipient never wrote to this number "
                                             "(no open 24 h customer-service window); send a template")
        if now_ms - last > window_s * 1000:
            return Refusal(Outcome.REJECTED, f"session message outside the 24 h customer-service window "
                                             f"(last inbound {(now_ms - last) / 3600_000:.1f} h ago); send a template")

    if is_restricted is not None and any(is_restricted(s) for s in cmd.subjects):
        return Refusal(Outcome.REJECTED, "the recipient restricted the processing of their data")
    return None
