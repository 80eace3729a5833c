"""Marketing opt-outs: who a tenant must not send marketing templates to, and the decision.

The list lives on the compacted topic ``wa.suppressions`` (key ``<tenant_id>/<subject_id>``, value a
``Suppression`` record: no phone number anywhere). The normaliser writes it from Meta's
``user_preferences`` webhook (``stop`` / ``resume``) and from failed statuses with error 131050
(``processors/normalise/preferences.py``). Every send worker follows the whole topic into memory
(``SuppressionList`` fed by an ``AsyncTopicFollower``) and asks, just before a Graph call:

    reason = suppressions.refusal(cmd, registry)   # None: send; else a REJECTED result, no call

Only MARKETING templates are refused: UTILITY and AUTHENTICATION templates and session messages
(inside the user's own 24 h window) still go, as Meta allows. The category comes from the
tenant registry's ``TemplateInfo`` (Meta's own category, synced from the Graph API and its
webhooks), never from the command: the ERP cannot mislabel a promotion as a utility message.

Ordering: per (tenant, subject) the entry with the latest ``at`` (Meta's event time) wins, so a
``stop`` that Meta delivers late never overrides a later ``resume`` in memory (and vice versa).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from processors.send.records import ms
from wapipe.messages.events import MARKETING_MESSAGES, Suppression
from wapipe.messages.send import Outcome, SendCommand

MARKETING = "MARKETING"
# What the ERP reads in SendResult.reason_code when a marketing send was refused for an opt-out.
REASON_CODE = "MARKETING_OPT_OUT"


class Registry(Protocol):
    def tenant(self, tenant_id: str) -> Any: ...

    def template(self, waba_id: str, name: str, language: str) -> Any: ...


@dataclass(frozen=True)
class Entry:
    suppressed: bool
    at_ms: int
    source: str


@dataclass(frozen=True)
class Refusal:
    outcome: Outcome
    reason: str
    code: str = REASON_CODE


def decide(cmd: SendCommand, category: str | None, entry: Entry | None) -> Refusal | None:
    """Pure: may ``cmd`` (a decoded SendCommand of template ``category``, None for a session message)
    go to a subject whose preference is ``entry``? None when it may."""
    if entry is None or not entry.suppressed:
        return None
    if not cmd.is_template or (category or "").upper() != MARKETING:
        return None
    return Refusal(Outcome.REJECTED,
                   f"the recipient stopped marketing messages from this business ({entry.source}); "
                   "MARKETING templates are not sent to them until they resume (utility and authentication "
                   "templates still are)")


def category_of(cmd: SendCommand, registry: Registry) -> str | None:
    """The template's category as the tenant registry holds it (Meta's), None for a session message
    or a template the registry does not know (validation refuses that one anyway)."""
    ref = cmd.template
    if ref is None:
        return None
    tenant = registry.tenant(cmd.tenant_id)
    if tenant is None:
        return None
    tpl = registry.template(getattr(tenant, "waba_id", None) or "", ref.name, ref.language)
    return None if tpl is None else str(getattr(tpl, "category", "") or "").upper() or None


class SuppressionList:
    """The followed topic in memory: (tenant_id, subject_id) -> the latest entry by event time."""

    def __init__(self) -> None:
        self._entries: dict[tuple[str, str], Entry] = {}

    def apply(self, record: dict) -> None:
        """One decoded ``Suppression`` record (the follower's callback). A record that is not one
        raises KeyError/TypeError/ValueError, which the follower counts as unreadable and skips."""
        s = Suppression.from_avro(record)
        if not s.tenant_id or not s.subject_id:
            raise ValueError("a suppression names a tenant and a subject")
        if str(s.category or MARKETING_MESSAGES) != MARKETING_MESSAGES:
            return  # a preference category Meta may add later: not the one this list is about
        new = Entry(bool(s.suppressed), ms(s.at), str(s.source or ""))
        key = (s.tenant_id, s.subject_id)
        old = self._entries.get(key)
        if old is None or new.at_ms >= old.at_ms:
            self._entries[key] = new

    def entry(self, tenant_id: str, subject_id: str) -> Entry | None:
        return self._entries.get((tenant_id, subject_id))

    def is_suppressed(self, tenant_id: str, subject_id: str) -> bool:
        e = self.entry(tenant_id, subject_id)
        return e is not None and e.suppressed

    def refusal(self, cmd: SendCommand, registry: Registry) -> Refusal | None:
        """The hook's one call: ``decide`` for this command, looked up in its own tenant. A command
        naming the recipient by number and by BSUID has two subjects (``subject_id``,
        ``user_subject_id``): the latest entry of either is the person's choice."""
        tenant = cmd.tenant_id
        entry = self.entry(tenant, cmd.subject_id)
        other = cmd.user_subject_id
        if other and (e2 := self.entry(tenant, other)) is not None and (entry is None or e2.at_ms > entry.at_ms):
            entry = e2
        if entry is None or not entry.suppressed:
            return None  # the common case costs one dict lookup
        return decide(cmd, category_of(cmd, registry), entry)

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.suppressed)


def follower(bootstrap: str, serde: Any, suppressions: SuppressionList) -> Any:
    """A follower (``wapipe.edge.follow_aio``) of the whole of ``wa.suppressions`` feeding ``suppressions``."""
    from wapipe.edge.follow_aio import AsyncTopicFollower
    from wapipe.topics import SUPPRESSIONS

    return AsyncTopicFollower(bootstrap, SUPPRESSIONS, "Suppression", serde, suppressions.apply)

