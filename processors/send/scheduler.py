"""The scheduler: one loop per phone number, pacing its calls.

Contract: each number's loop takes its queued jobs — transactional first, campaigns round-robin,
paused campaigns skipped (``NumberQueue``) — within its pacer's sliding window (``NumberPacer``),
its recipients' pair rate (``PairLimiter``) and a share of the worker's Graph-call slots
(``FairSlots``), and hands each tick's reserved jobs to the Graph call stage as one batch. Jobs
decided without a call (a stopped campaign, a refusal on re-validation, the messaging tier) go to
``Outcomes`` without a slot. A number with nothing to send tells the ``Buffer`` (``idle``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from processors.send import records as R
from processors.send.buffer import Buffer
from processors.send.graph_call import GraphCall
from processors.send.lanes import Job
from processors.send.numbers import Number, Numbers, Work
from processors.send.outcomes import Outcomes
from processors.send.slots import FairSlots
from processors.send.validate import validate
from wapipe import log

logger = log.get_logger(__name__)

# Slots reserved per number and pacing tick: their DISPATCHING entries are written and
# acknowledged together before their calls start (a tick at 1,000 msg/s is a few ms: a handful).
BATCH_MOST = 64
# A command is validated when it is admitted; again before its call only if it waited longer.
REVALIDATE_AFTER_S = 1.0
DEFER = "defer"


class Scheduler:
    def __init__(self, settings: Any, *, numbers: Numbers, buffer: Buffer, slots: FairSlots, work: Work,
                 graph: GraphCall, outcomes: Outcomes, registry: Any, windows: Any, campaigns: Any,
                 suppressions: Any, is_restricted: Any) -> None:
        self.s = settings
        self.numbers = numbers
        self.buffer = buffer
        self.slots = slots
        self.work = work
        self.graph = graph
        self.outcomes = outcomes
        self.registry = registry
        self.windows = windows
        self.campaigns = campaigns
        self.suppressions = suppressions
        self.is_restricted = is_restricted
        self.closing = False

    def watch(self, number: Number) -> None:
        """Make sure ``number`` has its loop (started on its first job)."""
        if number.loop is None:
            number.loop = asyncio.ensure_future(self._run(number))

    def close(self) -> None:
        self.closing = True
        for n in self.numbers.by_id.values():
            if n.loop is not None:
                n.loop.cancel()

    async def _run(self, n: Number) -> None:
        q, pacer, pairs, wake = n.queue, n.pacer, n.pairs, n.wake
        # A number is one tenant's (q.tenant): its campaign queues are that tenant's campaigns.
        def paused(campaign_id: str) -> bool:
            return self.campaigns.paused(q.tenant, campaign_id)

        last_refresh = 0.0
        while not self.closing:
            try:
                now = time.monotonic()
                if now - last_refresh > 0.25:
                    last_refresh = now
                    pacer.set_limit(self.numbers.limit(n.pnid))
                    await self._cancel_stopped(n)
                if not q.has_ready(now, paused=paused):
                    self.buffer.idle(q.partition)
                    due = q.next_due()
                    wake.clear()
                    timeout = 0.25 if due is None else min(0.25, max(0.0, due - now))
                    try:
                        await asyncio.wait_for(wake.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
                    pacer.idle(time.monotonic())  # time with nothing to send is not pace lost
                    continue
                t = pacer.ready_at(now)
                if t > now:
                    await asyncio.sleep(t - now)
                    continue
                batch: list[Job] = []
                held: Job | None = None  # popped, its in-flight slot taken, not handed on yet
                try:
                    for i in range(pacer.due(now, BATCH_MOST)):
                        if i == 0:
                            await self.slots.acquire(q.tenant, urgent=bool(q.tx), who=n.pnid)
                        elif not self.slots.try_acquire():  # never wait holding a batch's slots
                            break
                        now = time.monotonic()
                        try:
                            job = q.pop(now, paused=paused)
                        except BaseException:
                            self.slots.release()
                            raise
                        if job is None:
                            self.slots.release()
                            break
                        held = job
                        try:
                            ready = pairs.ready_at(job.subject, now)
                            early = None if ready > now else self.precheck(job)
                        except Exception as exc:  # a bug on one command: it fails, with why; the rest go on
                            logger.exception("dispatcher.precheck_failed", key=job.key)
                            self.work.call(job, self.outcomes.finish(
                                job, R.Outcome.FAILED, attempts=job.attempt,
                                reason=f"internal error before the call: {type(exc).__name__}: {exc}"[:300]))
                            held = None
                            continue
                        if ready > now:  # this recipient must wait; others go on
                            held = None
                            q.size += 1
                            q.defer(job, ready)
                            self.slots.release()
                            continue
                        if early is not None:  # decided without a Graph call: no slot used
                            held = None
                            self.work.call(job, self._settle(job, *early))
                            continue
                        if not pacer.reserve(now):
                            held = None
                            q.push(job, front=True)
                            self.slots.release()
                            break
                        job.reserved_at = now
                        batch.append(job)
                        held = None
                        pairs.take(job.subject, now)
                finally:  # whatever ended the turn: what was reserved is dispatched, a job half way goes back
                    if held is not None:
                        q.push(held, front=True)
                        self.slots.release()
                    if batch:
                        self.work.batch(batch, self.graph.dispatch(n, batch))
                if not batch:
                    await asyncio.sleep(0)  # nothing reserved this turn: let the loop run
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop a number forever
                logger.exception("dispatcher.loop_error", phone_number_id=n.pnid)
                await asyncio.sleep(0.5)

    async def _cancel_stopped(self, n: Number) -> None:
        """Cancel the queued jobs of stopped campaigns, found by the queue's campaign ids (a job of
        one that waits in the timed heap, or rides the transactional lane, is cancelled by
        ``precheck`` when its turn comes)."""
        q = n.queue
        ids = [cid for cid in q.campaigns if cid and self.campaigns.stopped(q.tenant, cid)]
        if not ids:
            return
        for job in q.drain(lambda j: j.campaign in ids):
            await self.outcomes.finish(job, R.Outcome.CANCELLED, attempts=job.attempt, reason="campaign stopped")

    def precheck(self, job: Job) -> tuple | None:
        """Decisions that need no Graph call: (outcome, reason[, reason_code]) or
        (DEFER, seconds, reason); None: the call may go."""
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
        # The marketing opt-out (processors/send/suppression.py), just before any Graph call (every
        # time: one dict lookup): a MARKETING template to a subject who stopped marketing messages
        # is REJECTED here (reason_code MARKETING_OPT_OUT) and never reaches Meta.
        if (optout := self.suppressions.refusal(cmd, self.registry)) is not None:
            return (optout.outcome, optout.reason, optout.code)
        if cmd.is_template:
            tenant = self.registry.tenant(cmd.tenant_id)
            limit = int(getattr(tenant, "messaging_limit", 0) or 0)
            last = self.windows.last_inbound(cmd.phone_number_id, job.subject)
            in_window = last is not None and now_ms - last <= self.s.send_session_window_s * 1000
            if not in_window:
                at = self.numbers.tier.admit_at(cmd.tenant_id, job.subject, limit, now_ms / 1000)
                if at > now_ms / 1000:
                    return (DEFER, at - now_ms / 1000, f"messaging tier of {limit} unique recipients per 24 h reached")
        return None

    async def _settle(self, job: Job, what: Any, arg: Any, reason: str | None = None) -> None:
        if what == DEFER:  # (the tier: maybe hours) the ERP is told why with a RETRYING result
            await self.outcomes.retry_later(job, float(arg), attempts=job.attempt, reason=reason, via_topic=True,
                                            result=True)
        else:  # (outcome, reason[, reason_code])
            await self.outcomes.finish(job, what, attempts=job.attempt, reason=arg, reason_code=reason)
