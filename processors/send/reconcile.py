"""UNKNOWN send outcomes reconciled from status webhooks (docs/send-pipeline.md, "At most once").

Every Graph send carries ``biz_opaque_callback_data`` = ``tenant_id/idempotency_key`` and Meta echoes
it in the message's status webhooks, which the normaliser publishes as StatusEvents on
``wa.status.events``. Every send worker follows that topic (it is keyed by number, not by the
command's partition of ``wa.send.accepted``), and acts only on keys whose ledger entry it holds, i.e.
keys in the ledger partitions it owns right now: the ledger view only contains those.

For a key whose ledger entry is ``DONE``/``UNKNOWN``:

* sent / delivered / read → a new SendResult ``ACCEPTED`` with the status's wamid;
* failed → ``FAILED`` with Meta's first error code and title.

The ledger entry is rewritten (DONE with the new outcome and wamid) before the result is produced,
so a duplicate or out-of-order status finds the key no longer UNKNOWN and does nothing; the send
``outcomes`` agent moves the dedup table to the new outcome, so a later duplicate command is
answered with it. Nothing is ever resent.

Statuses for keys this worker does not (yet) hold as UNKNOWN are remembered for
``send_reconcile_memory_s`` seconds: an UNKNOWN recorded later, or a ledger partition loaded later,
is reconciled from them. UNKNOWNs with no status after ``send_unknown_timeout_s`` stay UNKNOWN and
are reported once in the log.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from processors.send import records as R
from processors.send.ledger import DONE, Ledger
from wapipe.edge.follow_aio import cancel
from wapipe.messages.events import StatusEvent
from wapipe.messages.send import DispatchEntry, SendResult
from wapipe import log

logger = log.get_logger(__name__)

ACCEPTED_STATUSES = frozenset({"sent", "delivered", "read", "played"})
REASON = "reconciled from status webhook"

Emit = Callable[[SendResult], Awaitable[None]]  # produce one result, acknowledged


@dataclass(frozen=True)
class Status:
    key: str
    wamid: str
    status: str
    phone_number_id: str
    subject_id: str | None
    error_code: int | None
    error_title: str | None
    seen: float

    @classmethod
    def from_event(cls, ev: StatusEvent, seen: float) -> "Status | None":
        key = ev.biz_opaque_callback_data or ""
        tenant, sep, idem = key.partition("/")
        if not sep or not tenant or not idem:
            return None  # not sent by wapipe (no or foreign callback data)
        if ev.tenant_id and ev.tenant_id != tenant:
            return None  # another tenant's number echoing a key that is not its own
        status = (ev.status or "").lower()
        if status not in ACCEPTED_STATUSES and status != "failed":
            return None
        err = ev.errors[0] if ev.errors else None
        return cls(key, ev.wamid or "", status, ev.phone_number_id or "", ev.subject_id,
                   err.code if err else None, (err.title or err.message) if err else None, seen)


class Unknowns:
    """The keys the reconciler is to look at: an UNKNOWN just recorded (``add``) or found by a
    ledger load (``loaded``, the ledger's hook), with the instant each was first seen."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.since: dict[str, float] = {}

    def add(self, key: str) -> None:
        self.since.setdefault(key, time.monotonic())
        self.queue.put_nowait(key)

    def loaded(self, partition: int, record: DispatchEntry) -> None:  # noqa: ARG002 - the ledger's hook shape
        if record.state == DONE and record.outcome == str(R.Outcome.UNKNOWN):
            self.add(record.key)


class Reconciler:
    def __init__(self, ledger: Ledger, emit: Emit, *, memory_s: float, unknown_timeout_s: float,
                 unknowns: Unknowns | None = None, max_remembered: int = 200_000,
                 wamid_ref: Callable[[str], str] | None = None) -> None:
        """``unknowns``: shared with the ledger (its load hook) and the outcomes (a new UNKNOWN)."""
        self.ledger = ledger
        # Statuses carry the wamid's keyed ref already (the normaliser's); one from an older
        # normaliser still carrying a wamid is turned into its ref before it is written anywhere.
        self.wamid_ref = wamid_ref
        self._emit = emit
        self.memory_s = memory_s
        self.unknown_timeout_s = unknown_timeout_s
        self.max_remembered = max_remembered
        self._recent: OrderedDict[str, Status] = OrderedDict()  # key -> best status seen
        self.unknowns = unknowns or Unknowns()
        self._queue = self.unknowns.queue
        self._unknown_since = self.unknowns.since
        self._task: asyncio.Task | None = None
        self.reconciled = 0

    # --- inputs ------------------------------------------------------------------------------
    def on_status(self, record: dict) -> None:
        """A decoded StatusEvent from wa.status.events (AsyncTopicFollower callback, sync). A record
        that is not one raises KeyError, which the follower counts as unreadable and skips."""
        st = Status.from_event(StatusEvent.from_avro(record), time.monotonic())
        if st is None:
            return
        prev = self._recent.get(st.key)
        # failed wins over nothing; an accepting status wins over failed only if it has a wamid
        if prev is None or (prev.status == "failed" and st.status != "failed") or not prev.wamid:
            self._recent[st.key] = st
            self._recent.move_to_end(st.key)
        while len(self._recent) > self.max_remembered:
            self._recent.popitem(last=False)
        self._queue.put_nowait(st.key)

    def on_unknown(self, key: str) -> None:
        """UNKNOWN was recorded for ``key`` (a status may have arrived already)."""
        self.unknowns.add(key)

    # --- the loop ----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        last_sweep = time.monotonic()
        while True:
            try:
                key = await asyncio.wait_for(self._queue.get(), 1.0)
            except asyncio.TimeoutError:
                key = None
            if key is not None:
                try:
                    await self.reconcile(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("reconcile.failed", key=key)
                    await asyncio.sleep(1.0)
                    self._queue.put_nowait(key)  # the ledger or results write failed: try again
            if time.monotonic() - last_sweep >= 1.0:
                last_sweep = time.monotonic()
                self._sweep(last_sweep)

    def _sweep(self, now: float) -> None:
        while self._recent:
            key, st = next(iter(self._recent.items()))
            if now - st.seen < self.memory_s:
                break
            self._recent.popitem(last=False)
        for key, since in list(self._unknown_since.items()):
            entry = self.ledger.get(key)
            if entry is None or entry.outcome != str(R.Outcome.UNKNOWN):
                del self._unknown_since[key]
            elif now - since >= self.unknown_timeout_s:
                del self._unknown_since[key]
                logger.warning("reconcile.unknown_unresolved", key=key, command_id=entry.command_id,
                               seconds=round(now - since), note="no status webhook; stays UNKNOWN, never resent")

    async def reconcile(self, key: str) -> bool:
        """Resolve ``key`` from a remembered status if this worker holds it as UNKNOWN."""
        st = self._recent.get(key)
        if st is None or not self.ledger.holds_unknown(key):
            return False
        entry = self.ledger.get(key)
        if entry is None or entry.state != DONE or entry.outcome != str(R.Outcome.UNKNOWN):
            return False
        partition = self.ledger.partition_of(key)
        rec = entry.record
        if partition is None or rec is None:
            return False
        rec = replace(rec, phone_number_id=rec.phone_number_id or st.phone_number_id,
                      subject_id=rec.subject_id or st.subject_id or "")
        wamid = (self.wamid_ref(st.wamid) if self.wamid_ref else st.wamid) or None
        if st.status == "failed":
            outcome, kw = R.Outcome.FAILED, dict(error_code=st.error_code, wamid=wamid,
                                                 reason=f"{REASON}: failed {st.error_code}: {st.error_title}"[:300])
        else:
            outcome, kw = R.Outcome.ACCEPTED, dict(wamid=wamid, message_status=st.status, reason=REASON)
        # The result first, then the ledger (one key at a time, in this loop): a crash between the
        # two leaves the key UNKNOWN, reconciled again from the remembered status after a restart
        # (a second identical result), where the other order could settle it without any result.
        # Once the ledger says DONE, a second status (or a replay) finds the key settled.
        at = R.now_utc()
        await self._emit(R.result(rec, outcome, attempts=entry.attempts, original_outcome=str(R.Outcome.UNKNOWN),
                                  at=at, **kw))
        done = replace(rec, state=DONE, outcome=str(outcome), wamid=kw.get("wamid"),
                       message_status=kw.get("message_status"), error_code=kw.get("error_code"), error_subcode=None,
                       at=at)
        await self.ledger.record(key, partition, done)
        self._unknown_since.pop(key, None)
        self.reconciled += 1
        logger.info("reconcile.done", key=key, outcome=str(outcome), wamid=kw.get("wamid"), status=st.status)
        return True
