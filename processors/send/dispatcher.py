"""Pace and dispatch: from admitted commands to Graph API calls and their outcomes.

One ``NumberQueue`` + ``NumberPacer`` + ``PairLimiter`` per phone number, one loop task per
number, one bounded pool of in-flight Graph calls for all numbers. Every command's life goes
through the ledger (``processors.send.ledger``): nothing is sent that the ledger does not say
"DISPATCHING" for, and no source record is acked before its outcome is durable.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from connectors.meta import errors as meta_errors
from connectors.meta.send_call import CallTrace
from processors.send import records as R
from processors.send.batching import Coalescer
from processors.send.lanes import TRANSACTIONAL, Job, NumberQueue
from processors.send.ledger import Entry, Ledger
from wapipe.messages.send import DISPATCHING, DONE, RETRY, SendCommand, SendResult
from processors.send.ledger_store import TierSend
from processors.send.pacing import NumberPacer, PairLimiter, TierBudget
from processors.send.slots import FairSlots
from processors.send.validate import validate
from wapipe import log
from wapipe.deadletter import PROCESS_TALLY, DeadLetter, Source
from wapipe.deadletter import encode as encode_dead_letter

logger = log.get_logger(__name__)

REPEATED = "result repeated: its command was read again after a restart or rebalance (nothing sent again)"

# Results this process wrote and the broker acknowledged, remembered for the redeliveries that
# come soon after (about three minutes of sending at 265 msg/s).
ANSWERED_REMEMBERED = 50_000

Send = Callable[..., Awaitable[None]]  # (topic, key, value, *, partition=None, headers=None) -> acked

# Slots reserved per number and pacing tick: their DISPATCHING entries are written and
# acknowledged together before their calls start (a tick at 1,000 msg/s is a few ms: a handful).
BATCH_MOST = 64
# A command is validated when it is admitted; again before its call only if it waited longer.
REVALIDATE_AFTER_S = 1.0


@dataclass
class Topics:
    results: str
    retry: str
    dead: str


@dataclass
class Stats:
    """Plain counters kept on the send path (a dict increment each); ``processors.send.metrics``
    turns them into Prometheus figures when scraped."""

    accepted: int = 0
    outcomes: dict = field(default_factory=lambda: defaultdict(int))
    graph_calls: int = 0
    throttled: int = 0
    calls_by_number: dict = field(default_factory=lambda: defaultdict(int))
    throttled_by_number: dict = field(default_factory=lambda: defaultdict(int))  # 130429 and friends, 131048
    meta_errors: dict = field(default_factory=lambda: defaultdict(int))  # Meta error code -> answers
    ledger_writes: int = 0
    ledger_write_s: float = 0.0  # total seconds the DISPATCHING writes took to be acknowledged
    # transactional lane: worst seconds from requested_at to admission, and admission to the call
    tx_to_admit: float = 0.0
    tx_admit_to_call: float = 0.0
    # from a slot's reservation to its request written (what a slot costs the window beyond 1 s)
    reserve_to_write_s: float = 0.0
    reserve_to_write_n: int = 0
    reserve_to_write_max: float = 0.0


class Answered:
    """The last results this process put on the broker, by key: (command id, outcome).

    A command found DONE in the ledger is answered again only when its result may be missing (the
    process that decided it may have died between the ledger write and the result's); a record
    delivered twice to this process while it runs (an ERP that published it twice) is not."""

    def __init__(self, size: int = ANSWERED_REMEMBERED) -> None:
        self.size = size
        self._last: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def add(self, key: str, command_id: str, outcome: str) -> None:
        self._last[key] = (command_id, outcome)
        self._last.move_to_end(key)
        if len(self._last) > self.size:
            self._last.popitem(last=False)

    def holds(self, key: str, command_id: str, outcome: str | None) -> bool:
        return self._last.get(key) == (command_id, outcome)


class Dispatcher:
    def __init__(self, settings: Any, *, ledger: Ledger, send: Send, serde: Any,
                 topics: Topics, sender: Any, registry: Any, kek: Any, keyring: Any, windows: Any, campaigns: Any,
                 wamid_ref: Callable[[str], str],
                 is_restricted: Callable[[str], bool] | None = None, suppressions: Any = None,
                 pause: Callable[[int], None] | None = None, resume: Callable[[int], None] | None = None) -> None:
        """``pause(p)`` / ``resume(p)`` stop and restart fetching the campaign lane's partition
        ``p`` (backpressure without blocking the agent, which would stall every other topic).
        ``wamid_ref`` turns Meta's wamid into its keyed ref (wapipe/privacy/wamids.py): the ledger,
        the results and everything downstream keep only that, never the wamid (it embeds the number).
        ``sender``: the send call (``connectors.meta.send_call.MessageSender``); the ledger writes
        batches itself (``Ledger.record_many``)."""
        self.s = settings
        self._pause = pause
        self._resume = resume
        self._paused: set[int] = set()
        self.ledger = ledger
        self._send = send
        self.serde = serde
        self.topics = topics
        self.sender = sender
        self._outcomes: Coalescer[tuple] = Coalescer(self._write_outcomes)
        self._window_ms = int(settings.send_dedup_window_s * 1000)
        self.registry = registry
        self.kek = kek
        self.keyring = keyring
        self.windows = windows
        self.campaigns = campaigns
        self.is_restricted = is_restricted
        self.suppressions = suppressions  # processors.send.suppression.SuppressionList (marketing opt-outs)
        self.wamid_ref = wamid_ref
        self.stats = Stats()
        self.on_unknown: Callable[[str], None] | None = None  # the reconciler (processors/send/reconcile.py)
        self.queues: dict[str, NumberQueue] = {}
        self.pacers: dict[str, NumberPacer] = {}
        self.pairs: dict[str, PairLimiter] = {}
        self.tier = TierBudget()
        self._wake: dict[str, asyncio.Event] = {}
        self._loops: dict[str, asyncio.Task] = {}
        self._active: dict[str, Job] = {}  # key -> job queued or in flight in this process
        self._inflight_by_partition: dict[int, set[asyncio.Task]] = defaultdict(set)
        self._held: dict[int, int] = defaultdict(int)  # campaign-lane jobs held per partition
        self._held_by: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # ... per number
        self._held_total = 0
        self.slots = FairSlots(settings.send_max_in_flight)  # Graph calls in flight, fair between tenants
        self._revoked: set[int] = set()
        self._tokens: dict[tuple[str, int], str] = {}
        self._answered = Answered()
        self._closing = False

    # --- admission -------------------------------------------------------------------------
    async def admit(self, cmd: SendCommand, *, raw: bytes, partition: int, source: str, ack: Callable[[], Awaitable[Any]],
                    backpressure: bool = True) -> None:  # noqa: ARG002 - kept for callers
        """A command read from its request topic (on its number's partition), wa.send.accepted
        (re-keyed there) or wa.send.retry: validated, then decided from the ledger — the one
        dedup record — and queued."""
        self._revoked.discard(partition)
        self.stats.accepted += 1
        now_ms = int(time.time() * 1000)
        refusal = validate(cmd, self.registry, now_ms=now_ms, last_inbound=self.windows.last_inbound,
                           window_s=self.s.send_session_window_s, is_restricted=self.is_restricted)
        if refusal is not None:  # not remembered: the ERP may fix the cause and resend the key
            await self._emit(cmd, refusal.outcome, reason=refusal.reason)
            await ack()
            return
        # A marketing opt-out known at admission is a refusal like the above (the key stays free
        # for a resend after an opt-in); one that arrives while the command waits is caught by
        # the hook in _precheck, just before the call.
        if self.suppressions is not None and (optout := self.suppressions.refusal(cmd, self.registry)) is not None:
            await self._emit(cmd, optout.outcome, reason=optout.reason, reason_code=optout.code)
            await ack()
            return
        await self.ledger.ensure_loaded(partition)
        key = cmd.key
        active = self._active.get(key)
        if active is not None:
            if active.cmd.command_id != cmd.command_id:
                await self._emit(cmd, R.Outcome.DUPLICATE, original_outcome="QUEUED",
                                 reason="a command with this idempotency key is already queued")
                await ack()
            else:
                # The same command again (a redelivery): acknowledged together with the queued
                # one, never before its outcome is durable (it may be the very same offset).
                active.ack = _chained(active.ack, ack)
            return
        entry = self.ledger.get(key)
        if entry is not None and entry.state == DONE and entry.at_ms < now_ms - self._window_ms:
            entry = None  # older than the dedup window: the key is free again
        job = Job(key=key, cmd=cmd, partition=partition, lane=cmd.lane, ack=ack,
                  enqueued=time.monotonic(), source=source, raw=raw, checked=time.monotonic())
        if job.lane == TRANSACTIONAL:
            self.stats.tx_to_admit = max(self.stats.tx_to_admit, time.time() - cmd.requested_at.timestamp())
        if entry is not None:
            if entry.state != DONE and entry.command_id != cmd.command_id:
                # Another command holds this key and is not finished: only it may be sent.
                await self._emit(cmd, R.Outcome.DUPLICATE, reason="idempotency key already in dispatch",
                                 original_outcome="RETRYING" if entry.state == RETRY else "UNKNOWN")
                await ack()
                return
            if entry.state == DONE:
                if entry.command_id != cmd.command_id:
                    await self._emit(cmd, R.Outcome.DUPLICATE, original_outcome=entry.outcome, wamid=entry.wamid,
                                     reason="idempotency key already dispatched")
                elif not self._answered.holds(key, cmd.command_id, entry.outcome):
                    # A replay of a command already decided (its offset was not committed): the
                    # process that decided it may have died between the ledger write and the
                    # result's, so the result is answered again from the ledger. Nothing is sent.
                    # (The same record read twice by this process, whose result it wrote: nothing.)
                    await self._emit_again(cmd, entry)
                await ack()
                return
            if entry.state == DISPATCHING:
                # Written before a Graph call that no process is making now: the worker died
                # mid-call. Meta may have the message; never resend it.
                await self._finish(job, R.Outcome.UNKNOWN, attempts=entry.attempts,
                                   reason="worker stopped during the Graph call; reconciled from status webhooks")
                return
            if entry.state == RETRY:
                job.attempt = entry.attempts
                job.not_before = (entry.not_before_ms or 0) / 1000
        self._enqueue(job)
        if (job.held and self._pause is not None and partition not in self._paused
                and self._held[partition] >= self.s.send_buffer_per_partition and self._may_pause(partition)):
            self._paused.add(partition)
            self._pause(partition)

    def _may_pause(self, partition: int) -> bool:
        """Stop reading a partition's campaign commands only when no number on it would starve:
        every number holding commands from it has 2 s of sendable work queued (a paused campaign's
        commands are not sendable), or the worker holds ``send_held_max`` campaign commands."""
        if self._held_total >= self.s.send_held_max:
            return True
        return all(self._sendable(pnid) >= self._enough(pnid)
                   for pnid, n in self._held_by[partition].items() if n > 0)

    def _sendable(self, pnid: str) -> int:
        q = self.queues.get(pnid)
        if q is None:
            return 0
        return len(q.tx) + sum(len(jobs) for cid, jobs in q.campaigns.items()
                               if not (cid and self.campaigns.paused(q.tenant, cid)))

    def _enough(self, pnid: str) -> int:
        pacer = self.pacers.get(pnid)
        return max(64, int(2 * (pacer.limit if pacer is not None else self.s.send_default_mps)))

    def _enqueue(self, job: Job, *, front: bool = False) -> None:
        pnid = job.cmd.phone_number_id
        q = self._queue(pnid)
        q.tenant = job.cmd.tenant_id
        self._active[job.key] = job
        q.partition = job.partition
        if job.lane != TRANSACTIONAL and not job.held:
            job.held = True
            self._held[job.partition] += 1
            self._held_by[job.partition][pnid] += 1
            self._held_total += 1
        delay = job.not_before - time.time()
        if delay > 0:
            q.size += 1
            q.defer(job, time.monotonic() + delay)
        else:
            q.push(job, front=front)
            if job.lane == TRANSACTIONAL:
                self.slots.promote(pnid)  # its number's loop may be waiting for a slot in its tenant's turn
        self._wake[pnid].set()

    def _queue(self, pnid: str) -> NumberQueue:
        q = self.queues.get(pnid)
        if q is None:
            q = self.queues[pnid] = NumberQueue()
            self.pacers[pnid] = NumberPacer(self._limit(pnid), safety=self.s.send_rate_safety,
                                            jitter=self.s.send_window_jitter_s)
            self.pairs[pnid] = PairLimiter(self.s.send_pair_interval_s, self.s.send_pair_burst)
            self._wake[pnid] = asyncio.Event()
            self._loops[pnid] = asyncio.ensure_future(self._run_number(pnid))
        return q

    def _limit(self, pnid: str) -> int:
        number = self.registry.number(pnid)
        mps = getattr(number, "throughput_mps", None) or self.s.send_default_mps
        return max(1, min(1000, int(mps)))

    async def _released(self, job: Job) -> None:
        if self._active.get(job.key) is job:
            del self._active[job.key]
        if job.held:
            job.held = False
            p = job.partition
            self._held[p] -= 1
            self._held_by[p][job.cmd.phone_number_id] -= 1
            self._held_total -= 1
            if p in self._paused and self._held[p] <= self.s.send_buffer_per_partition // 2:
                self._paused.discard(p)
                if self._resume is not None and p not in self._revoked:
                    self._resume(p)

    # --- the per-number loop ---------------------------------------------------------------
    async def _run_number(self, pnid: str) -> None:
        q, pacer, pairs, wake = self.queues[pnid], self.pacers[pnid], self.pairs[pnid], self._wake[pnid]
        # A number is one tenant's (q.tenant): its campaign queues are that tenant's campaigns.
        def paused(campaign_id: str) -> bool:
            return self.campaigns.paused(q.tenant, campaign_id)

        last_refresh = 0.0
        while not self._closing:
            try:
                now = time.monotonic()
                if now - last_refresh > 0.25:
                    last_refresh = now
                    pacer.set_limit(self._limit(pnid))
                    await self._cancel_stopped(q)
                if not q.has_ready(now, paused=paused):
                    self._unstarve(q)
                    due = q.next_due()
                    wake.clear()
                    timeout = 0.25 if due is None else min(0.25, max(0.0, due - now))
                    try:
                        await asyncio.wait_for(wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
                    continue
                t = pacer.ready_at(now)
                if t > now:
                    await asyncio.sleep(t - now)
                    continue
                batch: list[Job] = []
                for i in range(pacer.due(now, BATCH_MOST)):
                    if i == 0:
                        await self.slots.acquire(q.tenant, urgent=bool(q.tx), who=pnid)
                    elif not self.slots.try_acquire():  # never wait holding a batch's slots
                        break
                    now = time.monotonic()
                    job = q.pop(now, paused=paused)
                    if job is None:
                        self.slots.release()
                        break
                    ready = pairs.ready_at(job.subject, now)
                    if ready > now:  # this recipient must wait; others go on
                        q.size += 1
                        q.defer(job, ready)
                        self.slots.release()
                        continue
                    early = self._precheck(job)
                    if early is not None:  # decided without a Graph call: no slot used
                        self._spawn(job, self._settle(job, *early))
                        continue
                    if not pacer.reserve(now):
                        q.push(job, front=True)
                        self.slots.release()
                        break
                    pairs.take(job.subject, now)
                    job.reserved_at = now
                    batch.append(job)
                if batch:
                    self._start_batch(batch)
                else:
                    await asyncio.sleep(0)  # nothing reserved this turn: let the loop run
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop a number forever
                logger.exception("dispatcher.loop_error", phone_number_id=pnid)
                await asyncio.sleep(0.5)

    def _unstarve(self, q: NumberQueue) -> None:
        """A number with nothing to send reads on from its partition, if that was paused because
        of other numbers' (or paused campaigns') backlog: no head-of-line blocking between the
        numbers of one partition, up to ``send_held_max`` commands held."""
        p = q.partition
        if (p is not None and p in self._paused and p not in self._revoked and self._resume is not None
                and self._held_total < self.s.send_held_max):
            self._paused.discard(p)
            self._resume(p)
            logger.info("dispatcher.partition_resumed_for_idle_number", partition=p, held=self._held[p])

    def _spawn(self, job: Job, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks = self._inflight_by_partition[job.partition]
        tasks.add(task)

        def done(t: asyncio.Task) -> None:
            tasks.discard(t)
            self.slots.release()
            if not t.cancelled() and t.exception() is not None:
                logger.error("dispatcher.task_failed", key=job.key, error=repr(t.exception()))

        task.add_done_callback(done)

    def _start_batch(self, jobs: list[Job]) -> None:
        """Write the batch's DISPATCHING entries (one acknowledgement), then start its calls. The
        batch task counts as work under way for its partitions (a revocation waits for it)."""
        task = asyncio.ensure_future(self._dispatch_batch(jobs))
        owners = [self._inflight_by_partition[p] for p in {j.partition for j in jobs}]
        for tasks in owners:
            tasks.add(task)

        def done(t: asyncio.Task) -> None:
            for tasks in owners:
                tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                logger.error("dispatcher.batch_failed", jobs=len(jobs), error=repr(t.exception()))

        task.add_done_callback(done)

    async def _cancel_stopped(self, q: NumberQueue) -> None:
        """Cancel the queued jobs of stopped campaigns (a job of one that waits in the timed heap,
        or rides the transactional lane, is cancelled by ``_precheck`` when its turn comes). Only
        the queue's campaign ids are looked at: walking every queued job 4× a second cost 2 % of
        the worker's CPU with a campaign backlog."""
        ids = [cid for cid in q.campaigns if cid and self.campaigns.stopped(q.tenant, cid)]
        if not ids:
            return
        stopped = q.drain(lambda j: j.campaign in ids)
        for job in stopped:
            await self._finish(job, R.Outcome.CANCELLED, attempts=job.attempt, reason="campaign stopped")

    def _precheck(self, job: Job) -> tuple | None:
        """Decisions that need no Graph call: (outcome, reason) or ("defer", seconds)."""
        cmd = job.cmd
        if self.campaigns.stopped(cmd.tenant_id, job.campaign or None):
            return (R.Outcome.CANCELLED, "campaign stopped")
        now_ms = int(time.time() * 1000)
        if time.monotonic() - job.checked > REVALIDATE_AFTER_S:  # it waited: things may have changed
            job.checked = time.monotonic()
            refusal = validate(cmd, self.registry, now_ms=now_ms, last_inbound=self.windows.last_inbound,
                               window_s=self.s.send_session_window_s, is_restricted=self.is_restricted)
            if refusal is not None:
                return (refusal.outcome, refusal.reason)
        # >>> MARKETING OPT-OUT HOOK (processors/send/suppression.py): the one call, just before any
        # Graph call (every time: one dict lookup). A MARKETING template to a subject who stopped
        # marketing messages is REJECTED here (reason_code MARKETING_OPT_OUT) and never reaches Meta.
        if self.suppressions is not None and (optout := self.suppressions.refusal(cmd, self.registry)) is not None:
            return (optout.outcome, optout.reason, optout.code)
        # <<< MARKETING OPT-OUT HOOK
        if cmd.is_template:
            tenant = self.registry.tenant(cmd.tenant_id)
            limit = int(getattr(tenant, "messaging_limit", 0) or 0)
            last = self.windows.last_inbound(cmd.phone_number_id, job.subject)
            in_window = last is not None and now_ms - last <= self.s.send_session_window_s * 1000
            if not in_window:
                at = self.tier.admit_at(cmd.tenant_id, job.subject, limit, now_ms / 1000)
                if at > now_ms / 1000:
                    return ("defer", at - now_ms / 1000, f"messaging tier of {limit} unique recipients per 24 h reached")
        return None

    async def _settle(self, job: Job, what: Any, arg: Any, reason: str | None = None) -> None:
        if what == "defer":  # (the tier: maybe hours) the ERP is told why with a RETRYING result
            await self._retry_later(job, float(arg), attempts=job.attempt, reason=reason, via_topic=True, result=True)
        else:  # (outcome, reason[, reason_code])
            await self._finish(job, what, attempts=job.attempt, reason=arg, reason_code=reason)

    # --- one Graph call --------------------------------------------------------------------
    def _token(self, tenant: Any) -> str:
        k = (tenant.tenant_id, tenant.version)
        tok = self._tokens.get(k)
        if tok is None:
            tok = self._tokens[k] = tenant.open_token(self.kek)
        return tok

    def _prepare(self, job: Job) -> tuple[str, bytes]:
        """The tenant's token and the request body (JSON bytes) of ``job``'s call."""
        cmd = job.cmd
        token = self._token(self.registry.tenant(cmd.tenant_id))
        # Inline: the data key is normally in the ring's memory already (it is published before
        # any command sealed with it), and an AES-GCM open is microseconds.
        pii = self.keyring.open(cmd.pii.key_id, cmd.pii.nonce, cmd.pii.ciphertext)
        body = R.graph_body(pii, job.key)  # the recipient's number and/or BSUID (issue 20): records.py
        return token, orjson.dumps(body)

    async def _dispatch_batch(self, jobs: list[Job]) -> None:
        """Graph calls in the slots the number's loop reserved for them: their DISPATCHING entries
        first, written together and acknowledged (acks=all) before any of the calls starts."""
        pacer = self.pacers[jobs[0].cmd.phone_number_id]
        ready: list[tuple[Job, str, bytes]] = []
        for job in jobs:
            try:
                token, body = self._prepare(job)
            except Exception as exc:  # erased subject, unreadable seal, no token: refused before any call
                pacer.release()
                self._spawn(job, self._finish(job, R.Outcome.FAILED, attempts=job.attempt,
                                              reason=f"cannot prepare the message: {type(exc).__name__}: {exc}"[:300]))
                continue
            ready.append((job, token, body))
        if not ready:
            return
        written = time.monotonic()
        try:
            await self.ledger.record_many([(job.key, job.partition,
                                            R.ledger_entry(job.cmd, DISPATCHING, attempts=job.attempt + 1))
                                           for job, _, _ in ready])
        except BaseException as exc:
            for job, _, _ in ready:  # no call made: they go back to the front of their queue
                pacer.release()
                self.slots.release()
                if not isinstance(exc, asyncio.CancelledError) and not self._closing:
                    self._enqueue(job, front=True)
            if isinstance(exc, asyncio.CancelledError):
                raise
            logger.warning("dispatcher.intent_write_failed", jobs=len(ready), error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(0.5)
            return
        self.stats.ledger_writes += len(ready)
        self.stats.ledger_write_s += (time.monotonic() - written) * len(ready)
        for job, token, body in ready:
            self._spawn(job, self._call(job, token, body, pacer))

    async def _call(self, job: Job, token: str, body: bytes, pacer: NumberPacer) -> None:
        """One Graph call, whose intent is on the ledger. The slot reserved before the ledger write
        already counts in the window, so the call leaves now, unless a throttle lowered the cap
        meanwhile; it then counts until 1 s after its request was written (``NumberPacer``)."""
        cmd = job.cmd
        attempt = job.attempt + 1
        try:
            while (wait := pacer.start_wait(time.monotonic())) > 0:
                await asyncio.sleep(wait)
        except BaseException:
            pacer.release()
            raise
        pacer.start(time.monotonic())
        self.stats.graph_calls += 1
        self.stats.calls_by_number[cmd.phone_number_id] += 1
        if job.lane == TRANSACTIONAL:
            self.stats.tx_admit_to_call = max(self.stats.tx_admit_to_call, time.monotonic() - job.enqueued)
        trace = CallTrace()
        try:
            try:
                accepted = await self.sender.send(cmd.phone_number_id, body, token=token,
                                                  timeout=self.s.send_graph_timeout_s, trace=trace)
            finally:
                pacer.finish(time.monotonic(), written_at=trace.written_at)
                if trace.written_at is not None:
                    lag = trace.written_at - job.reserved_at
                    st = self.stats
                    st.reserve_to_write_s += lag
                    st.reserve_to_write_n += 1
                    st.reserve_to_write_max = max(st.reserve_to_write_max, lag)
        except meta_errors.MetaError as exc:
            await self._on_error(job, exc, attempt)
            return
        except Exception as exc:  # not classified: it may have left, so it is unknown
            logger.exception("dispatcher.graph_unexpected", key=job.key)
            await self._finish(job, R.Outcome.UNKNOWN, attempts=attempt, reason=f"unexpected {type(exc).__name__}")
            return
        if cmd.is_template:
            self.tier.record(cmd.tenant_id, job.subject, time.time())
        await self._finish(job, R.Outcome.ACCEPTED, attempts=attempt, wamid=self.wamid_ref(accepted.wamid),
                           message_status=accepted.message_status)

    async def _on_error(self, job: Job, exc: meta_errors.MetaError, attempt: int) -> None:
        now = time.monotonic()
        pnid = job.cmd.phone_number_id
        code = dict(error_code=exc.code, error_subcode=exc.subcode)
        self.stats.meta_errors[exc.code if exc.code is not None else "none"] += 1
        if isinstance(exc, meta_errors.UnknownOutcome):
            await self._finish(job, R.Outcome.UNKNOWN, attempts=attempt, reason=str(exc)[:300], **code)
        elif isinstance(exc, meta_errors.PairRateLimited):
            wait = self.pairs[pnid].on_pair_limited(job.subject, now)
            await self._retry_later(job, wait, attempts=attempt, reason="pair rate limit (131056)", via_topic=False)
        elif isinstance(exc, meta_errors.SpamLimited):
            pause = exc.retry_after or self.s.send_spam_pause_s
            self.pacers[pnid].on_throttled(now, pause=pause)
            self.stats.throttled += 1
            self.stats.throttled_by_number[pnid] += 1
            # parked for minutes: the ERP hears why (RETRYING), as for a transient error
            await self._retry_later(job, pause, attempts=attempt, reason=str(exc)[:300],
                                    via_topic=True, result=True, **code)
        elif isinstance(exc, meta_errors.Throttled):
            self.pairs[pnid].refund(job.subject, now)
            pause = min(exc.retry_after or 1.0, 60.0)
            self.pacers[pnid].on_throttled(now, pause=pause)
            self.stats.throttled += 1
            self.stats.throttled_by_number[pnid] += 1
            await self._retry_later(job, pause, attempts=attempt, reason=str(exc)[:300], via_topic=False, **code)
        elif isinstance(exc, meta_errors.Transient):
            if attempt >= self.s.send_max_attempts:
                await self._dead(job, exc, attempt)
            else:
                backoff = min(self.s.send_retry_max_s, self.s.send_retry_base_s * 2 ** (attempt - 1))
                backoff *= random.uniform(0.5, 1.5)
                await self._retry_later(job, backoff, attempts=attempt, reason=str(exc)[:300], via_topic=True,
                                        result=True, **code)
        else:  # Permanent, NumberBlocked, AuthError, MetaError without a class
            await self._finish(job, R.Outcome.FAILED, attempts=attempt, reason=str(exc)[:300], **code)

    # --- outcomes --------------------------------------------------------------------------
    async def _write_outcomes(self, items: list[tuple]) -> None:
        await self.ledger.record_many([entry for entry, _ in items], extra=[r for _, r in items])

    async def _emit(self, cmd: SendCommand, outcome: R.Outcome, **kw: Any) -> None:
        await self.emit_result(R.result(cmd, outcome, **kw))

    async def emit_result(self, result: SendResult) -> None:
        """Produce one SendResult (keyed by its tenant) and wait for the broker's acknowledgement."""
        self.stats.outcomes[str(result.outcome)] += 1
        value = self.serde.encode(R.RESULT, result.to_avro(), topic=self.topics.results)
        await self._send(self.topics.results, result.tenant_id.encode(), value)

    async def _emit_again(self, cmd: SendCommand, entry: Entry) -> None:
        """The SendResult of a DONE ledger entry once more: same outcome, codes and decided_at."""
        rec = entry.record
        await self._emit(cmd, R.Outcome(entry.outcome), attempts=entry.attempts, wamid=entry.wamid,
                         message_status=rec and rec.message_status, error_code=rec and rec.error_code,
                         error_subcode=rec and rec.error_subcode, at=rec and rec.at, reason=REPEATED)
        self._answered.add(cmd.key, cmd.command_id, str(entry.outcome))

    async def _finish(self, job: Job, outcome: R.Outcome, *, attempts: int, **kw: Any) -> None:
        """Final outcome: ledger DONE and the SendResult, both acknowledged, then the source ack.
        The two writes are not atomic: a replay that finds DONE answers the result again."""
        at = R.now_utc()
        entry = R.ledger_entry(job.cmd, DONE, attempts=attempts, outcome=str(outcome), wamid=kw.get("wamid"),
                               message_status=kw.get("message_status"), error_code=kw.get("error_code"),
                               error_subcode=kw.get("error_subcode"), at=at)
        value = self.serde.encode(R.RESULT, R.result(job.cmd, outcome, attempts=attempts, at=at, **kw).to_avro(),
                                  topic=self.topics.results)
        # The DONE entry and the result leave with every other outcome of this loop turn.
        await self._outcomes.submit(((job.key, job.partition, entry),
                                     (self.topics.results, value, job.cmd.tenant_id.encode(), None, None)))
        self.stats.outcomes[str(outcome)] += 1
        self._answered.add(job.key, job.cmd.command_id, str(outcome))
        await self._released(job)
        if outcome == R.Outcome.UNKNOWN and self.on_unknown is not None:
            self.on_unknown(job.key)
        if job.ack is not None and job.partition not in self._revoked:
            await job.ack()

    async def _retry_later(self, job: Job, delay: float, *, attempts: int, reason: str | None, via_topic: bool,
                           result: bool = False, **kw: Any) -> None:
        not_before = time.time() + delay
        nb_ms = int(not_before * 1000)
        await self.ledger.record(job.key, job.partition,
                                 R.ledger_entry(job.cmd, RETRY, attempts=attempts, not_before_ms=nb_ms))
        if result:
            await self._emit(job.cmd, R.Outcome.RETRYING, attempts=attempts, reason=reason, **kw)
        if not via_topic:  # short wait: keep it here, still unacked (a crash replays it as RETRY)
            job.attempt = attempts
            job.not_before = not_before
            await self._released(job)
            self._enqueue(job, front=True)
            return
        # Long wait: park it on wa.send.retry and let the source offset move on.
        await self._released(job)
        await self._send(self.topics.retry, job.cmd.phone_number_id.encode(), job.raw,
                         partition=job.partition,
                         headers=[("attempt", str(attempts).encode()), ("not_before", str(nb_ms).encode())])
        if job.ack is not None and job.partition not in self._revoked:
            await job.ack()

    async def _dead(self, job: Job, exc: meta_errors.MetaError, attempts: int) -> None:
        letter = DeadLetter(Source(job.source, job.partition, -1, job.cmd.phone_number_id.encode(), job.raw),
                            f"gave up after {attempts} attempts: {exc}"[:500], type(exc).__name__,
                            tenant_id=job.cmd.tenant_id, subject_id=job.cmd.subject_id,
                            headers={"idempotency_key": job.cmd.idempotency_key})
        value, _ = encode_dead_letter(self.serde, letter, self.topics.dead, self.s.dead_letter_max_bytes)
        await self._send(self.topics.dead, job.cmd.tenant_id.encode(), value)
        PROCESS_TALLY.add(letter.error_type[:200])  # wapipe_dead_letters_total{service="worker"}
        await self._finish(job, R.Outcome.DEAD, attempts=attempts, reason=f"gave up after {attempts} attempts: {exc}"[:300],
                           error_code=exc.code, error_subcode=exc.subcode)

    # --- rebalancing -----------------------------------------------------------------------
    def revoked(self, partition: int) -> bool:
        """Revoked from this worker and not seen again since (the caller checks the live assignment)."""
        return partition in self._revoked

    async def on_revoked(self, partitions: set[int]) -> None:
        """Stop working on ``partitions``: drop what is queued (its next owner replays it) and
        wait for the Graph calls under way, so their outcomes are in the ledger before the
        next owner reads it."""
        if not partitions:
            return
        self._revoked |= partitions
        for q in self.queues.values():
            for job in q.drain(lambda j: j.partition in partitions):
                await self._released(job)
        pending = [t for p in partitions for t in self._inflight_by_partition.get(p, ())]
        if pending:
            await asyncio.wait(pending, timeout=self.s.send_graph_timeout_s + 5)
        for p in partitions:
            self.ledger.unload(p)
            self._paused.discard(p)

    def rebuild_tier(self, partition: int, send: TierSend) -> None:  # noqa: ARG002 - the ledger's hook shape
        """Ledger load hook: accepted business-initiated sends of the last 24 h use the tier."""
        self.tier.record(send.tenant, send.subject, send.at_ms / 1000)

    async def close(self) -> None:
        self._closing = True
        for t in self._loops.values():
            t.cancel()
        tasks = [t for ts in self._inflight_by_partition.values() for t in ts]
        if tasks:
            await asyncio.wait(tasks, timeout=self.s.send_graph_timeout_s + 5)

    def backlog(self) -> int:
        return sum(q.size for q in self.queues.values())


def _chained(first: Callable[[], Awaitable[Any]] | None, then: Callable[[], Awaitable[Any]]) -> Callable[[], Awaitable[Any]]:
    async def both() -> None:
        if first is not None:
            await first()
        await then()

    return both
