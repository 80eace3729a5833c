"""The send pipeline as a Faust app (``wapipe worker``).

Agents (each decodes Avro inside the agent: unreadable input becomes a dead letter, never a crash):

* ``intake``   wa.send.requested → validate → dedup (changelog-backed table, window) →
               wa.send.accepted (campaign lane) / wa.send.accepted.transactional, keyed by number;
               refusals and duplicates become SendResults at once.
* ``outcomes`` wa.send.results → the dedup table learns each key's final outcome, so a later
               duplicate is answered with it.
* ``campaign_lane`` / ``transactional_lane`` / ``retries``  → the ``Dispatcher`` (manual acks:
               a record is acked only after its outcome is in the ledger and on wa.send.results).

All keyed topics have the same partition count, so Faust assigns partition *p* of every one of
them (and of the dedup changelog and the ledger) to the same worker.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

from processors.send import records as R
from processors.send.dispatcher import Dispatcher, Topics
from processors.send.ledger import Ledger
from processors.send.validate import validate
from processors.send.views import CampaignStates, ServiceWindows, TopicFollower
from wapipe import log, topics as T
from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings

logger = log.get_logger(__name__)

FINAL_FOR_DEDUP = {"ACCEPTED", "FAILED", "UNKNOWN", "DEAD", "EXPIRED", "CANCELLED"}


class Runtime:
    """Everything the agents share, started once the event loop runs."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        self.s = settings
        self.bootstrap = bootstrap
        self.serde = AvroSerde.from_settings(settings)
        self.windows = ServiceWindows(settings.send_session_window_s)
        self.campaigns = CampaignStates()
        self.registry: Any = None
        self.keyring: Any = None
        self.kek: Any = None
        self.graph: Any = None
        self.producer: AIOKafkaProducer | None = None
        self.dispatcher: Dispatcher | None = None
        self.restrictions: Any = None
        self._followers: list[TopicFollower] = []
        self._started = asyncio.Event()
        self._starting = False

    async def started(self) -> None:
        if not self._starting:
            self._starting = True
            asyncio.ensure_future(self._start())
        await self._started.wait()

    async def _start(self) -> None:
        from connectors.meta.client import GraphClient
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
            self.graph = GraphClient.from_settings(s, max_connections=s.send_max_in_flight,
                                                   max_keepalive_connections=s.send_max_in_flight)
            self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True,
                                             linger_ms=1, max_batch_size=256 * 1024)
            await self.producer.start()
            win = TopicFollower(self.bootstrap, T.INBOUND_MESSAGES, "InboundMessage", self.serde, self.windows.apply,
                                since_ms=self.windows.since_ms)
            ctl = TopicFollower(self.bootstrap, T.CAMPAIGN_CONTROL, R.CONTROL, self.serde, self.campaigns.apply)
            self._followers = [win, ctl]
            for f in self._followers:
                f.start()
            await asyncio.wait_for(asyncio.gather(win.ready.wait(), ctl.ready.wait()), 60)
            ledger = Ledger(self.bootstrap, T.SEND_LEDGER, self.serde, self._write_ledger)
            self.dispatcher = Dispatcher(
                s, ledger=ledger, send=self.send, serde=self.serde,
                topics=Topics(results=T.SEND_RESULTS, retry=T.SEND_RETRY, dead=T.SEND_DEAD),
                graph=self.graph, registry=self.registry, kek=self.kek, keyring=self.keyring,
                windows=self.windows, campaigns=self.campaigns,
                is_restricted=self.is_restricted)
            ledger._on_loaded = self.dispatcher.rebuild_tier
        except Exception:
            logger.exception("worker.start_failed")
            print("worker failed to start; see the log", file=sys.stderr, flush=True)
            raise SystemExit(1)
        self._started.set()

    def is_restricted(self, subject_id: str) -> bool:
        return bool(self.restrictions is not None and self.restrictions.is_restricted(subject_id))

    async def send(self, topic: str, key: bytes | None, value: bytes | None, *, partition: int | None = None,
                   headers: list | None = None) -> None:
        """Produce and wait for the broker's acknowledgement (acks=all)."""
        assert self.producer is not None
        fut = await self.producer.send(topic, value, key=key, partition=partition, headers=headers)
        await fut

    async def _write_ledger(self, key: str, partition: int, record: dict) -> None:
        await self.send(T.SEND_LEDGER, key.encode(), self.serde.encode(R.LEDGER, record, topic=T.SEND_LEDGER),
                        partition=partition)

    async def close(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.close()
        for f in self._followers:
            await f.stop()
        if self.producer is not None:
            await self.producer.stop()
        if self.graph is not None:
            await self.graph.aclose()
        for c in (self.registry, self.keyring):
            if c is not None:
                c.close()


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


def _broker(bootstrap: str) -> list[str]:
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


def create_app(settings: Settings, bootstrap: str) -> faust.App:
    s = settings
    app = faust.App(
        s.send_app_id, broker=_broker(bootstrap), store="memory://", web_enabled=False,
        topic_partitions=s.topic_partitions, topic_replication_factor=s.replication_factor,
        topic_disable_leader=True, stream_wait_empty=False, broker_commit_interval=0.5,
        consumer_auto_offset_reset=s.send_offset_reset, producer_acks=-1,
        stream_buffer_maxsize=2000, broker_max_poll_records=500,
        # A worker that died is noticed after this long and its partitions move on.
        broker_session_timeout=10.0, broker_heartbeat_interval=1.0,
    )
    rt = Runtime(s, bootstrap)
    app.wapipe_runtime = rt  # type: ignore[attr-defined]

    def topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    requested, results = topic(T.SEND_REQUESTED), topic(T.SEND_RESULTS)
    accepted, accepted_tx, retry, dead = topic(T.SEND_ACCEPTED), topic(T.SEND_ACCEPTED_TX), topic(T.SEND_RETRY), topic(T.SEND_DEAD)
    dedup = app.Table("send-dedup", default=None, partitions=s.topic_partitions)  # json keys and values
    serde = rt.serde
    window_ms = s.send_dedup_window_s * 1000

    async def dead_letter(event: Any, exc: Exception) -> None:
        m = event.message
        dl = R.dead_letter(source_topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value,
                           reason=str(exc)[:500], error_type=type(exc).__name__)
        await dead.send(key=m.key, value=serde.encode(R.DEAD_LETTER, dl, topic=T.SEND_DEAD))

    async def emit(cmd: dict, outcome: R.Outcome, **kw: Any) -> None:
        await results.send(key=cmd["tenant_id"].encode(),
                           value=serde.encode(R.RESULT, R.result(cmd, outcome, **kw), topic=T.SEND_RESULTS))

    sweep = {"at": time.monotonic()}

    def sweep_expired(partition: int, now_ms: int) -> None:
        """Forget keys older than the window (their tombstones go to this event's partition,
        which is theirs: only keys stored from this partition are swept here)."""
        if time.monotonic() - sweep["at"] < 60:
            return
        sweep["at"] = time.monotonic()
        for k, v in list(dedup.items()):
            if v and v.get("p") == partition and v.get("at", 0) < now_ms - window_ms:
                del dedup[k]

    @app.agent(requested)
    async def intake(stream: Any) -> None:
        async for event in stream.events():
            await rt.started()
            try:
                cmd = serde.decode(event.value, R.COMMAND)
            except SerdeError as exc:
                await dead_letter(event, exc)
                continue
            try:
                now_ms = int(time.time() * 1000)
                refusal = validate(cmd, rt.registry, now_ms=now_ms, last_inbound=rt.windows.last_inbound,
                                   window_s=s.send_session_window_s, is_restricted=rt.is_restricted)
                if refusal is not None:
                    await emit(cmd, refusal.outcome, reason=refusal.reason)
                    continue
                key = R.command_key(cmd)
                prev = dedup.get(key)
                if prev and prev.get("at", 0) >= now_ms - window_ms and prev.get("command_id") != cmd["command_id"]:
                    await emit(cmd, R.Outcome.DUPLICATE, original_outcome=prev.get("outcome"), wamid=prev.get("wamid"),
                               reason="idempotency key seen before")
                    continue
                if not prev or prev.get("command_id") != cmd["command_id"]:
                    dedup[key] = {"command_id": cmd["command_id"], "outcome": "QUEUED", "at": now_ms,
                                  "p": event.message.partition}
                lane = accepted_tx if cmd.get("lane") == "TRANSACTIONAL" else accepted
                await lane.send(key=cmd["phone_number_id"].encode(), value=event.value)
                sweep_expired(event.message.partition, now_ms)
            except Exception as exc:  # a bug on one record must not stop the stream
                logger.exception("intake.failed", offset=event.message.offset)
                await dead_letter(event, exc)

    @app.agent(results)
    async def outcomes(stream: Any) -> None:
        async for event in stream.events():
            try:
                r = serde.decode(event.value, R.RESULT)
            except SerdeError:
                continue  # not ours to dead-letter: the writer of wa.send.results is this app
            if r["outcome"] not in FINAL_FOR_DEDUP:
                continue
            key = R.dedup_key(r["tenant_id"], r["idempotency_key"])
            prev = dedup.get(key)
            if prev and prev.get("command_id") == r["command_id"] and prev.get("outcome") != r["outcome"]:
                dedup[key] = {**prev, "outcome": r["outcome"], "wamid": r.get("wamid")}

    def lane_agent(source: Any, name: str, backpressure: bool) -> None:
        async def run(stream: Any) -> None:
            manual = stream.noack()
            async for event in manual.events():
                await rt.started()
                m = event.message
                try:
                    cmd = serde.decode(event.value, R.COMMAND)
                except SerdeError as exc:
                    await dead_letter(event, exc)
                    await manual.ack(event)
                    continue
                headers = dict(m.headers or [])
                async def ack(ev: Any = event) -> None:
                    await manual.ack(ev)
                try:
                    await rt.dispatcher.admit(cmd, raw=event.value, partition=m.partition, source=m.topic, ack=ack,
                                              backpressure=backpressure)
                except Exception as exc:
                    logger.exception("dispatch.admit_failed", topic=m.topic, offset=m.offset,
                                     attempt=headers.get("attempt"))
                    await dead_letter(event, exc)
                    await manual.ack(event)
        run.__name__ = name
        app.agent(source, name=name)(run)

    lane_agent(accepted, "campaign_lane", True)
    lane_agent(accepted_tx, "transactional_lane", False)
    lane_agent(retry, "retries", False)

    ready = {"printed": False}

    @app.on_partitions_revoked.connect
    async def on_revoked(app: Any, revoked: Any, **kw: Any) -> None:
        d = rt.dispatcher
        if d is not None:
            mine = {T.SEND_ACCEPTED, T.SEND_ACCEPTED_TX, T.SEND_RETRY}
            await d.on_revoked({tp.partition for tp in revoked if tp.topic in mine})

    @app.on_partitions_assigned.connect
    async def on_assigned(app: Any, assigned: Any, **kw: Any) -> None:
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
                        throttled=d.stats.throttled, outcomes=dict(d.stats.outcomes), ledger=len(d.ledger))

    @app.on_before_shutdown.connect
    def on_shutdown(app: Any, **kw: Any) -> None:
        pass

    return app


def run_worker(settings: Settings, bootstrap: str, *, loglevel: str = "WARNING") -> None:
    """Run the worker in this process until SIGTERM/SIGINT."""
    from faust.worker import Worker

    app = create_app(settings, bootstrap)
    app.finalize()
    worker = Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
