"""Intake: a command read from a lane topic, decided and handed on.

Contract: ``Intake.submit(cmd, ...)`` decides the command with pure functions over lookups —
``route`` (re-key a command read on another number's partition), ``screen`` (validation and the
marketing opt-out known now) and ``decide`` (the ledger, the one dedup record, and the jobs this
worker holds) — and carries the decision out: a re-keyed copy, a result, a chained acknowledgement,
or a job for ``Admission``. Its ``ack`` is called once the decision is durable (for a job: once its
outcome is). ``MessageRejected`` from admission becomes ``Buffer.reject`` here, the one place.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from processors.send import records as R
from processors.send.admission import Admission
from processors.send.buffer import Buffer, MessageRejected
from processors.send.lanes import Job
from processors.send.ledger import Entry, Ledger
from processors.send.outcomes import Answered, Outcomes
from processors.send.stats import Stats
from processors.send.validate import validate
from processors.send.writes import LaneWriter, Write
from wapipe import log
from wapipe.messages.send import DISPATCHING, DONE, RETRY, TRANSACTIONAL, SendCommand

logger = log.get_logger(__name__)

Ack = Callable[[], Awaitable[Any]]


# --- decisions, as data --------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rekey:
    """Read on another number's partition: moved once to ``topic``, keyed by its number."""

    topic: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Refused before the ledger (not remembered: the ERP may fix the cause and resend the key)."""

    outcome: R.Outcome
    reason: str
    reason_code: str | None = None


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Another command holds this idempotency key: a DUPLICATE result, nothing sent."""

    reason: str
    original_outcome: str | None
    wamid: str | None = None


@dataclass(frozen=True, slots=True)
class Join:
    """The same command again while it is queued or under way: acknowledged together with it."""


@dataclass(frozen=True, slots=True)
class AnswerAgain:
    """A replay of a command already decided: its result once more, from the ledger."""

    entry: Entry


@dataclass(frozen=True, slots=True)
class Settled:
    """Decided and answered already: only the acknowledgement."""


@dataclass(frozen=True, slots=True)
class Interrupted:
    """DISPATCHING with no call under way here: the worker died mid-call. UNKNOWN, never resent."""

    attempts: int


@dataclass(frozen=True, slots=True)
class Queue:
    """To be sent: ``attempt`` calls made already, not before ``not_before`` (epoch seconds)."""

    attempt: int = 0
    not_before: float = 0.0


Decision = Rekey | Refuse | Duplicate | Join | AnswerAgain | Settled | Interrupted | Queue
JOIN, SETTLED, QUEUE = Join(), Settled(), Queue()


def route(cmd: SendCommand, *, partition: int, home: int, rekeyed: dict[str, str], default: str) -> Rekey | None:
    """``home``: the partition of the command's number. ``rekeyed``: the topic by lane."""
    if home == partition:
        return None
    return Rekey(rekeyed.get(cmd.lane, default))


def screen(cmd: SendCommand, *, now_ms: int, registry: Any, last_inbound: Any, window_s: int,
           is_restricted: Callable[[str], bool] | None, suppressions: Any) -> Refuse | None:
    refusal = validate(cmd, registry, now_ms=now_ms, last_inbound=last_inbound, window_s=window_s,
                       is_restricted=is_restricted)
    if refusal is not None:
        return Refuse(refusal.outcome, refusal.reason)
    # A marketing opt-out known now is a refusal like the above (the key stays free for a resend
    # after an opt-in); one that arrives while the command waits is caught before the call.
    if (optout := suppressions.refusal(cmd, registry)) is not None:
        return Refuse(optout.outcome, optout.reason, optout.code)
    return None


def decide(cmd: SendCommand, *, active: Job | None, entry: Entry | None, answered: Answered, now_ms: int,
           window_ms: int) -> Decision:
    """``active``: the job this worker holds for the key; ``entry``: the key's ledger entry
    (read only when there is no active job); ``answered``: the results this process wrote."""
    if active is not None:
        if active.cmd.command_id != cmd.command_id:
            return Duplicate("a command with this idempotency key is already queued", "QUEUED")
        return JOIN  # a redelivery: never acknowledged before its outcome is durable (maybe the same offset)
    if entry is None or (entry.state == DONE and entry.at_ms < now_ms - window_ms):
        return QUEUE  # new, or older than the dedup window: the key is free again
    if entry.state != DONE and entry.command_id != cmd.command_id:
        return Duplicate("idempotency key already in dispatch", "RETRYING" if entry.state == RETRY else "UNKNOWN")
    if entry.state == DONE:
        if entry.command_id != cmd.command_id:
            return Duplicate("idempotency key already dispatched", entry.outcome, entry.wamid)
        if answered.holds(cmd.key, cmd.command_id, entry.outcome):
            return SETTLED  # the same record read twice by this process, whose result it wrote
        # The process that decided it may have died between the ledger write and the result's.
        return AnswerAgain(entry)
    if entry.state == DISPATCHING:
        return Interrupted(entry.attempts)
    return Queue(entry.attempts, (entry.not_before_ms or 0) / 1000)  # RETRY


