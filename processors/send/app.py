"""The send pipeline (``wapipe worker``): a Faust app hosting the lane consumer, the lane reader
and the stages, and their wiring.

One read per send: the ERP SDK keys a SendCommand by its sender's ``phone_number_id``
(docs/erp-producer.md), so a command arrives on its number's partition. One librdkafka consumer
(``wapipe/edge/lane_consumer.py``) reads the lane topics — wa.send.requested, wa.send.requested.bulk,
wa.send.accepted / wa.send.accepted.transactional (re-keyed), wa.send.retry — and hands batches
to the ``LaneReader`` (processors/send/lane_reader.py): each record decoded into a ``SendCommand``
and submitted to the dispatcher's ``Intake``; its offset is committed once its outcome is durable.

All keyed topics have the same partition count and the group assigns by range, so partition *p* of
every one of them (and of the ledger) goes to the same worker: each number's limits live in
exactly one process. Faust hosts the process (lifecycle, signals, timers) without its own Kafka
clients. The collaborators are built once the event loop runs (``start_runtime``) into a ``Runtime``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
from faust.app.base import BootStrategy

from processors.send import records as R
from processors.send.admission import Admission
from processors.send.buffer import Buffer
from processors.send.dispatcher import Dispatcher
from processors.send.graph_call import GraphCall
from processors.send.intake import Intake
from processors.send.lane_reader import LaneReader
from processors.send.ledger import KafkaLedgerReader, Ledger
from processors.send.ledger_store import LedgerStore
from processors.send.numbers import Numbers, Work
from processors.send.outcomes import Outcomes, Results
from processors.send.reconcile import Reconciler, Unknowns
from processors.send.scheduler import Scheduler
from processors.send.slots import FairSlots
from processors.send.stats import Stats
from processors.send.suppression import SuppressionList
from processors.send.suppression import follower as suppression_follower
from processors.send.views import CampaignStates, ServiceWindows
from processors.send.writes import LaneWriter
from wapipe import log, topics as T
from wapipe.avro import AvroSerde
from wapipe.config import Settings
from wapipe.edge.group_start import start_at_end
from wapipe.edge.clients import admin_client, partition_for
from wapipe.edge.endpoint import faust_app_kwargs
from wapipe.edge.follow_aio import AsyncTopicFollower
from wapipe.edge.lane_consumer import LaneConsumer
from wapipe.privacy.restrictions import RestrictionRegistry
from wapipe.publisher import KafkaPublisher, for_processor

if TYPE_CHECKING:
    from wapipe.privacy.keyring import KeyRing
    from wapipe.tenants.registry import TenantRegistry

logger = log.get_logger(__name__)

# The topics the dispatcher reads commands from (its ledger partitions follow theirs).
LANE_TOPICS = frozenset({T.SEND_REQUESTED, T.SEND_REQUESTED_BULK, T.SEND_ACCEPTED, T.SEND_ACCEPTED_TX,
                         T.SEND_RETRY})
# Every topic the worker's consumer group reads.
SOURCE_TOPICS = LANE_TOPICS
# Read before any campaign record taken (processors/send/lane_reader.py); retries have waited already.
FIRST_TOPICS = frozenset({T.SEND_REQUESTED, T.SEND_ACCEPTED_TX, T.SEND_RETRY})
# The campaign topics: what the buffer holds comes from them; backpressure pauses them.
CAMPAIGN_TOPICS = (T.SEND_REQUESTED_BULK, T.SEND_ACCEPTED)
# How often the offsets of the records whose work is done are committed.
COMMIT_EVERY_S = 0.5
# How long the lane reader works through taken records before it lets the loop run others.
YIELD_EVERY_S = 0.002
# Where a command read on another number's partition is moved to (keyed by its number).
REKEYED = {"TRANSACTIONAL": T.SEND_ACCEPTED_TX, "CAMPAIGN": T.SEND_ACCEPTED}

Send = Callable[..., Any]


@dataclass(frozen=True)
class Runtime:
    """The worker's collaborators, built once the event loop runs."""

    settings: Settings
    serde: AvroSerde
    producer: KafkaPublisher
    writer: LaneWriter
    ledger: Ledger
    dispatcher: Dispatcher
    reconciler: Reconciler
    registry: TenantRegistry
    keyring: KeyRing
    restrictions: RestrictionRegistry
    followers: tuple[AsyncTopicFollower, ...]

    async def drain(self) -> None:
        """No new Graph calls; wait for those under way (their outcomes written), then for every
        write still on its way to the broker."""
        await self.dispatcher.close()
        left = await asyncio.get_running_loop().run_in_executor(None, self.producer.flush, 10.0)
        logger.info("worker.drained", unacknowledged_writes=left)


