"""The send pipeline as a Faust app (``wapipe worker``).

One Faust read per send: the ERP SDK keys a SendCommand by its sender's ``phone_number_id``
(docs/erp-producer.md), so a command arrives on its number's partition, and the agent reading it
validates it, decides it from the ledger (the one dedup record), queues it for its number's pacer
and acknowledges it once its outcome is durable:

* ``transactional_lane`` wa.send.requested, ``campaign_lane`` wa.send.requested.bulk (backpressured),
  ``rekeyed`` wa.send.accepted / wa.send.accepted.transactional (commands an ERP keyed otherwise,
  moved once to their number's partition by the lane that read them), ``retries`` wa.send.retry
  → the ``Dispatcher`` (manual acks, in offset order: a record is acked only after its outcome is
  in the ledger and on wa.send.results, or after it was re-keyed, refused or dead-lettered).

All keyed topics have the same partition count, so Faust assigns partition *p* of every one of
them (and of the ledger) to the same worker: each number's limits live in exactly one process.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from processors.send import records as R
from processors.send import suppression
from processors.send.acks import InOrderAcks
from processors.send.dispatcher import Dispatcher, Topics
from processors.send.ledger import KafkaLedgerReader, Ledger
from processors.send.ledger_store import LedgerStore
from processors.send.reconcile import Reconciler
from processors.send.validate import validate
from processors.send.views import CampaignStates, ServiceWindows, TopicFollower
from wapipe import log, topics as T
from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.messages.send import SendCommand
from wapipe.deadletter import DeadLetter, DeadLetters, Source, refused_as_too_large
from wapipe.fetch_rotation import PollPauses, serve_partitions_in_turn
from wapipe.group_start import start_at_end
from wapipe.kafka import partition_for
from wapipe.kafka_edge import faust_app_kwargs
from wapipe.offset_guard import OffsetGuard, broker_committed, watch_stalls
from wapipe.publisher import KafkaPublisher, for_processor

logger = log.get_logger(__name__)

# The topics the dispatcher reads commands from (its ledger partitions follow theirs).
LANE_TOPICS = frozenset({T.SEND_REQUESTED, T.SEND_REQUESTED_BULK, T.SEND_ACCEPTED, T.SEND_ACCEPTED_TX,
                         T.SEND_RETRY})
# The topics whose agents show each record to the offset guard.
GUARDED_TOPICS = LANE_TOPICS
# Every topic the worker's consumer group reads (its agents' sources).
SOURCE_TOPICS = LANE_TOPICS
# Served before any other buffered partition in each poll (see wapipe/fetch_rotation.py).
TRANSACTIONAL_TOPICS = frozenset({T.SEND_REQUESTED, T.SEND_ACCEPTED_TX})
# How long a lane agent works through buffered records before it lets the loop run others.
YIELD_EVERY_S = 0.002
# Where a command read on another number's partition is moved to (keyed by its number).
REKEYED = {"TRANSACTIONAL": T.SEND_ACCEPTED_TX, "CAMPAIGN": T.SEND_ACCEPTED}


@dataclass(frozen=True)
class Write:
    """One record to produce; a dead letter is produced by ``wapipe.deadletter`` (cut down to fit)."""

    topic: str
    key: bytes | None
    value: bytes | None
    letter: DeadLetter | None = None


class Runtime:
    """Everything the agents share, started once the event loop runs."""

    def __init__(self, settings: Settings, bootstrap: str, app: Any = None) -> None:
        self.s = settings
        self.app = app
        self.bootstrap = bootstrap
        self.serde = AvroSerde.from_settings(settings)
        self.windows = ServiceWindows(settings.send_session_window_s)
        self.campaigns = CampaignStates()
        self.suppressions = suppression.SuppressionList()
        self.registry: Any = None
        self.keyring: Any = None
        self.kek: Any = None
        self.graph: Any = None
        self.producer: KafkaPublisher | None = None
        self.dispatcher: Dispatcher | None = None
        self.restrictions: Any = None
        self.reconciler: Reconciler | None = None
        self.ledger_store: LedgerStore | None = None
        self.pauses: PollPauses | None = None
        self._followers: list[TopicFollower] = []
        self._started = asyncio.Event()
        self._starting = False

    def ready(self) -> bool:
        """Whether the runtime has started (the agents wait for it before their first record)."""
        return self._started.is_set()

    async def started(self) -> None:
        if not self._starting:
            self._starting = True
            asyncio.ensure_future(self._start())
        await self._started.wait()

    async def _start(self) -> None:
        from connectors.meta.send_call import MessageSender
        from wapipe.privacy.kek import load_kek
        from wapipe.privacy.keyring import KeyRing
        from wapipe.tenants.registry import TenantRegistry

        s, loop = self.s, asyncio.get_running_loop()
        try:
            self.kek = load_kek(s)
            self.registry = TenantRegistry(s, self.bootstrap).start()
            self.keyring = KeyRing(s, self.bootstrap, self.kek).start()
            from producers.erp.client import wait_ready

            await loop.run_in_executor(None, self.registry.wait_ready, 60.0)
            if not await loop.run_in_executor(None, wait_ready, self.keyring, 5.0):
                logger.warning("worker.keyring_not_ready")
            self.restrictions = _restrictions(s, self.bootstrap)
            if self.restrictions is not None and hasattr(self.restrictions, "wait_ready"):
                await loop.run_in_executor(None, self.restrictions.wait_ready, 30.0)
            self.graph = MessageSender.from_settings(s, max_connections=s.send_max_in_flight)
            self.producer = for_processor(self.bootstrap)
            self.producer.start(loop)
            win = TopicFollower(self.bootstrap, T.INBOUND_MESSAGES, "InboundMessage", self.serde, self.windows.apply,
                                since_ms=self.windows.since_ms)
            ctl = TopicFollower(self.bootstrap, T.CAMPAIGN_CONTROL, R.CONTROL, self.serde, self.campaigns.apply)
            optouts = suppression.follower(self.bootstrap, self.serde, self.suppressions)  # marketing opt-outs
            self._followers = [win, ctl, optouts]
            for f in self._followers:
                f.start()
            await asyncio.wait_for(asyncio.gather(*(f.ready.wait() for f in self._followers)), 60)
            self.ledger_store = LedgerStore(ledger_dir(s), ttl_s=T.window_retention_ms(s.send_dedup_window_s) // 1000)
            ledger = Ledger(self.ledger_store, self.serde, self._write_ledger,
                            KafkaLedgerReader(self.bootstrap, T.SEND_LEDGER), topic=T.SEND_LEDGER,
                            write_many=self.producer.publish_many)
            from faust.types import TP

            pauses = self.pauses = PollPauses(self.app.consumer)  # never inside a poll: see PollPauses

            def pause(p: int) -> None:  # the campaign topics: what the buffer holds comes from them
                pauses.pause(TP(T.SEND_REQUESTED_BULK, p))
                pauses.pause(TP(T.SEND_ACCEPTED, p))

            def resume(p: int) -> None:
                pauses.resume(TP(T.SEND_REQUESTED_BULK, p))
                pauses.resume(TP(T.SEND_ACCEPTED, p))

            from wapipe.privacy.wamids import WamidRefs

            wamid_ref = WamidRefs.from_settings(s)
            self.dispatcher = Dispatcher(
                s, ledger=ledger, send=self.send, serde=self.serde,
                topics=Topics(results=T.SEND_RESULTS, retry=T.SEND_RETRY, dead=T.SEND_DEAD),
                sender=self.graph, registry=self.registry, kek=self.kek, keyring=self.keyring,
                windows=self.windows, campaigns=self.campaigns, wamid_ref=wamid_ref,
                is_restricted=self.is_restricted, suppressions=self.suppressions, pause=pause, resume=resume)
            rec = self.reconciler = Reconciler(ledger, self.dispatcher.emit_result, memory_s=s.send_reconcile_memory_s,
                                               unknown_timeout_s=s.send_unknown_timeout_s, wamid_ref=wamid_ref)
            self.dispatcher.on_unknown = rec.on_unknown
            ledger.on_tier = self.dispatcher.rebuild_tier
            ledger.on_unknown = rec.on_loaded
            rec.start()
            # Every worker follows every partition (statuses are keyed by number); the reconciler
            # acts only on keys of the ledger partitions this worker holds.
            status = TopicFollower(self.bootstrap, T.STATUS_EVENTS, "StatusEvent", self.serde, rec.on_status,
                                   since_ms=lambda: int((time.time() - s.send_reconcile_memory_s) * 1000))
            status.start()
            self._followers.append(status)
        except Exception:
            logger.exception("worker.start_failed")
            print("worker failed to start; see the log", file=sys.stderr, flush=True)
            raise SystemExit(1)
        self._started.set()

    def is_restricted(self, subject_id: str) -> bool:
        return bool(self.restrictions is not None and self.restrictions.is_restricted(subject_id))

    async def send(self, topic: str, key: bytes | None, value: bytes | None, *, partition: int | None = None,
                   headers: list | None = None) -> Any:
        """Produce and wait for the broker's acknowledgement (acks=all); the record's metadata."""
        assert self.producer is not None
        return await self.producer.publish(topic, value, key, headers=headers, partition=partition)

    async def _write_ledger(self, key: str, partition: int, value: bytes) -> int:
        return (await self.send(T.SEND_LEDGER, key.encode(), value, partition=partition)).offset

    async def drain(self) -> None:
        """No new Graph calls; wait for those under way (their outcomes written), then for every
        write still on its way to the broker."""
        if self.dispatcher is not None:
            await self.dispatcher.close()
        if self.producer is not None:
            left = await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, 10.0)
            logger.info("worker.drained", unacknowledged_writes=left)


def _restrictions(settings: Settings, bootstrap: str) -> Any:
    """PRIVACY's restriction registry when it exists (``is_restricted(subject_id)``)."""
    try:
        from wapipe.privacy.restrictions import RestrictionRegistry  # type: ignore[import-not-found]
    except ImportError:
        return None
    reg = RestrictionRegistry(settings, bootstrap)
    start = getattr(reg, "start", None)
    if start:
        start()
    return reg


