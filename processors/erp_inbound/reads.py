"""Carrying out the ERP's ``ReadCommand``: mark a user's message read through the Graph API.

Every identifier in the command is checked against the command's tenant before anything is
opened or called: the tenant exists and has a token, the number is the tenant's, the subject's data
keys were made for the tenant and the sealed value is under that subject's key, and the sealed
wamid has the ref the command names. Then ``POST /{phone_number_id}/messages {status: read,
message_id}`` (with ``typing_indicator`` when asked) with the tenant's own token; transient Graph
errors (and unknown outcomes: marking read twice is harmless) are retried ``attempts`` times. Anything refused raises ``Dead`` with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from connectors.meta import errors as meta_errors
from processors.erp_inbound.convert import Dead
from wapipe.messages.erp import ReadCommand
from wapipe.messages.send import Sealed
from wapipe.privacy.errors import SubjectErased, UnsealError


class Opener(Protocol):
    def unseal(self, sealed: dict) -> dict: ...
    def tenants_of(self, subject_id: str) -> set[str]: ...


class Tenants(Protocol):
    def tenant(self, tenant_id: str) -> Any: ...


class Graph(Protocol):
    async def mark_read(self, phone_number_id: str, message_id: str, *, token: str,
                        typing_indicator: bool = False) -> bool: ...


def read_command(rec: dict[str, Any]) -> ReadCommand:
    """A decoded ReadCommand record as the typed command; one without a required field is
    ``Dead("<field> missing", "MissingField")``, as an empty one is in ``mark_read``."""
    try:
        return ReadCommand.from_avro(rec)
    except KeyError as exc:
        raise Dead(f"{exc.args[0]} missing", "MissingField") from None


async def mark_read(cmd: ReadCommand, *, tenants: Tenants, ring: Opener, kek: Any, graph: Graph,
                    ref: Callable[[str], str | None], attempts: int = 3, backoff_s: float = 0.5) -> str:
    """Carry out one ReadCommand; returns the outcome ("read"), raises ``Dead``."""
    tenant_id, pnid, subject = cmd.tenant_id, cmd.phone_number_id, cmd.subject_id
    for name, v in (("tenant_id", tenant_id), ("phone_number_id", pnid), ("subject_id", subject),
                    ("message_ref", cmd.message_ref)):
        if not isinstance(v, str) or not v:
            raise Dead(f"{name} missing", "MissingField")
    tenant = tenants.tenant(tenant_id)
    if tenant is None:
        raise Dead(f"tenant {tenant_id} unknown", "UnknownTenant")
    if tenant.number(pnid) is None:
        raise Dead(f"phone number {pnid} is not tenant {tenant_id}'s", "ForeignNumber")
    sealed = cmd.pii
    if not isinstance(sealed, Sealed) or not str(sealed.key_id or "").startswith(subject + "/"):
        raise Dead("the sealed wamid is not under the subject's key", "ForeignKey")
    if tenant_id not in await asyncio.to_thread(ring.tenants_of, subject):
        raise Dead(f"subject {subject} is not tenant {tenant_id}'s", "ForeignSubject")
    try:
        opened = await asyncio.to_thread(ring.unseal, sealed.to_avro())
    except SubjectErased:
        raise Dead("the user's data was erased: nothing to mark read", "SubjectErased") from None
    except UnsealError as exc:
        raise Dead(f"sealed wamid does not open: {exc}", "UnsealError") from None
    wamid = opened.get("wamid") if isinstance(opened, dict) else None
    if not isinstance(wamid, str) or ref(wamid) != cmd.message_ref:
        raise Dead("the sealed wamid is not the message the command names", "RefMismatch")
    try:
        token = tenant.open_token(kek)
    except LookupError as exc:
        raise Dead(str(exc), "NoToken") from None
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            await graph.mark_read(pnid, wamid, token=token, typing_indicator=bool(cmd.typing_indicator))
            return "read"
        except meta_errors.MetaError as exc:
            # a read receipt is idempotent: sending it again after an unknown outcome is harmless
            if not (exc.retryable or isinstance(exc, meta_errors.UnknownOutcome)):
                raise Dead(f"Graph API refused: {exc}", type(exc).__name__) from None
            last = exc
            await asyncio.sleep(backoff_s * (2 ** attempt))
    raise Dead(f"gave up after {attempts} attempts: {last}", type(last).__name__)
