"""The Graph call stage, in layers: ``dispatch(batch)`` → ``prepare`` (token and body) →
intents on the ledger → ``call`` (one request) → ``classify`` (Meta's answer as a ``Verdict``) →
``Outcomes``.

Contract: a job reaches ``dispatch`` with a pacing slot and a Graph-call slot reserved for it
(the scheduler's). Nothing is sent that the ledger does not say DISPATCHING for: the batch's
intents are written together and acknowledged (acks=all) before any of its calls starts. A job
that cannot be prepared is FAILED without a call; a batch whose intents could not be written
goes back to the front of its number's queue. Every call ends in exactly one outcome.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson

from connectors.meta import errors as meta_errors
from connectors.meta.send_call import CallTrace
from processors.send import records as R
from processors.send.lanes import Job
from processors.send.ledger import Ledger
from processors.send.numbers import Number, Numbers, Work
from processors.send.outcomes import Outcomes
from processors.send.slots import FairSlots
from processors.send.stats import Stats
from wapipe import log
from wapipe.messages.send import DISPATCHING, TRANSACTIONAL

logger = log.get_logger(__name__)

# Pacing reactions a verdict asks for
PAIR = "pair"  # 131056: this recipient waits (PairLimiter)
SPAM = "spam"  # 131048: the number pauses for minutes
THROTTLE = "throttle"  # 130429/80007/...: the number's cap drops; the pair's token comes back


@dataclass(frozen=True, slots=True)
class Verdict:
    """What Meta's error answer means for the job: a final ``outcome`` (UNKNOWN, FAILED; DEAD when
    ``dead``), or a retry in ``retry_in`` seconds (``outcome`` None) — parked on wa.send.retry when
    ``via_topic``, with a RETRYING result when ``tell`` — and the pacing reaction it needs."""

    outcome: R.Outcome | None
    reason: str
    retry_in: float = 0.0
    via_topic: bool = False
    tell: bool = False
    pacing: str | None = None

    @property
    def dead(self) -> bool:
        """Retries used up: a dead letter, then DEAD."""
        return self.outcome is R.Outcome.DEAD


def classify(exc: meta_errors.MetaError, attempt: int, settings: Any, *, jitter: float = 1.0) -> Verdict:
    """Pure: Meta's error answer to the ``attempt``-th call (``jitter`` in [0.5, 1.5] spreads the
    backoff of transient errors). A ``PAIR`` verdict's wait is the pair limiter's to say."""
    s, reason = settings, str(exc)[:300]
    if isinstance(exc, meta_errors.UnknownOutcome):
        return Verdict(R.Outcome.UNKNOWN, reason)
    if isinstance(exc, meta_errors.PairRateLimited):
        return Verdict(None, "pair rate limit (131056)", pacing=PAIR)
    if isinstance(exc, meta_errors.SpamLimited):  # parked for minutes: the ERP hears why (RETRYING)
        return Verdict(None, reason, retry_in=exc.retry_after or s.send_spam_pause_s, via_topic=True, tell=True,
                       pacing=SPAM)
    if isinstance(exc, meta_errors.Throttled):
        return Verdict(None, reason, retry_in=min(exc.retry_after or 1.0, 60.0), pacing=THROTTLE)
    if isinstance(exc, meta_errors.Transient):
        if attempt >= s.send_max_attempts:
            return Verdict(R.Outcome.DEAD, reason)
        backoff = min(s.send_retry_max_s, s.send_retry_base_s * 2 ** (attempt - 1)) * jitter
        return Verdict(None, reason, retry_in=backoff, via_topic=True, tell=True)
    return Verdict(R.Outcome.FAILED, reason)  # Permanent, NumberBlocked, AuthError, MetaError without a class


class GraphCall:
    def __init__(self, settings: Any, *, ledger: Ledger, sender: Any, registry: Any, kek: Any, keyring: Any,
                 wamid_ref: Any, numbers: Numbers, slots: FairSlots, work: Work, outcomes: Outcomes,
                 stats: Stats) -> None:
        """``sender``: the send call (``connectors.meta.send_call.MessageSender``); ``wamid_ref``
        turns Meta's wamid into its keyed ref (wapipe/privacy/wamids.py): the ledger, the results
        and everything downstream keep only that, never the wamid (it embeds the number)."""
        self.s = settings
        self.ledger = ledger
        self.sender = sender
        self.registry = registry
        self.kek = kek
        self.keyring = keyring
        self.wamid_ref = wamid_ref
        self.numbers = numbers
        self.slots = slots
        self.work = work
        self.outcomes = outcomes
        self.stats = stats
        self._tokens: dict[tuple[str, int], str] = {}
        self.closing = False

    def _token(self, tenant: Any) -> str:
        k = (tenant.tenant_id, tenant.version)
        tok = self._tokens.get(k)
        if tok is None:
            tok = self._tokens[k] = tenant.open_token(self.kek)
        return tok

    def prepare(self, job: Job) -> tuple[str, bytes]:
        """The tenant's token and the request body (JSON bytes) of ``job``'s call."""
        cmd = job.cmd
        token = self._token(self.registry.tenant(cmd.tenant_id))
        # Inline: the data key is normally in the ring's memory already (it is published before
        # any command sealed with it), and an AES-GCM open is microseconds.
        pii = self.keyring.open(cmd.pii.key_id, cmd.pii.nonce, cmd.pii.ciphertext)
        body = R.graph_body(pii, job.key)  # the recipient's number and/or BSUID (issue 20): records.py
        return token, orjson.dumps(body)

    async def dispatch(self, number: Number, jobs: list[Job]) -> None:
        """The calls of the slots ``number``'s loop reserved: their DISPATCHING entries first,
        written together and acknowledged, then the calls."""
        pacer = number.pacer
        ready: list[tuple[Job, str, bytes]] = []
        for i, job in enumerate(jobs):
            try:
                if self.keyring.opens_now(job.cmd.pii.key_id):
                    token, body = self.prepare(job)
                else:  # a data key not read yet (a new recipient's): the ring reads up to the topic's
                    # end, a broker round trip or more, in a thread: the loop and the other numbers go on
                    token, body = await asyncio.to_thread(self.prepare, job)
            except asyncio.CancelledError:
                for _ in range(len(ready) + len(jobs) - i):  # no call made: every slot not yet handed on
                    pacer.release()
                    self.slots.release()
                raise
            except Exception as exc:  # erased subject, unreadable seal, no token: refused before any call
                pacer.release()
                self.work.call(job, self.outcomes.finish(
                    job, R.Outcome.FAILED, attempts=job.attempt,
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
                if not isinstance(exc, asyncio.CancelledError) and not self.closing:
                    self.numbers.enqueue(job, front=True)
            if isinstance(exc, asyncio.CancelledError):
                raise
            logger.warning("dispatcher.intent_write_failed", jobs=len(ready), error=f"{type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(0.5)
            return
        self.stats.ledger_writes += len(ready)
        self.stats.intent_batches += 1
        self.stats.ledger_write_s += (time.monotonic() - written) * len(ready)
        for job, token, body in ready:
            self.work.call(job, self.call(number, job, token, body))

    async def call(self, number: Number, job: Job, token: str, body: bytes) -> None:
        """One Graph call, whose intent is on the ledger. Its slot, reserved before the ledger
        write, counted in the window; the call leaves now, unless its write was acknowledged
        sooner than the reservation looked ahead or a throttle lowered the cap meanwhile: then it
        waits here for room (``NumberPacer.start_wait``, the check that bounds the server's count)."""
        cmd, pacer = job.cmd, number.pacer
        attempt = job.attempt + 1
        ready = time.monotonic() - job.reserved_at
        pacer.ready(ready)
        st = self.stats
        st.reserve_to_ready_s += ready
        st.reserve_to_ready_n += 1
        st.reserve_to_ready_max = max(st.reserve_to_ready_max, ready)
        try:
            while (wait := pacer.start_wait(time.monotonic())) > 0:
                st.start_waits += 1
                await asyncio.sleep(wait)
        except BaseException:
            pacer.release()
            raise
        started = time.monotonic()
        pacer.start(started)
        st.graph_calls += 1
        st.calls_by_number[cmd.phone_number_id] += 1
        if job.lane == TRANSACTIONAL:
            st.tx_admit_to_call = max(st.tx_admit_to_call, time.monotonic() - job.enqueued)
        trace = CallTrace()
        answered = False  # a response came back (an error response too): the window rule learns from it
        try:
            try:
                accepted = await self.sender.send(cmd.phone_number_id, body, token=token,
                                                  timeout=self.s.send_graph_timeout_s, trace=trace)
                answered = True
            except meta_errors.MetaError as exc:
                # a 5xx may come from a gateway that still passes the call on: not an answer
                answered = exc.http_status is not None and exc.http_status < 500
                raise
            finally:
                ended = time.monotonic()
                pacer.finish(ended, written_at=trace.written_at, started_at=started, answered=answered)
                st.trip_s += ended - started
                st.trip_n += 1
        except meta_errors.MetaError as exc:
            await self.answered_with_error(number, job, exc, attempt)
            return
        except Exception as exc:  # not classified: it may have left, so it is unknown
            logger.exception("dispatcher.graph_unexpected", key=job.key)
            await self.outcomes.finish(job, R.Outcome.UNKNOWN, attempts=attempt, reason=f"unexpected {type(exc).__name__}")
            return
        if cmd.is_template:
            self.numbers.tier.record(cmd.tenant_id, job.subject, time.time())
        await self.outcomes.finish(job, R.Outcome.ACCEPTED, attempts=attempt, wamid=self.wamid_ref(accepted.wamid),
                                   message_status=accepted.message_status)

    async def answered_with_error(self, number: Number, job: Job, exc: meta_errors.MetaError, attempt: int) -> None:
        """``classify`` Meta's error, apply its pacing reaction, hand the job to ``Outcomes``."""
        self.stats.meta_errors[exc.code if exc.code is not None else "none"] += 1
        v = classify(exc, attempt, self.s, jitter=random.uniform(0.5, 1.5))
        code = dict(error_code=exc.code, error_subcode=exc.subcode)
        now = time.monotonic()
        retry_in = v.retry_in
        if v.pacing == PAIR:
            retry_in = number.pairs.on_pair_limited(job.subject, now)
            code = {}  # the pair's wait is told by the reason alone
        elif v.pacing is not None:
            if v.pacing == THROTTLE:
                number.pairs.refund(job.subject, now)
            number.pacer.on_throttled(now, pause=v.retry_in)
            self.stats.throttled += 1
            self.stats.throttled_by_number[number.pnid] += 1
        if v.dead:
            await self.outcomes.dead(job, exc, attempt)
        elif v.outcome is not None:
            await self.outcomes.finish(job, v.outcome, attempts=attempt, reason=v.reason, **code)
        else:
            await self.outcomes.retry_later(job, retry_in, attempts=attempt, reason=v.reason, via_topic=v.via_topic,
                                            result=v.tell, **code)
