"""Outcomes: what becomes of a job, made durable before its source record is acknowledged.

Contract:

* ``Results.emit(result)``: one SendResult produced and acknowledged (acks=all).
* ``Outcomes.finish``: the final outcome — ledger DONE and the SendResult, acknowledged together
  with every other outcome of the loop turn (``Coalescer``) — then the job is released from the
  buffer and its source record acknowledged. The two writes are not atomic: a replay that finds
  DONE answers the result again (``emit_again``).
* ``Outcomes.retry_later``: ledger RETRY (+ a RETRYING result when the ERP should hear why); a
  short wait stays in memory unacknowledged (a crash replays it as RETRY), a long one is parked on
  ``wa.send.retry`` and the source record acknowledged.
* ``Outcomes.dead``: a dead letter (acknowledged), then ``finish`` DEAD.

A source record is never acknowledged before its outcome is durable, nor for a revoked partition.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from connectors.meta import errors as meta_errors
from processors.send import records as R
from processors.send.batching import Coalescer
from processors.send.buffer import Buffer
from processors.send.lanes import Job
from processors.send.ledger import Entry, Ledger
from processors.send.numbers import Numbers
from processors.send.stats import Stats
from wapipe.deadletter import DeadLetter, DeadLetters, Source
from wapipe.messages.send import DONE, RETRY, SendCommand, SendResult

REPEATED = "result repeated: its command was read again after a restart or rebalance (nothing sent again)"

# Results this process wrote and the broker acknowledged, remembered for the redeliveries that
# come soon after (about three minutes of sending at 265 msg/s).
ANSWERED_REMEMBERED = 50_000

Send = Callable[..., Awaitable[Any]]  # (topic, key, value, *, partition=None, headers=None) -> acked


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


class Results:
    """SendResults to wa.send.results, keyed by tenant."""

    def __init__(self, *, serde: Any, send: Send, topic: str, stats: Stats) -> None:
        self.serde = serde
        self._send = send
        self.topic = topic
        self.stats = stats

    def encode(self, result: SendResult) -> bytes:
        return self.serde.encode(R.RESULT, result.to_avro(), topic=self.topic)

    def written(self, outcome: str) -> None:
        """Count a result once the broker acknowledged it (``wapipe_send_outcomes``)."""
        self.stats.outcomes[outcome] += 1

    async def emit(self, result: SendResult) -> None:
        """Produce ``result`` and wait for the broker's acknowledgement."""
        await self._send(self.topic, result.tenant_id.encode(), self.encode(result))
        self.written(str(result.outcome))


class Outcomes:
    def __init__(self, settings: Any, *, ledger: Ledger, results: Results, send: Send, letters: DeadLetters,
                 retry_topic: str, buffer: Buffer, numbers: Numbers, on_unknown: Callable[[str], None]) -> None:
        """``on_unknown(key)``: a job ended UNKNOWN (the reconciler looks for its status webhooks);
        ``letters``: the worker's dead letters (wa.send.dead, cut down to fit, retried)."""
        self.s = settings
        self.ledger = ledger
        self.results = results
        self._send = send
        self.letters = letters
        self.retry_topic = retry_topic
        self.buffer = buffer
        self.numbers = numbers
        self.on_unknown = on_unknown
        self.answered = Answered()
        self._batch: Coalescer[tuple] = Coalescer(self._write)

    async def _write(self, items: list[tuple]) -> None:
        await self.ledger.record_many([entry for entry, _ in items], extra=[r for _, r in items])

    async def emit(self, cmd: SendCommand, outcome: R.Outcome, **kw: Any) -> None:
        """A result that changes nothing in the ledger (a refusal, a duplicate, a RETRYING)."""
        await self.results.emit(R.result(cmd, outcome, **kw))

    async def emit_again(self, cmd: SendCommand, entry: Entry) -> None:
        """The SendResult of a DONE ledger entry once more: same outcome, codes and decided_at."""
        rec = entry.record
        await self.emit(cmd, R.Outcome(entry.outcome), attempts=entry.attempts, wamid=entry.wamid,
                        message_status=rec and rec.message_status, error_code=rec and rec.error_code,
                        error_subcode=rec and rec.error_subcode, at=rec and rec.at, reason=REPEATED)
        self.answered.add(cmd.key, cmd.command_id, str(entry.outcome))

    async def finish(self, job: Job, outcome: R.Outcome, *, attempts: int, **kw: Any) -> None:
        at = R.now_utc()
        entry = R.ledger_entry(job.cmd, DONE, attempts=attempts, outcome=str(outcome), wamid=kw.get("wamid"),
                               message_status=kw.get("message_status"), error_code=kw.get("error_code"),
                               error_subcode=kw.get("error_subcode"), at=at)
        value = self.results.encode(R.result(job.cmd, outcome, attempts=attempts, at=at, **kw))
        # The DONE entry and the result leave with every other outcome of this loop turn.
        await self._batch.submit(((job.key, job.partition, entry),
                                  (self.results.topic, value, job.cmd.tenant_id.encode(), None, None)))
        self.results.written(str(outcome))
        self.answered.add(job.key, job.cmd.command_id, str(outcome))
        self.buffer.release(job)
        if outcome == R.Outcome.UNKNOWN:
            self.on_unknown(job.key)
        await self._ack(job)

    async def retry_later(self, job: Job, delay: float, *, attempts: int, reason: str | None, via_topic: bool,
                          result: bool = False, **kw: Any) -> None:
        not_before = time.time() + delay
        nb_ms = int(not_before * 1000)
        await self.ledger.record(job.key, job.partition,
                                 R.ledger_entry(job.cmd, RETRY, attempts=attempts, not_before_ms=nb_ms))
        if result:
            await self.emit(job.cmd, R.Outcome.RETRYING, attempts=attempts, reason=reason, **kw)
        self.buffer.release(job)
        if not via_topic:  # short wait: keep it here, still unacknowledged (a crash replays it as RETRY)
            job.attempt = attempts
            job.not_before = not_before
            self.numbers.enqueue(job, front=True)
            return
        # Long wait: park it on wa.send.retry and let the source offset move on.
        await self._send(self.retry_topic, job.cmd.phone_number_id.encode(), job.raw, partition=job.partition,
                         headers=[("attempt", str(attempts).encode()), ("not_before", str(nb_ms).encode())])
        await self._ack(job)

    async def dead(self, job: Job, exc: meta_errors.MetaError, attempts: int) -> None:
        cmd = job.cmd
        letter = DeadLetter(Source(job.source, job.partition, -1, cmd.phone_number_id.encode(), job.raw),
                            f"gave up after {attempts} attempts: {exc}"[:500], type(exc).__name__,
                            tenant_id=cmd.tenant_id, subject_id=cmd.subject_id,
                            headers={"idempotency_key": cmd.idempotency_key})
        await self.letters.write(letter, key=cmd.tenant_id.encode())  # counted in wapipe_dead_letters_total
        await self.finish(job, R.Outcome.DEAD, attempts=attempts, reason=f"gave up after {attempts} attempts: {exc}"[:300],
                          error_code=exc.code, error_subcode=exc.subcode)

    async def _ack(self, job: Job) -> None:
        if job.ack is not None and job.partition not in self.buffer.revoked:
            await job.ack()