# --- the stage -----------------------------------------------------------------------------------
# The reason of an UNKNOWN whose call a stopped worker left DISPATCHING on the ledger
INTERRUPTED_REASON = "worker stopped during the Graph call; reconciled from status webhooks"


class Intake:
    def __init__(self, settings: Any, *, ledger: Ledger, buffer: Buffer, admission: Admission, outcomes: Outcomes,
                 writer: LaneWriter, partition_of: Callable[[str], int], rekeyed: dict[str, str],
                 retry_topic: str, registry: Any, windows: Any, is_restricted: Callable[[str], bool] | None,
                 suppressions: Any, stats: Stats) -> None:
        self.s = settings
        self.ledger = ledger
        self.buffer = buffer
        self.admission = admission
        self.outcomes = outcomes
        self.writer = writer
        self.partition_of = partition_of
        self.rekeyed_topics = rekeyed
        self.retry_topic = retry_topic
        self.registry = registry
        self.windows = windows
        self.is_restricted = is_restricted
        self.suppressions = suppressions
        self.stats = stats
        self.window_ms = int(settings.send_dedup_window_s * 1000)
        self.rekeyed = 0

    async def submit(self, cmd: SendCommand, *, raw: bytes, partition: int, topic: str, ack: Ack) -> None:
        """A command read from its request topic (on its number's partition), wa.send.accepted
        (re-keyed there) or wa.send.retry."""
        if topic != self.retry_topic:
            rekey = route(cmd, partition=partition, home=self.partition_of(cmd.phone_number_id),
                          rekeyed=self.rekeyed_topics, default=self.rekeyed_topics[TRANSACTIONAL])
            if rekey is not None:
                await self._rekey(cmd, raw, rekey)
                await ack()
                return
        self.buffer.revoked.discard(partition)
        self.stats.accepted += 1
        now_ms = int(time.time() * 1000)
        refused = screen(cmd, now_ms=now_ms, registry=self.registry, last_inbound=self.windows.last_inbound,
                         window_s=self.s.send_session_window_s, is_restricted=self.is_restricted,
                         suppressions=self.suppressions)
        if refused is not None:
            await self.outcomes.emit(cmd, refused.outcome, reason=refused.reason, reason_code=refused.reason_code)
            await ack()
            return
        if not self.ledger.loaded(partition):
            await self.ledger.ensure_loaded(partition)
        key = cmd.key
        active = self.buffer.active(key)
        d = decide(cmd, active=active, entry=None if active is not None else self.ledger.get(key),
                   answered=self.outcomes.answered, now_ms=now_ms, window_ms=self.window_ms)
        if type(d) is Queue:
            job = Job(key=key, cmd=cmd, partition=partition, lane=cmd.lane, ack=ack, enqueued=time.monotonic(),
                      source=topic, raw=raw, checked=time.monotonic(), attempt=d.attempt, not_before=d.not_before)
            if job.lane == TRANSACTIONAL:
                self.stats.tx_to_admit = max(self.stats.tx_to_admit, time.time() - cmd.requested_at.timestamp())
            try:
                self.admission.submit(job)
            except MessageRejected as rejected:
                self.buffer.reject(rejected)
        elif type(d) is Join:
            assert active is not None
            active.ack = _chained(active.ack, ack)
        elif type(d) is Interrupted:
            job = Job(key=key, cmd=cmd, partition=partition, lane=cmd.lane, ack=ack, source=topic, raw=raw)
            await self.outcomes.finish(job, R.Outcome.UNKNOWN, attempts=d.attempts,
                                       reason=INTERRUPTED_REASON)
        else:
            if type(d) is Duplicate:
                await self.outcomes.emit(cmd, R.Outcome.DUPLICATE, reason=d.reason, original_outcome=d.original_outcome,
                                         wamid=d.wamid)
            elif type(d) is AnswerAgain:
                await self.outcomes.emit_again(cmd, d.entry)
            await ack()

    async def _rekey(self, cmd: SendCommand, raw: bytes, rekey: Rekey) -> None:
        """Moved once to its number's partition, where the one process pacing that number reads it."""
        self.rekeyed += 1
        if self.rekeyed in (1, 10, 100, 1000) or self.rekeyed % 10_000 == 0:
            logger.warning("lane.rekeyed", tenant_id=cmd.tenant_id, rekeyed=self.rekeyed,
                           note="SendCommands must be keyed by phone_number_id (docs/erp-producer.md)")
        await self.writer.write(Write(rekey.topic, cmd.phone_number_id.encode(), raw))


def _chained(first: Ack | None, then: Ack) -> Ack:
    async def both() -> None:
        if first is not None:
            await first()
        await then()

    return both