def _renamed(fn: Any, name: str) -> Any:
    async def wrapper(stream: Any) -> None:
        await fn(stream)

    wrapper.__name__ = wrapper.__qualname__ = name
    return wrapper


def ledger_dir(settings: Settings) -> Path:
    """The worker's local copy of wa.send.ledger (one worker process per state dir)."""
    return settings.state_dir / "ledger" / settings.send_app_id


class Partitions:
    """The partition Kafka's Java partitioner (murmur2, the SDK's and Faust's) gives a number's id:
    where every one of the number's commands, ledger entries and retries belongs."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._of: dict[str, int] = {}

    def of(self, phone_number_id: str) -> int:
        p = self._of.get(phone_number_id)
        if p is None:
            if len(self._of) > 100_000:
                self._of.clear()
            p = self._of[phone_number_id] = partition_for(phone_number_id, self.count)
        return p


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    s = settings
    (s.state_dir / "faust").mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        s.send_app_id, **faust_app_kwargs(bootstrap), web_enabled=False,
        datadir=str(s.state_dir / "faust" / s.send_app_id),  # not "<app id>-data" in the working directory
        topic_partitions=s.topic_partitions, topic_replication_factor=s.replication_factor,
        topic_disable_leader=True, stream_wait_empty=False, broker_commit_interval=0.5,
        # Never "latest" here: Kafka would apply it to any partition without a commit, also one a
        # dead member had read. A new group is started at the end by run_worker (wapipe/group_start.py).
        consumer_auto_offset_reset="earliest", producer_acks=-1,
        # Small fetches and buffers: a record of the transactional topics is never far behind a
        # campaign burst in faust's single fetch-and-deliver loop.
        stream_buffer_maxsize=s.send_stream_buffer, broker_max_poll_records=s.send_max_poll_records,
        # A worker that died is noticed after this long and its partitions move on.
        broker_session_timeout=10.0, broker_heartbeat_interval=1.0,
    )
    rt = Runtime(s, bootstrap, app)
    app.wapipe_runtime = rt  # type: ignore[attr-defined]

    def topic(*names: str) -> Any:
        return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    serde = rt.serde
    partitions = Partitions(s.topic_partitions)
    counts = {"rekeyed": 0}
    letters: list[DeadLetters] = []
    lane_acks: list[InOrderAcks] = []  # one per lane agent; forgets revoked partitions

    def dead_letter(event: Any, exc: Exception | str, error_type: str | None = None) -> Write:
        letter = DeadLetter(Source.of_faust(event), str(exc)[:500], error_type or type(exc).__name__)
        return Write(T.SEND_DEAD, event.message.key, None, letter)

    guard = OffsetGuard("send")  # Faust can skip records around a rebalance: see wapipe/offset_guard.py
    app.wapipe_offset_guard = guard  # type: ignore[attr-defined]
    watch_stalls(app, guard, bootstrap, GUARDED_TOPICS, ready=rt.ready,
                 quiet=lambda: rt.pauses.pending if rt.pauses is not None else ())

    async def write(w: Write) -> None:
        """One record, acknowledged by the broker when this returns; retried while the broker does
        not take it, and a record it can never take (too large) becomes a dead letter."""
        delay = 0.2
        while True:
            try:
                if w.letter is not None:  # cut down to fit, retried inside
                    if not letters:
                        letters.append(DeadLetters(serde, T.SEND_DEAD, lambda t, v, k: rt.send(t, k, v),
                                                   s.dead_letter_max_bytes))
                    await letters[0].write(w.letter, key=w.key)
                else:
                    await rt.send(w.topic, w.key, w.value)
                return
            except Exception as exc:
                if w.letter is None and refused_as_too_large(exc):
                    w = Write(T.SEND_DEAD, w.key, None, DeadLetter(
                        Source(w.topic, -1, -1, w.key, w.value), f"{w.topic}: record too large "
                        f"({len(w.value or b'')} bytes)", "RecordTooLarge"))
                    continue
                logger.warning("lane.write_failed", topic=w.topic, error=f"{type(exc).__name__}: {str(exc)[:300]}",
                               retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    def rekey(cmd: SendCommand, raw: bytes) -> Write:
        """A command on another number's partition (an ERP that keyed it otherwise): moved once to
        its number's partition, where the one process pacing that number reads it."""
        counts["rekeyed"] += 1
        if counts["rekeyed"] in (1, 10, 100, 1000) or counts["rekeyed"] % 10_000 == 0:
            logger.warning("lane.rekeyed", tenant_id=cmd.tenant_id, rekeyed=counts["rekeyed"],
                           note="SendCommands must be keyed by phone_number_id (docs/erp-producer.md)")
        return Write(REKEYED.get(cmd.lane, T.SEND_ACCEPTED_TX), cmd.phone_number_id.encode(), raw)

    def lane_agent(source: Any, name: str, backpressure: bool) -> None:
        async def run(stream: Any) -> None:
            manual = stream.noack()
            acks = InOrderAcks(manual.ack)  # Faust misjudges a gap at the head of the acked run
            lane_acks.append(acks)
            clock = asyncio.get_running_loop().time
            turn = clock()
            async for event in manual.events():
                await rt.started()
                # A buffered burst never suspends this loop by itself: yield to the other lanes
                # and the calls every YIELD_EVERY_S (a yield per record cost a loop turn each and
                # held intake to a few hundred records/s on a busy loop).
                if clock() - turn > YIELD_EVERY_S:
                    await asyncio.sleep(0)
                    turn = clock()
                if not await guard.admit(app.consumer, event):
                    continue  # left unacknowledged: Faust delivers it again after the skipped ones
                m = event.message
                if rt.dispatcher.revoked(m.partition) and m.tp not in app.consumer.assignment():
                    continue  # buffered before its partition moved away: its new owner replays it
                entry = acks.started(event)

                async def ack(entry: list = entry) -> None:
                    await acks.done(entry)

                try:
                    cmd = SendCommand.from_avro(serde.decode(event.value, R.COMMAND))
                except SerdeError as exc:
                    await write(dead_letter(event, exc))
                    await ack()
                    continue
                try:
                    if m.topic != T.SEND_RETRY and partitions.of(cmd.phone_number_id) != m.partition:
                        await write(rekey(cmd, event.value))
                        await ack()
                        continue
                    await rt.dispatcher.admit(cmd, raw=event.value, partition=m.partition, source=m.topic, ack=ack,
                                              backpressure=backpressure)
                except Exception as exc:  # a bug on one record must not stop the stream
                    logger.exception("dispatch.admit_failed", topic=m.topic, offset=m.offset)
                    await write(dead_letter(event, exc))
                    await ack()
        run.__name__ = name
        app.agent(source, name=name)(run)

    lane_agent(topic(T.SEND_REQUESTED_BULK), "campaign_lane", True)
    lane_agent(topic(T.SEND_REQUESTED), "transactional_lane", False)
    lane_agent(topic(T.SEND_ACCEPTED, T.SEND_ACCEPTED_TX), "rekeyed", True)
    lane_agent(topic(T.SEND_RETRY), "retries", False)

    ready = {"printed": False}

    def _named(tps: Any) -> list[str]:
        return sorted(f"{tp.topic}:{tp.partition}" for tp in tps if tp.topic in LANE_TOPICS)

    @app.on_partitions_revoked.connect
    async def on_revoked(app: Any, revoked: Any, **kw: Any) -> None:
        logger.info("partitions.revoked", partitions=_named(revoked))
        guard.forget(revoked)
        for acks in lane_acks:
            acks.forget(revoked)
        if rt.pauses is not None:
            rt.pauses.forget(revoked)
        d = rt.dispatcher
        if d is not None:
            await d.on_revoked({tp.partition for tp in revoked if tp.topic in LANE_TOPICS})

    @app.on_partitions_assigned.connect
    async def on_assigned(app: Any, assigned: Any, **kw: Any) -> None:
        logger.info("partitions.assigned", partitions=_named(assigned))
        guard.forget(assigned)
        guard.assigned(await broker_committed(bootstrap, s.send_app_id, assigned))
        # a campaign's backlog never holds the transactional topics back
        serve_partitions_in_turn(app, first=TRANSACTIONAL_TOPICS)
        if not ready["printed"]:
            asyncio.ensure_future(_announce())

    async def _announce() -> None:
        await rt.started()
        if not ready["printed"]:
            ready["printed"] = True
            print("\nREADY worker", flush=True)  # own line: faust may have left a cursor escape

    @app.timer(interval=5.0)
    async def report() -> None:
        d = rt.dispatcher
        if d is not None:
            logger.info("dispatcher.stats", backlog=d.backlog(), graph_calls=d.stats.graph_calls,
                        in_flight=d.slots.in_use, admitted=d.stats.accepted, rekeyed=counts["rekeyed"],
                        queues={k: q.size for k, q in d.queues.items()},
                        throttled=d.stats.throttled, outcomes=dict(d.stats.outcomes), ledger=len(d.ledger),
                        tx_to_admit_s=round(d.stats.tx_to_admit, 3), tx_admit_to_call_s=round(d.stats.tx_admit_to_call, 3),
                        reserve_to_write_ms=round(1000 * d.stats.reserve_to_write_s / max(1, d.stats.reserve_to_write_n), 2),
                        reserve_to_write_max_ms=round(1000 * d.stats.reserve_to_write_max, 1))
            d.stats.tx_to_admit = d.stats.tx_admit_to_call = d.stats.reserve_to_write_max = 0.0
            d.stats.reserve_to_write_s, d.stats.reserve_to_write_n = 0.0, 0

    @app.on_before_shutdown.connect
    async def on_shutdown(app: Any, **kw: Any) -> None:
        # SIGTERM: Faust's consumer has stopped, the agents not yet. The Graph calls under way
        # finish and their outcomes reach the broker, so a restart finds them DONE, not
        # DISPATCHING (which it would have to report UNKNOWN).
        await rt.drain()

    return app


def run_worker(settings: Settings, bootstrap: str, *, loglevel: str = "WARNING") -> None:
    """Run the worker in this process until SIGTERM/SIGINT."""
    from wapipe.faust_worker import Worker

    from wapipe.log import quiet_libraries
    from processors.send.metrics import DispatchMetrics
    from wapipe.probe import beat_every_second, serving_probe

    quiet_libraries()
    try:  # uvloop: the worker's one event loop is its limit (callbacks, futures, sockets)
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    admin = T.admin_client(bootstrap)
    if settings.send_offset_reset == "latest":
        start_at_end(admin, settings.send_app_id, SOURCE_TOPICS)
    app = create_app(settings, bootstrap)
    with serving_probe(settings, "worker", lag=(bootstrap, settings.send_app_id, tuple(sorted(SOURCE_TOPICS)))) as probe:
        probe.registry.register(DispatchMetrics(lambda: app.wapipe_runtime.dispatcher))
        beat_every_second(app, probe)
        app.finalize()
        worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
        worker.execute_from_commandline()