def publishing(producer: KafkaPublisher) -> Send:
    """``send(topic, key, value, *, partition=None, headers=None)``: produce and wait for the
    broker's acknowledgement (acks=all); the record's metadata."""

    async def send(topic: str, key: bytes | None, value: bytes | None, *, partition: int | None = None,
                   headers: list | None = None) -> Any:
        return await producer.publish(topic, value, key, headers=headers, partition=partition)

    return send


async def start_runtime(s: Settings, bootstrap: str, *, pause: Callable[[int], None],
                        resume: Callable[[int], None]) -> Runtime:
    """Every collaborator, started, and the stages wired (``pause(p)`` / ``resume(p)``: stop and
    restart reading partition ``p`` of the campaign topics, for backpressure)."""
    from connectors.meta.send_call import MessageSender
    from wapipe.privacy.kek import load_kek
    from wapipe.privacy.keyring import KeyRing
    from wapipe.privacy.wamids import WamidRefs
    from wapipe.tenants.registry import TenantRegistry

    loop = asyncio.get_running_loop()
    serde = AvroSerde.from_settings(s)
    kek = load_kek(s)
    registry = TenantRegistry(s, bootstrap).start()
    keyring = KeyRing(s, bootstrap, kek).start()
    await loop.run_in_executor(None, registry.wait_ready, 60.0)
    await loop.run_in_executor(None, keyring.wait_ready, 5.0)  # bounded by the key ring's own deadline
    restrictions = RestrictionRegistry(s, bootstrap)
    restrictions.start()
    await loop.run_in_executor(None, restrictions.wait_ready, 30.0)
    # the instant a request was written is needed only by the jitter rule (connectors/meta/send_call.py)
    sender = MessageSender.from_settings(s, max_connections=s.send_max_in_flight,
                                         trace_writes=s.send_window_jitter_s is not None)
    producer = for_processor(bootstrap, linger_ms=s.send_linger_ms)  # fewer, larger requests
    producer.start(loop)
    send = publishing(producer)

    windows, campaigns, suppressions = ServiceWindows(s.send_session_window_s), CampaignStates(), SuppressionList()
    followers = [AsyncTopicFollower(bootstrap, T.INBOUND_MESSAGES, "InboundMessage", serde, windows.apply,
                                    since_ms=windows.since_ms),
                 AsyncTopicFollower(bootstrap, T.CAMPAIGN_CONTROL, R.CONTROL, serde, campaigns.apply),
                 suppression_follower(bootstrap, serde, suppressions)]  # marketing opt-outs
    for f in followers:
        f.start()
    await asyncio.wait_for(asyncio.gather(*(f.ready.wait() for f in followers)), 60)

    buffer = Buffer(per_partition=s.send_buffer_per_partition, most=s.send_held_max, pause=pause, resume=resume)
    slots = FairSlots(s.send_max_in_flight)  # Graph calls in flight, fair between tenants
    numbers = Numbers(s, registry=registry, buffer=buffer, slots=slots)
    unknowns = Unknowns()

    async def write_ledger(key: str, partition: int, value: bytes) -> int:
        return (await send(T.SEND_LEDGER, key.encode(), value, partition=partition)).offset

    ledger = Ledger(LedgerStore(ledger_dir(s), ttl_s=T.window_retention_ms(s.send_dedup_window_s) // 1000), serde,
                    write_ledger, KafkaLedgerReader(bootstrap, T.SEND_LEDGER), topic=T.SEND_LEDGER,
                    write_many=producer.publish_many, on_tier=numbers.rebuild_tier, on_unknown=unknowns.loaded)
    stats = Stats()
    results = Results(serde=serde, send=send, topic=T.SEND_RESULTS, stats=stats)
    wamid_ref = WamidRefs.from_settings(s)
    reconciler = Reconciler(ledger, results.emit, unknowns=unknowns, memory_s=s.send_reconcile_memory_s,
                            unknown_timeout_s=s.send_unknown_timeout_s, wamid_ref=wamid_ref)
    writer = LaneWriter(serde=serde, send=send, dead_topic=T.SEND_DEAD, max_bytes=s.dead_letter_max_bytes)
    outcomes = Outcomes(s, ledger=ledger, results=results, send=send, letters=writer.letters, retry_topic=T.SEND_RETRY,
                        buffer=buffer, numbers=numbers, on_unknown=unknowns.add)
    work = Work(slots)
    graph = GraphCall(s, ledger=ledger, sender=sender, registry=registry, kek=kek, keyring=keyring,
                      wamid_ref=wamid_ref, numbers=numbers, slots=slots, work=work, outcomes=outcomes, stats=stats)
    scheduler = Scheduler(s, numbers=numbers, buffer=buffer, slots=slots, work=work, graph=graph, outcomes=outcomes,
                          registry=registry, windows=windows, campaigns=campaigns, suppressions=suppressions,
                          is_restricted=restrictions.is_restricted)
    admission = Admission(numbers=numbers, buffer=buffer, scheduler=scheduler, campaigns=campaigns)
    partitions = Partitions(s.topic_partitions)
    intake = Intake(s, ledger=ledger, buffer=buffer, admission=admission, outcomes=outcomes, writer=writer,
                    partition_of=partitions.of, rekeyed=REKEYED, retry_topic=T.SEND_RETRY, registry=registry,
                    windows=windows, is_restricted=restrictions.is_restricted, suppressions=suppressions, stats=stats)
    dispatcher = Dispatcher(s, intake=intake, scheduler=scheduler, graph=graph, buffer=buffer, numbers=numbers,
                            work=work, slots=slots, ledger=ledger, stats=stats)
    reconciler.start()
    # Every worker follows every partition (statuses are keyed by number); the reconciler acts
    # only on keys of the ledger partitions this worker holds.
    status = AsyncTopicFollower(bootstrap, T.STATUS_EVENTS, "StatusEvent", serde, reconciler.on_status,
                                since_ms=lambda: int((time.time() - s.send_reconcile_memory_s) * 1000))
    status.start()
    followers.append(status)
    return Runtime(settings=s, serde=serde, producer=producer, writer=writer, ledger=ledger,
                   dispatcher=dispatcher, reconciler=reconciler, registry=registry, keyring=keyring,
                   restrictions=restrictions, followers=tuple(followers))


class Startup:
    """The runtime and the lane consumer, once started (None before)."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.consumer: LaneConsumer | None = None


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




@dataclass(frozen=True)
class SendWorker:
    app: faust.App
    startup: Startup


class _NoFaustKafka(BootStrategy):
    """Faust hosts the worker (its lifecycle, signals, timers); the lanes are read by a
    ``LaneConsumer`` and written through librdkafka, so Faust's own Kafka clients never start."""

    enable_kafka_consumer = False
    enable_kafka_producer = False


class _WorkerApp(faust.App):
    BootStrategy = _NoFaustKafka


def create_app(settings: Settings, bootstrap: str) -> SendWorker:
    s = settings
    (s.state_dir / "faust").mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = _WorkerApp(
        s.send_app_id, **faust_app_kwargs(bootstrap), web_enabled=False,
        datadir=str(s.state_dir / "faust" / s.send_app_id),  # not "<app id>-data" in the working directory
    )
    startup = Startup()
    reader = LaneReader(first=FIRST_TOPICS, campaign=frozenset(CAMPAIGN_TOPICS), yield_every_s=YIELD_EVERY_S,
                        raw_max=s.send_read_ahead)
    announced = asyncio.Event()

    def _named(tps: list[tuple[str, int]]) -> list[str]:
        return sorted(f"{t}:{p}" for t, p in tps)

    async def on_assigned(tps: list[tuple[str, int]]) -> None:
        logger.info("partitions.assigned", partitions=_named(tps))
        reader.assigned(tps)
        if not announced.is_set():
            announced.set()
            print("\nREADY worker", flush=True)  # own line: faust may have left a cursor escape

    async def on_revoked(tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        logger.info("partitions.revoked", partitions=_named(tps))
        rt = startup.runtime
        assert rt is not None
        return await reader.revoked(tps, rt.dispatcher.on_revoked)

    def _stop(message: str) -> None:
        """Leave the process with code 1 and one clear line (a SystemExit from a Faust task would be
        reported as a crash with a traceback)."""
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(1)

    async def _start() -> None:
        loop = asyncio.get_running_loop()
        consumer = startup.consumer = LaneConsumer(
            bootstrap, s.send_app_id, SOURCE_TOPICS, loop=loop, on_records=reader.on_records,
            on_assigned=on_assigned, on_revoked=on_revoked, batch=s.send_max_poll_records)
        reader.pause, reader.resume, reader.commit_offsets = consumer.pause, consumer.resume, consumer.commit
        try:
            startup.runtime = reader.runtime = await start_runtime(
                s, bootstrap,
                pause=lambda p: consumer.pause([(t, p) for t in CAMPAIGN_TOPICS], "buffer"),
                resume=lambda p: consumer.resume([(t, p) for t in CAMPAIGN_TOPICS], "buffer"))
        except Exception:
            logger.exception("worker.start_failed")
            _stop("worker failed to start; see the log")
        consumer.start()
        reading = asyncio.ensure_future(reader.run())
        await asyncio.wait([reading, asyncio.ensure_future(consumer.closed.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        if reading.done() and not reading.cancelled() and reading.exception() is not None:
            logger.error("worker.reader_failed", error=repr(reading.exception()))
            _stop(f"worker's lane reader failed: {reading.exception()!r}; see the log")
        if consumer.error is not None:  # the lanes are not read any more: stop, be restarted
            _stop(f"worker's consumer failed: {consumer.error!r}; see the log")

    @app.task
    async def lanes_task() -> None:
        asyncio.ensure_future(_start())  # outside Faust's task: a SystemExit there ends the process plainly

    @app.timer(interval=COMMIT_EVERY_S)
    async def commit() -> None:
        reader.commit()

    @app.timer(interval=5.0)
    async def report() -> None:
        if startup.runtime is not None:
            startup.runtime.dispatcher.log_stats()

    @app.on_before_shutdown.connect
    async def on_shutdown(app: Any, **kw: Any) -> None:
        # SIGTERM: the Graph calls under way finish and their outcomes reach the broker, so a
        # restart finds them DONE, not DISPATCHING (which it would have to report UNKNOWN); then
        # the offsets of the work done are committed and the group is left.
        if startup.runtime is not None:
            await startup.runtime.drain()
        if startup.consumer is not None:  # the revocation at close commits what was done
            await startup.consumer.close()

    return SendWorker(app, startup)


def run_worker(settings: Settings, bootstrap: str, *, loglevel: str = "WARNING") -> None:
    """Run the worker in this process until SIGTERM/SIGINT."""
    import uvloop

    from processors.send.metrics import DispatchMetrics, FollowerMetrics
    from wapipe.faust_worker import Worker
    from wapipe.log import quiet_libraries
    from wapipe.probe import beat_every_second, serving_probe

    quiet_libraries()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # the worker's one event loop is its limit
    admin = admin_client(bootstrap)
    if settings.send_offset_reset == "latest":
        start_at_end(admin, settings.send_app_id, SOURCE_TOPICS)
    worker = create_app(settings, bootstrap)
    app, startup = worker.app, worker.startup
    with serving_probe(settings, "worker", lag=(bootstrap, settings.send_app_id, tuple(sorted(SOURCE_TOPICS)))) as probe:
        probe.registry.register(DispatchMetrics(lambda: startup.runtime.dispatcher if startup.runtime else None))
        probe.registry.register(FollowerMetrics(lambda: startup.runtime.followers if startup.runtime else ()))
        beat_every_second(app, probe)
        app.finalize()
        Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
